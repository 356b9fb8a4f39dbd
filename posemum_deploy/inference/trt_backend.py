"""TensorRT engine backend (TRT 10 named-tensor API) on a CUDA stream.

Buffers are torch CUDA tensors, so no pycuda/cuda-python is needed: the input is copied
to the device, `set_input_shape` + `set_tensor_address` bind it by name, and
`execute_async_v3` runs on torch's current stream. Before anything runs, the engine's
sidecar must describe this file and its engine key must match this machine's
TensorRT version and GPU architecture; stale or foreign engines are refused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from posemum_deploy.artifacts import ModelMetadata, read_sidecar, sha256_file
from posemum_deploy.errors import ArtifactError, ConfigError
from posemum_deploy.inference.trt_engine import (
    EngineKey,
    check_engine,
    current_gpu,
    import_tensorrt,
)


def verify_engine(path: Path, meta: ModelMetadata, trt_version: str, compute_capability: str
                  ) -> EngineKey:
    """The engine's recorded key, after checking it fits this machine and its ONNX source."""
    key = check_engine(meta.extra.get("engine_key"), trt_version, compute_capability, path)
    name = str(meta.extra.get("onnx_source") or "")
    source = path.with_name(name) if name else path
    if source != path and source.is_file() and sha256_file(source) != key.onnx_sha256:
        raise ArtifactError(f"{path}: stale, {source.name} changed since the engine was built; "
                            f"rebuild: `posemum export {source} --format tensorrt --out {path}`")
    return key


class TrtBackend:
    """A serialized TensorRT engine; predict(float32 NCHW) within its batch profile."""

    name = "tensorrt"

    def __init__(self, path: str | Path, device: str = "cuda") -> None:
        import torch

        if device not in ("cuda", "auto") and not str(device).startswith("cuda"):
            raise ConfigError(f"TensorRT runs on CUDA only; device {device!r} is not possible")
        trt = import_tensorrt()
        self.path = Path(path)
        if self.path.suffix.lower() == ".onnx":
            raise ArtifactError(f"{self.path}: TensorRT runs engines; build one with "
                                f"`posemum export {self.path} --format tensorrt`")
        self.metadata = read_sidecar(self.path, "tensorrt")
        _, cc = current_gpu()
        self.key = verify_engine(self.path, self.metadata, trt.__version__, cc)
        self.device = torch.device("cuda" if device == "auto" else device)
        self.engine = self._deserialize(trt)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.input_name = inputs[0]
        self.output_name = next(n for n in names if n not in inputs)

    def _deserialize(self, trt: Any) -> Any:
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise ArtifactError(f"{self.path}: TensorRT cannot deserialize this engine; rebuild "
                                "it on this machine with `posemum export --format tensorrt`")
        return engine

    @staticmethod
    def is_available(path: str | Path | None = None) -> tuple[bool, str]:
        try:
            import_tensorrt()
            current_gpu()
        except Exception as e:  # BackendUnavailableError, or a broken CUDA install
            return False, str(e)
        if path is not None and Path(path).suffix.lower() not in (".engine", ".plan"):
            return False, "TensorRT runs built engines (.engine); export with --format tensorrt"
        return True, ""

    def predict_tensor(self, x: Any) -> Any:
        """float32 CUDA tensor [N, 3, H, W] → heatmaps CUDA tensor [N, K, h, w]."""
        import torch

        lo, _, hi = self.key.profile
        if not lo <= x.shape[0] <= hi:
            raise ConfigError(f"{self.path}: batch {x.shape[0]} outside the engine's profile "
                              f"{lo}..{hi}; use --batch-size within it or rebuild with --batch")
        x = x.to(self.device, torch.float32).contiguous()
        self.context.set_input_shape(self.input_name, tuple(x.shape))
        out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)),
                          dtype=torch.float32, device=self.device)
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        self.context.set_tensor_address(self.output_name, out.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise ArtifactError(f"{self.path}: TensorRT execution failed (see its log)")
        return out

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Normalised float32 [N, 3, H, W] → heatmaps [N, K, h, w] (synchronous)."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        return self.predict_tensor(x.pin_memory()).cpu().numpy()
