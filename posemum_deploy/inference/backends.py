"""One inference interface over every runtime.

Each backend takes a float32 NCHW batch of normalised crops and returns heatmaps
[N, K, h, w] as a NumPy array, and carries the `ModelMetadata` that says how to make
the crops and read the heatmaps. Runtime imports stay lazy: a labeling box with only
onnxruntime never imports TensorRT, and vice versa.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from posemum_deploy.artifacts import ModelMetadata
from posemum_deploy.errors import ArtifactError, ConfigError


@runtime_checkable
class Backend(Protocol):
    """`predict(batch[N, 3, H, W] float32) -> heatmaps[N, K, h, w] float32`."""

    metadata: ModelMetadata
    name: str

    def predict(self, batch: np.ndarray) -> np.ndarray: ...


class BackendClass(Protocol):
    """A backend class as `load_backend` uses it: opened on an artifact path with its
    options, and first asked whether it can run that artifact here."""

    def __call__(self, path: Path, /, **options: Any) -> Backend: ...

    def is_available(self, path: str | Path | None = None) -> tuple[bool, str]: ...


# kind -> (module, class); modules are imported only when that kind is used.
BACKENDS: dict[str, tuple[str, str]] = {
    "torch": ("posemum_deploy.inference.torch_backend", "TorchBackend"),
    "torch-fast": ("posemum_deploy.inference.fast_torch", "FastTorchBackend"),
    "onnxruntime": ("posemum_deploy.inference.ort_backend", "OrtBackend"),
    "tensorrt": ("posemum_deploy.inference.trt_backend", "TrtBackend"),
    "openvino": ("posemum_deploy.inference.openvino_backend", "OpenVinoBackend"),
}
# artifact suffix -> backends that can run it, best first (auto picks the first usable).
SUFFIX_BACKENDS: dict[str, tuple[str, ...]] = {
    ".pt": ("torch", "torch-fast"),
    ".pth": ("torch", "torch-fast"),
    ".onnx": ("tensorrt", "onnxruntime", "openvino"),
    ".engine": ("tensorrt",),
    ".plan": ("tensorrt",),
    ".xml": ("openvino",),
}


def _with_threads(cls: BackendClass, options: dict, cpu_threads: int | None) -> dict:
    """`options` plus threads=cpu_threads when the backend takes a thread count and the
    caller did not choose one."""
    import inspect

    if cpu_threads and "threads" in inspect.signature(cls).parameters:
        return {"threads": cpu_threads, **options}
    return options


def backend_class(kind: str) -> BackendClass:
    """The backend class for a kind name, importing its runtime module lazily."""
    if kind not in BACKENDS:
        raise ConfigError(f"unknown backend {kind!r}; choose auto, {', '.join(BACKENDS)}")
    module_name, class_name = BACKENDS[kind]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ConfigError(f"backend {kind!r} is not part of this build ({e.name} missing)") from e
    return getattr(module, class_name)


def check_backend_opens(kind: str, path: Path) -> None:
    """Refuse a backend asked for a file type it cannot open (onnxruntime given a
    checkpoint), with the export that makes one it can, before any runtime loads."""
    kinds = SUFFIX_BACKENDS.get(path.suffix.lower())
    if kinds is None or kind in kinds or kind not in BACKENDS:
        return  # unknown types and kinds: candidate_backends / backend_class say why
    opens = [s for s, ks in SUFFIX_BACKENDS.items() if kind in ks]
    if path.suffix.lower() in (".pt", ".pth"):
        fmt = {"tensorrt": "tensorrt", "openvino": "openvino"}.get(kind, "onnx")
        fix = (f"export it first (posemum export {path} --format {fmt} --out DIR) and pass "
               "the exported file")
    else:
        fix = f"pass it with --backend {' or '.join(kinds)}, or the checkpoint it came from"
    raise ConfigError(f"{path}: the {kind} backend cannot open a {path.suffix} file (it "
                      f"opens {', '.join(opens)}); {fix}")


def candidate_backends(path: str | Path) -> tuple[str, ...]:
    """Backends able to run this artifact, in preference order."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return onnx_auto_order()
    if suffix not in SUFFIX_BACKENDS:
        raise ArtifactError(f"{path}: unknown model file type {suffix!r}; pass a checkpoint (.pt), "
                            "an ONNX file, a TensorRT engine or an OpenVINO .xml")
    return SUFFIX_BACKENDS[suffix]


def _ort_gpu_usable() -> bool:
    """onnxruntime-gpu installed and a CUDA device visible (its provider list names CUDA
    even on a machine without a GPU, so ask torch, when present, whether one is there)."""
    try:
        import onnxruntime
    except ImportError:
        return False
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return False
    try:
        import torch
    except ImportError:
        return True
    return torch.cuda.is_available()


def onnx_auto_order() -> tuple[str, ...]:
    """`auto` for .onnx: TensorRT if usable, onnxruntime if it has a GPU, else OpenVINO
    (2-4x faster than onnxruntime on the CPU), and onnxruntime CPU last."""
    if _ort_gpu_usable():
        return SUFFIX_BACKENDS[".onnx"]
    return ("tensorrt", "openvino", "onnxruntime")


def load_backend(path: str | Path, kind: str = "auto", cpu_threads: int | None = None,
                 **options: Any) -> Backend:
    """Open a model artifact with the named backend, or the best usable one for `auto`.

    `auto` tries each candidate's `is_available()` (runtime installed, device present)
    and never silently swaps a requested GPU runtime for the CPU. `cpu_threads` is the
    default `threads` of runtimes that take one (ONNX Runtime, OpenVINO): several
    labeling processes share the cores instead of each taking them all.
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: model file not found")
    if kind != "auto":
        check_backend_opens(kind, path)
        cls = backend_class(kind)
        return cls(path, **_with_threads(cls, options, cpu_threads))
    tried = []
    for name in candidate_backends(path):
        try:
            cls = backend_class(name)
        except ConfigError:
            continue
        usable, why = cls.is_available(path)
        if usable:
            return cls(path, **_with_threads(cls, options, cpu_threads))
        tried.append(f"{name}: {why}")
    raise ConfigError(f"{path}: no usable backend here ({'; '.join(tried) or 'none built'}); "
                      "run `posemum doctor` to see what this machine can run")
