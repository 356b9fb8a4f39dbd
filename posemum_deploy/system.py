"""What this machine offers the process: usable CPUs, the CPU's name and SIMD
extensions, visible GPUs, the torch device.

How many CPUs this process may really use:

`os.cpu_count()` is the machine's count. In a container with a CPU limit (Kubernetes,
`docker --cpus`) or under `taskset`, it overstates what the process gets, and thread pools
sized from it (N labelers × cores/N threads each) get throttled by the kernel instead of
running. This reads the affinity mask and the cgroup CPU quota, like the JVM and Go do.
"""
from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

CGROUP_V2_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile")


def cgroup_cpu_limit(v2_max: Path = CGROUP_V2_MAX, v1_quota: Path = CGROUP_V1_QUOTA,
                     v1_period: Path = CGROUP_V1_PERIOD) -> int | None:
    """The cgroup's CPU quota in whole CPUs (rounded up), or None when unlimited or unknown."""
    try:
        if v2_max.is_file():  # "max 100000" or "<quota> <period>"
            quota, _, period = v2_max.read_text().strip().partition(" ")
            if quota == "max":
                return None
            return max(1, math.ceil(int(quota) / int(period or 100000)))
        if v1_quota.is_file() and v1_period.is_file():
            quota_us = int(v1_quota.read_text())
            if quota_us <= 0:  # -1: unlimited
                return None
            return max(1, math.ceil(quota_us / int(v1_period.read_text())))
    except (OSError, ValueError):
        return None
    return None


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name ("AMD EPYC 9R14 96-Core Processor"), for benchmark headers:
    hosts differ from run to run, so every printed figure names the one it ran on.
    /proc/cpuinfo's first "model name" line, else what `platform` knows, else "unknown CPU"."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_isa(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The SIMD extensions among ISA_FLAGS that the CPU reports, in that order. The model
    name alone can hide them (some hosts report just "AMD EPYC"), and they set the speed of
    every kernel: an AVX2-only host ran this project's training 2-3× slower than AVX-512 ones."""
    try:
        flags = next((line for line in cpuinfo.read_text().splitlines()
                      if line.startswith("flags")), "")
    except OSError:
        return []
    present = set(flags.partition(":")[2].split())
    return [f for f in ISA_FLAGS if f in present]


def cpu_summary(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The model name and its SIMD extensions in one string, "AMD EPYC (avx2)": what a
    benchmark header prints to say which host a figure came from."""
    return f"{cpu_model(cpuinfo)} ({' '.join(cpu_isa(cpuinfo)) or 'ISA unknown'})"


def usable_cpus() -> int:
    """CPUs this process can run on: the affinity mask, capped by the cgroup quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        count = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(count, limit) if limit else count)


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES entries: that
    variable's own entries when it is set (indices, UUIDs or MIG ids), else 0..N-1 for
    the N devices torch sees (none without CUDA)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        entries = [d.strip() for d in listed.split(",") if d.strip()]
        # CUDA stops at the first invalid entry; "-1" is the usual way to hide every GPU
        return entries[:entries.index("-1")] if "-1" in entries else entries
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())]


def resolve_device(device: str | None) -> torch.device:
    """'auto' → cuda when present else cpu; 'cuda' without a GPU raises instead of falling back."""
    import torch

    from posemum_deploy.errors import BackendUnavailableError

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError("CUDA was requested but no CUDA GPU is visible to torch; "
                                      "use --device cpu or install a CUDA build of torch")
    return dev
