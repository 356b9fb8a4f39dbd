"""What this machine can run: one row per runtime piece, with a one-line fix when missing.

Each probe is a small function that never raises (a broken install is a finding, not a
crash), so `posemum doctor` always prints the whole table. The CLI renders the rows.
"""
from __future__ import annotations

import importlib
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata as pkg_metadata
from typing import Any

from posemum_deploy.system import cpu_isa, usable_cpus


@dataclass(frozen=True)
class Check:
    """One finding: `ok` False means the piece is missing or broken here, `fix` says how."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def _version(dist: str) -> str | None:
    try:
        return pkg_metadata.version(dist)
    except pkg_metadata.PackageNotFoundError:
        return None


def _import(name: str) -> tuple[Any | None, str]:
    try:
        return importlib.import_module(name), ""
    except Exception as e:  # ImportError, or a library that fails to load its .so
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:120]}" if str(e) else type(e).__name__


def check_torch() -> list[Check]:
    torch, err = _import("torch")
    if torch is None:
        return [Check("torch", False, err, "pip install torch (see pytorch.org for your CUDA)")]
    rows = [Check("torch", True, f"{torch.__version__} (CUDA build {torch.version.cuda or 'none'})")]
    if not torch.cuda.is_available():
        fix = ("install a CUDA build of torch" if torch.version.cuda is None
               else "no NVIDIA GPU/driver visible; check nvidia-smi and CUDA_VISIBLE_DEVICES")
        return rows + [Check("CUDA (torch)", False, "not available", fix)]
    rows.append(Check("CUDA (torch)", True, f"{torch.cuda.device_count()} GPU(s)"))
    for i in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(i)
        rows.append(Check(f"GPU {i}", True,
                          f"{torch.cuda.get_device_name(i)}, compute capability {major}.{minor}"))
    return rows


def check_onnxruntime() -> list[Check]:
    cpu_dist, gpu_dist = _version("onnxruntime"), _version("onnxruntime-gpu")
    rows = []
    if cpu_dist and gpu_dist:
        rows.append(Check("onnxruntime packaging", False, f"onnxruntime {cpu_dist} and "
                          f"onnxruntime-gpu {gpu_dist} both installed (they clash)",
                          "pip uninstall -y onnxruntime onnxruntime-gpu, then install one extra: "
                          "'posemum[cpu]' or 'posemum[gpu]'"))
    ort, err = _import("onnxruntime")
    if ort is None:
        return rows + [Check("onnxruntime", False, err or "not installed",
                             "pip install 'posemum[cpu]' (or 'posemum[gpu]' on a GPU box)")]
    providers = ort.get_available_providers()
    rows.append(Check("onnxruntime", True, f"{ort.__version__}: {', '.join(providers)}"))
    for provider, fix in (("CUDAExecutionProvider", "pip install 'posemum[gpu]' (onnxruntime-gpu "
                           "instead of onnxruntime) with a matching CUDA/cuDNN"),
                          ("TensorrtExecutionProvider", "onnxruntime-gpu plus TensorRT libraries "
                           "on LD_LIBRARY_PATH ('posemum[gpu,trt]')")):
        ok = provider in providers
        rows.append(Check(f"ORT {provider.removesuffix('ExecutionProvider')} EP", ok,
                          "available" if ok else "not in this onnxruntime build", "" if ok else fix))
    return rows


def tensorrt_cuda_major() -> int | None:
    """The CUDA major version the installed TensorRT wheel was built for (None: unknown,
    e.g. a tarball install). Wheels are named tensorrt-cuNN(-bindings/-libs)."""
    for major in (13, 12, 11):
        for dist in (f"tensorrt-cu{major}-bindings", f"tensorrt-cu{major}-libs",
                     f"tensorrt-cu{major}"):
            if _version(dist):
                return major
    return None


def driver_cuda_version() -> tuple[int, int] | None:
    """The newest CUDA the NVIDIA driver supports (cuDriverGetVersion), None without one."""
    import ctypes

    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        version = ctypes.c_int(0)
        if lib.cuDriverGetVersion(ctypes.byref(version)) == 0:
            return version.value // 1000, (version.value % 1000) // 10
    return None


def check_tensorrt() -> list[Check]:
    """TensorRT's version, the CUDA it was built for, and whether the driver can run it."""
    build = tensorrt_cuda_major()
    extra = f"'posemum[trt-cu{build}]'" if build else "'posemum[trt]'"
    trt, err = _import("tensorrt")
    if trt is None:
        return [Check("TensorRT", False, err or "not installed",
                      "pip install 'posemum[trt]' on a machine with an NVIDIA GPU and driver "
                      "(trt-cu12 / trt-cu13 to match torch's CUDA)")]
    detail = f"{trt.__version__} (CUDA {build or '?'} build)"
    driver = driver_cuda_version()
    if driver is None:
        return [Check("TensorRT", False, f"{detail}; no NVIDIA driver (libcuda) found",
                      "TensorRT runs only on a machine with an NVIDIA GPU and its driver")]
    detail += f"; driver supports CUDA {driver[0]}.{driver[1]}"
    if build and driver[0] < build:
        other = f"'posemum[trt-cu{driver[0]}]'" if driver[0] in (12, 13) else "an older TensorRT"
        return [Check("TensorRT", False, f"{detail}: too old for this build",
                      f"update the NVIDIA driver to one for CUDA {build}, or install {other} "
                      f"instead of {extra}")]
    return [Check("TensorRT", True, detail)]


def check_module(label: str, module: str, fix: str) -> list[Check]:
    mod, err = _import(module)
    if mod is None:
        return [Check(label, False, err or "not installed", fix)]
    return [Check(label, True, str(getattr(mod, "__version__", _version(module) or "installed")))]


def check_cpu() -> list[Check]:
    isa = cpu_isa()
    usable = usable_cpus()
    threads = f"{os.cpu_count()} threads" + (f" ({usable} usable: affinity / cgroup quota)"
                                             if usable != os.cpu_count() else "")
    detail = f"{platform.machine()}, {threads}, {' '.join(isa) or 'ISA unknown'}"
    vnni = any("vnni" in f for f in isa)
    return [Check("CPU", True, detail), Check("CPU INT8 (VNNI)", vnni, "fast int8 dot products"
                                              if vnni else "no VNNI: onnx-int8 gains little here",
                                              "" if vnni else "use fp32 ONNX/OpenVINO on this CPU")]


def check_openvino() -> list[Check]:
    """OpenVINO's version and the CPU precisions it runs natively here (bf16 needs BF16/AMX)."""
    rows = check_module("OpenVINO", "openvino", "pip install 'posemum[openvino]'")
    if rows[0].ok:
        from posemum_deploy.inference.openvino_backend import cpu_precisions

        rows = [Check("OpenVINO", True, f"{rows[0].detail}, CPU precisions: "
                      f"{', '.join(cpu_precisions())}")]
    return rows


PROBES: tuple[Callable[[], list[Check]], ...] = (
    check_cpu, check_torch, check_onnxruntime, check_tensorrt,
    check_openvino,
    lambda: check_module("Ray", "ray", "pip install 'posemum[ray]' (bulk labeling on a cluster)"),
)


def diagnose() -> list[Check]:
    """Every row, in a fixed order; probes that crash become a failed row, not an exception."""
    rows: list[Check] = []
    for probe in PROBES:
        try:
            rows.extend(probe())
        except Exception as e:  # a probe must never take the report down
            rows.append(Check(getattr(probe, "__name__", "probe"), False, f"probe failed: {e}",
                              "report this with the output of `pip list`"))
    return rows
