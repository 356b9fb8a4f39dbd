"""`posemum doctor`'s TensorRT row: version, CUDA build, and whether the driver runs it."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from posemum_deploy import doctor


@pytest.fixture()
def installed(monkeypatch: pytest.MonkeyPatch):
    """A TensorRT 11.4 wheel built for CUDA 13, importable; the driver is set per test."""
    versions = {"tensorrt-cu13-bindings": "11.4.0.106"}
    monkeypatch.setattr(doctor, "_version", versions.get)
    real_import = doctor._import
    monkeypatch.setattr(doctor, "_import", lambda name: (
        (SimpleNamespace(__version__="11.4.0.106"), "") if name == "tensorrt"
        else real_import(name)))

    def driver(version: tuple[int, int] | None) -> None:
        monkeypatch.setattr(doctor, "driver_cuda_version", lambda: version)
    return driver


def test_tensorrt_row_says_version_build_and_driver(installed) -> None:
    installed((13, 0))
    [row] = doctor.check_tensorrt()
    assert row.ok and row.detail == "11.4.0.106 (CUDA 13 build); driver supports CUDA 13.0"


def test_a_driver_too_old_for_the_build_is_a_finding_with_the_fix(installed) -> None:
    installed((12, 8))
    [row] = doctor.check_tensorrt()
    assert not row.ok and "driver supports CUDA 12.8: too old for this build" in row.detail
    assert "CUDA 13" in row.fix and "'posemum[trt-cu12]'" in row.fix


def test_no_driver_is_a_finding(installed) -> None:
    installed(None)
    [row] = doctor.check_tensorrt()
    assert not row.ok and "no NVIDIA driver" in row.detail


def test_this_machine_without_a_driver_never_crashes_the_probe() -> None:
    assert doctor.tensorrt_cuda_major() in (None, 12, 13)
    version = doctor.driver_cuda_version()
    assert version is None or version[0] >= 10
    rows = doctor.check_tensorrt()
    assert len(rows) == 1 and rows[0].name == "TensorRT"
