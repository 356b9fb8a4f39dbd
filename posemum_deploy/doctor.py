"""What this machine can run: one row per runtime piece, with a one-line fix when missing.

Each probe is a small function that never raises (a broken install is a finding, not a
crash), so `posemum doctor` always prints the whole table. The CLI renders the rows.
"""
from __future__ import annotations

import importlib
import os
import platform
from dataclasses import dataclass
from importlib import metadata as pkg_metadata
from typing import Any, Callable

from posemum_deploy.system import usable_cpus


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


def check_tensorrt() -> list[Check]:
    trt, err = _import("tensorrt")
    if trt is None:
        return [Check("TensorRT", False, err or "not installed",
                      "pip install 'posemum[trt]' on a machine with an NVIDIA GPU and driver")]
    return [Check("TensorRT", True, str(trt.__version__))]


def check_module(label: str, module: str, fix: str) -> list[Check]:
    mod, err = _import(module)
    if mod is None:
        return [Check(label, False, err or "not installed", fix)]
    return [Check(label, True, str(getattr(mod, "__version__", _version(module) or "installed")))]


def check_cpu() -> list[Check]:
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile")
           if f" {f}" in flags]
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
