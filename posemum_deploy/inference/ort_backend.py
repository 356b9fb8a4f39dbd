"""ONNX Runtime backend with explicit execution providers and no silent CPU fallback.

ONNX Runtime quietly runs on the CPU when a requested GPU provider cannot load (wrong
CUDA, missing cuDNN, CPU-only wheel): a labeling job then takes 50× longer and nobody
asked for that. So the providers are spelled out, and after the session is created
`session.get_providers()` is compared with the request; a lost GPU provider is a
BackendUnavailableError unless `allow_cpu_fallback=True`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from posemum_deploy.artifacts import ModelMetadata, read_sidecar
from posemum_deploy.errors import (
    ArtifactError,
    BackendUnavailableError,
    ConfigError,
    import_optional,
)
from posemum_deploy.system import usable_cpus

log = logging.getLogger(__name__)
CPU = "CPUExecutionProvider"
PROVIDER_ALIASES = {"cpu": CPU, "cuda": "CUDAExecutionProvider",
                    "tensorrt": "TensorrtExecutionProvider", "openvino": "OpenVINOExecutionProvider"}
# device -> providers to ask for, best first.
DEVICE_PROVIDERS = {"cpu": ("cpu",), "cuda": ("cuda", "cpu"), "tensorrt": ("tensorrt", "cuda", "cpu")}
INSTALL_HINT = {"CUDAExecutionProvider": "pip install 'posemum[gpu]' (onnxruntime-gpu, without "
                "the CPU onnxruntime) and check CUDA/cuDNN with `posemum doctor`",
                "TensorrtExecutionProvider": "pip install 'posemum[gpu,trt]' and put TensorRT's "
                "libraries on the library path; see `posemum doctor`"}


def _ort() -> Any:
    return import_optional("onnxruntime", "onnxruntime is not installed; pip install "
                           "'posemum[cpu]' (CPU) or 'posemum[gpu]' (CUDA), never both")


def resolve_providers(providers: Sequence[str] | None, device: str, available: Sequence[str]
                      ) -> list[str]:
    """Provider names to request. Explicit `providers` (aliases cpu/cuda/tensorrt allowed)
    win; else `device` cpu/cuda/tensorrt, or auto = CUDA when ORT offers it, else CPU."""
    if providers:
        names = [PROVIDER_ALIASES.get(p.lower(), p) for p in providers]
    elif device == "auto":
        names = ["CUDAExecutionProvider", CPU] if "CUDAExecutionProvider" in available else [CPU]
    elif device in DEVICE_PROVIDERS:
        names = [PROVIDER_ALIASES[p] for p in DEVICE_PROVIDERS[device]]
    else:
        raise ConfigError(f"device {device!r} for onnxruntime: choose auto, "
                          f"{', '.join(DEVICE_PROVIDERS)}")
    return list(dict.fromkeys(names))


def check_providers(requested: Sequence[str], active: Sequence[str], path: Path,
                    allow_cpu_fallback: bool) -> None:
    """Fail when a requested accelerator provider is not active in the session."""
    lost = [p for p in requested if p != CPU and p not in active]
    if not lost or allow_cpu_fallback:
        if lost:
            log.warning("%s: %s unavailable, running on %s", path, ", ".join(lost), ", ".join(active))
        return
    fix = INSTALL_HINT.get(lost[0], f"install the onnxruntime build that has {lost[0]}")
    raise BackendUnavailableError(
        f"{path}: onnxruntime could not use {', '.join(lost)} (session runs on "
        f"{', '.join(active)}), so it would silently run on the CPU; {fix}, or pass "
        "--device cpu to run on the CPU on purpose")


class OrtBackend:
    """An exported ONNX (fp32 or INT8 QDQ) run by ONNX Runtime; predict(float32 NCHW)."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None,
                 device: str = "auto", allow_cpu_fallback: bool = False,
                 threads: int | None = None, metadata: ModelMetadata | None = None,
                 spinning: bool = True) -> None:
        ort = _ort()
        self.path = Path(path)
        self.metadata = metadata if metadata is not None else read_sidecar(self.path, "onnx")
        available = ort.get_available_providers()
        requested = resolve_providers(providers, device, available)
        missing = [p for p in requested if p not in available]
        if missing and not allow_cpu_fallback:
            fix = INSTALL_HINT.get(missing[0], "install an onnxruntime build that has it")
            raise BackendUnavailableError(
                f"{self.path}: {', '.join(missing)} requested but this onnxruntime offers only "
                f"{', '.join(available)}; {fix}, or use --device cpu")
        self.session = self._session(ort, [p for p in requested if p in available] or [CPU],
                                     threads, spinning)
        self.providers = self.session.get_providers()
        check_providers(requested, self.providers, self.path,
                        allow_cpu_fallback or (device == "auto" and not providers))
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self._check_input(self.session.get_inputs()[0].shape)

    def _session(self, ort: Any, providers: list[str], threads: int | None,
                 spinning: bool) -> Any:
        """CPU threads pinned explicitly: `threads` intra-op (default: the CPUs this
        process may use), one inter-op (the graph is a chain). `spinning=False` lets the
        pool sleep between runs instead of spinning, so it does not take cores from the
        decode thread or the next runtime of a benchmark."""
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or usable_cpus()
        opts.inter_op_num_threads = 1
        if not spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ArtifactError(f"{self.path}: onnxruntime cannot load it "
                                f"({str(e).splitlines()[0][:200]}); re-export the model") from e

    def _check_input(self, shape: list[Any]) -> None:
        h, w = self.metadata.input_hw
        if len(shape) != 4 or shape[1:] != [3, h, w]:
            raise ArtifactError(f"{self.path}: input shape {shape} does not match the sidecar's "
                                f"[N, 3, {h}, {w}]; re-export so both agree")

    @staticmethod
    def is_available(path: str | Path | None = None) -> tuple[bool, str]:
        try:
            _ort()
        except BackendUnavailableError as e:
            return False, str(e)
        if path is not None and Path(path).suffix.lower() != ".onnx":
            return False, "onnxruntime runs .onnx files"
        return True, ""

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Normalised float32 [N, 3, H, W] → heatmaps [N, K, h, w] float32."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run([self.output_name], {self.input_name: x})[0]
