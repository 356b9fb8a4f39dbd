"""ONNX Runtime backend with explicit execution providers and no silent CPU fallback.

ONNX Runtime quietly runs on the CPU when a requested GPU provider cannot load (wrong
CUDA, missing cuDNN, CPU-only wheel): a labeling job then takes 50× longer and nobody
asked for that. So the providers are spelled out, and after the session is created
`session.get_providers()` is compared with the request; a lost GPU provider is a
BackendUnavailableError unless `allow_cpu_fallback=True`. ORT can also fall back at run
time (an EP that fails in `run()` makes it rebuild the session on the CPU), so every GPU
session gets `disable_fallback()` and a failing run is a one-line error.

GPU providers get explicit options (`provider_options`; names as ONNX Runtime's
tensorrt/cuda `*_execution_provider_info.cc` define them): the TensorRT EP builds FP16
when the precision asks for it and keeps its engines and timing cache in a folder beside
the model, keyed like posemum's own engines (`trt_cache_folder`), so a new session reuses
the engine instead of rebuilding it; the CUDA EP gets its device and cuDNN search mode.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from posemum_deploy.artifacts import ModelMetadata, read_sidecar, sha256_file
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
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
PRECISIONS = ("fp32", "fp16", "int8")
INSTALL_HINT = {"CUDAExecutionProvider": "pip install 'posemum[gpu]' (onnxruntime-gpu, without "
                "the CPU onnxruntime) and check CUDA/cuDNN with `posemum doctor`",
                "TensorrtExecutionProvider": "pip install 'posemum[gpu,trt]' and put TensorRT's "
                "libraries on the library path; see `posemum doctor`"}


def _ort() -> Any:
    return import_optional("onnxruntime", "onnxruntime is not installed; pip install "
                           "'posemum[cpu]' (CPU) or 'posemum[gpu]' (CUDA), never both")


def split_device(device: str) -> tuple[str, int]:
    """'cuda:1' → ('cuda', 1); 'tensorrt' → ('tensorrt', 0); the id picks the GPU."""
    kind, _, index = str(device).partition(":")
    if index and not index.isdigit():
        raise ConfigError(f"device {device!r}: expected KIND or KIND:INDEX, e.g. cuda:1")
    return kind, int(index or 0)


def _trt_version() -> str:
    """The TensorRT the EP will load, as far as Python can tell (its wheel, if any)."""
    from importlib import metadata

    for dist in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-libs"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def _gpu(device_id: int) -> tuple[str, str]:
    try:
        import torch

        if torch.cuda.is_available() and device_id < torch.cuda.device_count():
            major, minor = torch.cuda.get_device_capability(device_id)
            return torch.cuda.get_device_name(device_id), f"{major}.{minor}"
    except ImportError:
        pass
    return "unknown", "unknown"


def trt_cache_folder(model: Path, model_sha: str, precision: str, device_id: int,
                     base: Path | None = None) -> Path:
    """`<model>.trt_cache/<key>/`: the TensorRT EP's engine and timing caches for this
    model, precision, TensorRT and GPU (another GPU or TensorRT gets its own folder)."""
    gpu_name, cc = _gpu(device_id)
    key = {"onnx_sha256": model_sha, "precision": precision, "trt_version": _trt_version(),
           "gpu_name": gpu_name, "compute_capability": cc}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return (base or model.with_name(model.stem + ".trt_cache")) / digest


def provider_options(names: Sequence[str], device_id: int, precision: str,
                     trt_cache: Path | None) -> list[tuple[str, dict[str, str]]]:
    """(provider, options) pairs for InferenceSession; option values are strings."""
    out: list[tuple[str, dict[str, str]]] = []
    for name in names:
        if name == "TensorrtExecutionProvider":
            opts = {"device_id": str(device_id),
                    "trt_fp16_enable": "1" if precision in ("fp16", "int8") else "0",
                    "trt_int8_enable": "1" if precision == "int8" else "0"}
            if trt_cache is not None:
                opts.update({"trt_engine_cache_enable": "1",
                             "trt_engine_cache_path": str(trt_cache),
                             "trt_timing_cache_enable": "1",
                             "trt_timing_cache_path": str(trt_cache)})
            out.append((name, opts))
        elif name == "CUDAExecutionProvider":
            out.append((name, {"device_id": str(device_id),
                               "cudnn_conv_algo_search": "EXHAUSTIVE",
                               "arena_extend_strategy": "kSameAsRequested",
                               "do_copy_in_default_stream": "1"}))
        else:
            out.append((name, {}))
    return out


def resolve_providers(providers: Sequence[str] | None, device: str, available: Sequence[str]
                      ) -> list[str]:
    """Provider names to request. Explicit `providers` (aliases cpu/cuda/tensorrt allowed)
    win; else `device` cpu/cuda/tensorrt (optionally :INDEX), or auto = CUDA when ORT
    offers it, else CPU."""
    device = split_device(device)[0]
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
                 spinning: bool = True, precision: str | None = None,
                 cache_dir: str | Path | None = None) -> None:
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
        names = [p for p in requested if p in available] or [CPU]
        self.precision = precision or self.metadata.precision or "fp32"
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r} for onnxruntime: choose "
                              f"{', '.join(PRECISIONS)}")
        self.device_id = split_device(device)[1]
        self.trt_cache: Path | None = None
        if self.precision == "int8" and self.metadata.precision != "int8":
            raise ConfigError(f"{self.path}: precision int8 needs a QDQ model, this one is "
                              f"{self.metadata.precision}; use fp32/fp16, or run an INT8 "
                              "TensorRT engine (posemum export --format tensorrt --int8)")
        if "TensorrtExecutionProvider" in names:
            sha = ((self.metadata.artifact_sha256 if metadata is None else None)
                   or sha256_file(self.path))
            self.trt_cache = trt_cache_folder(self.path, sha, self.precision, self.device_id,
                                              Path(cache_dir) if cache_dir else None)
            self.trt_cache.mkdir(parents=True, exist_ok=True)
        self.gpu = any(p in GPU_PROVIDERS for p in names)
        self.session = self._session(
            ort, provider_options(names, self.device_id, self.precision, self.trt_cache),
            threads, spinning)
        if self.gpu:
            self.session.disable_fallback()  # a failing EP raises instead of rerunning on CPU
        self.providers = self.session.get_providers()
        check_providers(requested, self.providers, self.path,
                        allow_cpu_fallback or (device == "auto" and not providers))
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self._check_input(self.session.get_inputs()[0].shape)

    def _session(self, ort: Any, providers: list[tuple[str, dict[str, str]]],
                 threads: int | None, spinning: bool) -> Any:
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
        if not self.gpu:
            return self.session.run([self.output_name], {self.input_name: x})[0]
        try:
            return self.session.run([self.output_name], {self.input_name: x})[0]
        except Exception as e:  # onnxruntime's own error types
            first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise BackendUnavailableError(
                f"{self.path}: {self.providers[0]} failed while running ({first}); it was "
                "not retried on the CPU. Check `posemum doctor`, or pass --device cpu") from e
