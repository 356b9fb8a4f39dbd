"""TensorRT engine compatibility: the engine key, the check that an engine fits this machine.

An engine only runs on the TensorRT version and GPU it was built for, with the precision
and batch profile it was built with: TensorRT ties a plan to the GPU *model* unless it
was built with a hardware-compatibility level (then only to the compute capability, or
to Ampere and newer). The key (`engine_key`, a pure function) names all of that plus the
sha256 of the fp32 ONNX and of the network TensorRT actually parsed (the FP16 ONNX, or for
INT8 the QDQ ONNX, whose sha covers its calibration). It is written in the engine's
sidecar at export time and checked here before the backend loads an engine; it lives with
the backend so that `inference/` never needs `export/`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from posemum_deploy.errors import (
    ArtifactError,
    BackendUnavailableError,
    ConfigError,
    import_optional,
)

PRECISIONS = ("fp32", "fp16", "int8")
# --hardware-compat levels, as TensorRT's HardwareCompatibilityLevel names them.
HARDWARE_COMPAT = ("none", "same_compute_capability", "ampere_plus")


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; a different value anywhere means rebuild."""

    onnx_sha256: str
    network_sha256: str
    precision: str
    profile: tuple[int, int, int]
    trt_version: str
    gpu_name: str
    compute_capability: str
    hardware_compatibility: str = "none"

    def digest(self) -> str:
        """Stable short hash used as the engine's cache file name."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineKey:
        try:
            return cls(str(data["onnx_sha256"]), str(data["network_sha256"]),
                       str(data["precision"]), _profile(data["profile"]),
                       str(data["trt_version"]), str(data["gpu_name"]),
                       str(data["compute_capability"]),
                       str(data.get("hardware_compatibility", "none")))
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"engine key {sorted(data)} is incomplete ({e}); the engine was "
                                "made by an older posemum: rebuild it with `posemum export "
                                "MODEL.onnx --format tensorrt`") from e


def _profile(values: Any) -> tuple[int, int, int]:
    """(min, opt, max) batch of an optimisation profile, as ints."""
    lo, opt, hi = (int(v) for v in values)
    return lo, opt, hi


def engine_key(onnx_sha256: str, network_sha256: str, precision: str,
               profile: tuple[int, int, int], trt_version: str, gpu_name: str,
               compute_capability: str | tuple[int, int],
               hardware_compatibility: str = "none") -> EngineKey:
    """The cache key of an engine (pure: no TensorRT or GPU needed)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"TensorRT precision {precision!r}: choose {', '.join(PRECISIONS)}")
    if hardware_compatibility not in HARDWARE_COMPAT:
        raise ConfigError(f"TensorRT hardware compatibility {hardware_compatibility!r}: choose "
                          f"{', '.join(HARDWARE_COMPAT)}")
    if isinstance(compute_capability, tuple):
        compute_capability = f"{compute_capability[0]}.{compute_capability[1]}"
    return EngineKey(onnx_sha256, network_sha256, precision,
                     _profile(profile),
                     trt_version, gpu_name, compute_capability, hardware_compatibility)


def _gpu_diffs(old: EngineKey, gpu_name: str, compute_capability: str) -> list[str]:
    """What about this GPU the engine cannot run on, given its hardware-compatibility level."""
    if old.hardware_compatibility == "ampere_plus":
        major = int(compute_capability.split(".")[0])
        why = (f"hardware_compatibility ampere_plus needs compute capability ≥ 8.0, "
               f"{compute_capability} here")
        return [] if major >= 8 else [why]
    here = {"compute_capability": compute_capability}
    if old.hardware_compatibility == "none":
        here["gpu_name"] = gpu_name
    return [f"{name} {getattr(old, name)} ≠ {value} here" for name, value in here.items()
            if getattr(old, name) != value]


def check_engine(stored: dict[str, Any] | None, trt_version: str, gpu_name: str,
                 compute_capability: str, engine: Path) -> EngineKey:
    """The engine's recorded key, refused when it is not what this machine would build now."""
    rebuild = (f"rebuild it here: `posemum export MODEL.onnx --format tensorrt --out {engine}` "
               "(with the same --fp16/--int8/--batch)")
    if not stored:
        raise ArtifactError(f"{engine}: its sidecar records no engine key, so it may be stale "
                            f"or foreign; {rebuild}")
    old = EngineKey.from_dict(stored)
    diffs = ([f"trt_version {old.trt_version} ≠ {trt_version} here"]
             if old.trt_version != trt_version else [])
    diffs += _gpu_diffs(old, gpu_name, compute_capability)
    if diffs:
        raise ArtifactError(f"{engine}: built for another machine ({'; '.join(diffs)}); "
                            f"engines are not portable, {rebuild}")
    return old


def import_tensorrt() -> Any:
    return import_optional("tensorrt", "TensorRT is not installed; pip install 'posemum[gpu,trt]' "
                           "on a machine with an NVIDIA GPU (see `posemum doctor`)")


def current_gpu(index: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability 'M.m') of CUDA device `index`, or an error saying why not."""
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError("TensorRT needs a CUDA GPU and none is visible to torch; "
                                      "run on a GPU machine (see `posemum doctor`)")
    if not 0 <= index < torch.cuda.device_count():
        raise ConfigError(f"device cuda:{index}: this machine has {torch.cuda.device_count()} "
                          "CUDA device(s); choose one of them (see `posemum doctor`)")
    major, minor = torch.cuda.get_device_capability(index)
    return torch.cuda.get_device_name(index), f"{major}.{minor}"
