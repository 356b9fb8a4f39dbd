"""TensorRT engine compatibility: the engine key, the check that an engine fits this machine.

An engine only runs on the TensorRT version and GPU it was built for, with the precision
and batch profile it was built with. The key (`engine_key`, a pure function) is written in
the engine's sidecar at export time and checked here before the backend loads an engine;
it lives with the backend so that `inference/` never needs `export/`.
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


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; a different value anywhere means rebuild."""

    onnx_sha256: str
    trt_version: str
    compute_capability: str
    precision: str
    profile: tuple[int, int, int]

    def digest(self) -> str:
        """Stable short hash used as the engine's cache file name."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EngineKey":
        return cls(str(data["onnx_sha256"]), str(data["trt_version"]),
                   str(data["compute_capability"]), str(data["precision"]),
                   tuple(int(v) for v in data["profile"]))  # type: ignore[arg-type]


def engine_key(onnx_sha256: str, trt_version: str, compute_capability: str | tuple[int, int],
               precision: str, profile: tuple[int, int, int]) -> EngineKey:
    """The cache key of an engine (pure: no TensorRT or GPU needed)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"TensorRT precision {precision!r}: choose {', '.join(PRECISIONS)}")
    if isinstance(compute_capability, tuple):
        compute_capability = f"{compute_capability[0]}.{compute_capability[1]}"
    return EngineKey(onnx_sha256, trt_version, compute_capability, precision, tuple(profile))


def check_engine(stored: dict[str, Any] | None, trt_version: str, compute_capability: str,
                 engine: Path) -> EngineKey:
    """The engine's recorded key, refused when it is not what this machine would build now."""
    rebuild = (f"rebuild it here: `posemum export MODEL.onnx --format tensorrt --out {engine}` "
               "(with the same --fp16/--int8/--batch)")
    if not stored:
        raise ArtifactError(f"{engine}: its sidecar records no engine key, so it may be stale "
                            f"or foreign; {rebuild}")
    old = EngineKey.from_dict(stored)
    here = {"trt_version": trt_version, "compute_capability": compute_capability}
    diffs = [f"{name} {getattr(old, name)} ≠ {value} here" for name, value in here.items()
             if getattr(old, name) != value]
    if diffs:
        raise ArtifactError(f"{engine}: built for another machine ({'; '.join(diffs)}); "
                            f"engines are not portable, {rebuild}")
    return old


def import_tensorrt() -> Any:
    return import_optional("tensorrt", "TensorRT is not installed; pip install 'posemum[gpu,trt]' "
                           "on a machine with an NVIDIA GPU (see `posemum doctor`)")


def current_gpu() -> tuple[str, str]:
    """(GPU name, compute capability 'M.m') of CUDA device 0, or an error saying why not."""
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError("TensorRT needs a CUDA GPU and none is visible to torch; "
                                      "run on a GPU machine (see `posemum doctor`)")
    major, minor = torch.cuda.get_device_capability(0)
    return torch.cuda.get_device_name(0), f"{major}.{minor}"
