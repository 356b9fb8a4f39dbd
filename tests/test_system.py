"""usable_cpus: the affinity mask and the cgroup CPU quota, not the machine's count."""
from pathlib import Path

import pytest

from posemum_deploy import system


@pytest.mark.parametrize("v2,expected", [("max 100000\n", None), ("250000 100000\n", 3),
                                         ("50000 100000\n", 1), ("800000 100000", 8),
                                         ("garbage", None)])
def test_cgroup_v2_quota(tmp_path: Path, v2: str, expected: int | None) -> None:
    (tmp_path / "cpu.max").write_text(v2)
    assert system.cgroup_cpu_limit(tmp_path / "cpu.max", tmp_path / "q", tmp_path / "p") == expected


@pytest.mark.parametrize("quota,expected", [("-1\n", None), ("150000\n", 2), ("100000", 1)])
def test_cgroup_v1_quota(tmp_path: Path, quota: str, expected: int | None) -> None:
    (tmp_path / "q").write_text(quota)
    (tmp_path / "p").write_text("100000\n")
    assert system.cgroup_cpu_limit(tmp_path / "none", tmp_path / "q", tmp_path / "p") == expected


def test_no_cgroup_files_means_no_limit(tmp_path: Path) -> None:
    assert system.cgroup_cpu_limit(tmp_path / "a", tmp_path / "b", tmp_path / "c") is None


def test_usable_cpus_takes_the_smaller_of_affinity_and_quota(monkeypatch) -> None:
    monkeypatch.setattr(system.os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(system, "cgroup_cpu_limit", lambda: 6)
    assert system.usable_cpus() == 6
    monkeypatch.setattr(system, "cgroup_cpu_limit", lambda: None)
    assert system.usable_cpus() == 64
    monkeypatch.setattr(system.os, "sched_getaffinity", lambda pid: {0, 1, 2})
    monkeypatch.setattr(system, "cgroup_cpu_limit", lambda: 16)
    assert system.usable_cpus() == 3


@pytest.mark.parametrize("listed,expected", [("0,1", ["0", "1"]), ("", []), ("-1", []),
                                             ("2, 3,-1,4", ["2", "3"]),
                                             ("GPU-8f2e,MIG-1a", ["GPU-8f2e", "MIG-1a"])])
def test_visible_gpus_follow_cuda_visible_devices(monkeypatch, listed, expected) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", listed)
    assert system.visible_gpus() == expected


def test_visible_gpus_without_the_variable_ask_torch(monkeypatch) -> None:
    import torch

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert system.visible_gpus() == ["0", "1", "2"]


def test_cpu_model_reads_the_first_model_name(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\n"
                    "model name\t: AMD EPYC 9R14 96-Core Processor\nflags\t: avx512f\n\n"
                    "processor\t: 1\nmodel name\t: Other\n")
    assert system.cpu_model(info) == "AMD EPYC 9R14 96-Core Processor"


def test_cpu_model_without_cpuinfo_falls_back(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(system.platform, "processor", lambda: "")
    assert system.cpu_model(tmp_path / "missing") == "unknown CPU"
    monkeypatch.setattr(system.platform, "processor", lambda: "x86_64")
    assert system.cpu_model(tmp_path / "missing") == "x86_64"


def test_cpu_isa_lists_the_reported_extensions_in_order(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: AMD EPYC\n"
                    "flags\t\t: fpu sse avx avx512_bf16 avx2 avx512fp16 avx512f avx512_vnni\n")
    assert system.cpu_isa(info) == ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]
    info.write_text("flags\t: fpu avx avx2 fma\n")
    assert system.cpu_isa(info) == ["avx2"]
    assert system.cpu_isa(tmp_path / "missing") == []


def test_cpu_summary_names_model_and_extensions(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: AMD EPYC\nflags\t: fpu avx avx2 fma\n")
    assert system.cpu_summary(info) == "AMD EPYC (avx2)"
    info.write_text("model name\t: Old CPU\nflags\t: fpu sse2\n")
    assert system.cpu_summary(info) == "Old CPU (ISA unknown)"
