"""TensorRT engine backend (named-tensor API, TensorRT 10.x and 11.x) on its own stream.

Buffers are torch CUDA tensors, so no pycuda/cuda-python is needed: the input is copied
to the device, `set_input_shape` + `set_tensor_address` bind it by name, and
`execute_async_v3` runs on a CUDA stream owned by the backend (TensorRT warns about, and
synchronises around, the legacy default stream). Every engine/context call runs under
the backend's device (`torch.cuda.device`), so `cuda:1` builds its context on GPU 1, where
its buffers are; output buffers take the dtype the engine declares. Before anything
runs, the engine's sidecar must describe this file and its engine key must match this
machine's TensorRT version and GPU; stale or foreign engines are refused.
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


def verify_engine(path: Path, meta: ModelMetadata, trt_version: str, gpu_name: str,
                  compute_capability: str) -> EngineKey:
    """The engine's recorded key, after checking it fits this machine and its ONNX source."""
    key = check_engine(meta.extra.get("engine_key"), trt_version, gpu_name, compute_capability,
                       path)
    name = str(meta.extra.get("onnx_source") or "")
    source = path.with_name(name) if name else path
    if source != path and source.is_file() and sha256_file(source) != key.onnx_sha256:
        raise ArtifactError(f"{path}: stale, {source.name} changed since the engine was built; "
                            f"rebuild: `posemum export {source} --format tensorrt --out {path}`")
    return key


def torch_dtype(trt: Any, dtype: Any) -> Any:
    """The torch dtype of a TensorRT tensor type (the I/O types posemum engines can have)."""
    import torch

    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
             trt.DataType.BF16: torch.bfloat16}
    if dtype not in table:
        raise ArtifactError(f"engine tensor type {dtype} is not a float type posemum reads; "
                            "re-export the engine from a posemum ONNX")
    return table[dtype]


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
        self.device = torch.device("cuda" if device == "auto" else device)
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device()
                                       if torch.cuda.is_available() else 0)
        gpu_name, cc = current_gpu(self.device.index)
        self.key = verify_engine(self.path, self.metadata, trt.__version__, gpu_name, cc)
        with torch.cuda.device(self.device):
            self.engine = self._deserialize(trt)
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.device)
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            inputs = [n for n in names
                      if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            self.input_name = inputs[0]
            self.output_name = next(n for n in names if n not in inputs)
            self.input_dtype = torch_dtype(trt, self.engine.get_tensor_dtype(self.input_name))
            self.output_dtype = torch_dtype(trt, self.engine.get_tensor_dtype(self.output_name))

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
        """float CUDA/CPU tensor [N, 3, H, W] → heatmaps CUDA tensor [N, K, h, w] in the
        engine's output dtype, ready on the caller's current stream."""
        import torch

        lo, _, hi = self.key.profile
        if not lo <= x.shape[0] <= hi:
            raise ConfigError(f"{self.path}: batch {x.shape[0]} outside the engine's profile "
                              f"{lo}..{hi}; use --batch-size within it or rebuild with --batch")
        with torch.cuda.device(self.device):
            caller = torch.cuda.current_stream(self.device)
            self.stream.wait_stream(caller)  # x may still be being written on the caller's stream
            with torch.cuda.stream(self.stream):
                if x.is_cuda:
                    x.record_stream(self.stream)
                x = x.to(self.device, self.input_dtype, non_blocking=True).contiguous()
                self.context.set_input_shape(self.input_name, tuple(x.shape))
                out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)),
                                  dtype=self.output_dtype, device=self.device)
                self.context.set_tensor_address(self.input_name, x.data_ptr())
                self.context.set_tensor_address(self.output_name, out.data_ptr())
                if not self.context.execute_async_v3(self.stream.cuda_stream):
                    raise ArtifactError(f"{self.path}: TensorRT execution failed (see its log)")
            caller.wait_stream(self.stream)
            if out.is_cuda:
                out.record_stream(caller)  # allocated on our stream, consumed on the caller's
        return out

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Normalised float32 [N, 3, H, W] → heatmaps [N, K, h, w] float32 (synchronous)."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if torch.cuda.is_available():
            x = x.pin_memory()  # lets the upload run asynchronously on our stream
        return self.predict_tensor(x).float().cpu().numpy()
