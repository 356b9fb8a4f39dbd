"""The GPU fast path without TensorRT: half precision, channels_last, CUDA graphs.

fp16 can overflow to inf/NaN for some weights (a randomly initialised ResNet-101 did),
so the mode checks the outputs on calibration crops first and falls back to bf16 with a
warning. A CUDA graph per fixed batch size removes the per-layer launch overhead that
dominates small-crop inference; `torch.compile` is optional where it helps.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from posemum_deploy.artifacts import ModelMetadata
from posemum_deploy.errors import ConfigError
from posemum_deploy.inference.torch_backend import PRECISIONS, TorchBackend
from posemum_deploy.models.cuda_graph import GraphedForward

log = logging.getLogger(__name__)


def outputs_finite(model: nn.Module, batch: torch.Tensor, dtype: torch.dtype) -> bool:
    """Does the network in `dtype` give only finite heatmaps on these crops?"""
    with torch.inference_mode():
        out = model.to(dtype)(batch.to(dtype))
    return bool(torch.isfinite(out).all())


class FastTorchBackend(TorchBackend):
    """Half-precision weights, channels_last, and a captured CUDA graph per batch size.

    `predict_tensor` takes a device tensor (for the GPU-side labeling pipeline);
    `predict` takes NumPy, copies through pinned memory and pads to `batch_size`.
    """

    name = "torch-fast"

    def __init__(self, model: str | Path | nn.Module, metadata: ModelMetadata | None = None,
                 device: str | None = "auto", precision: str = "fp16", batch_size: int = 32,
                 cuda_graphs: bool = True, compile: bool = False, compile_mode: str = "default",
                 calibration: np.ndarray | None = None, weights: str = "teacher") -> None:
        super().__init__(model, metadata, device=device, precision="fp32", channels_last=True,
                         weights=weights)
        if precision not in ("fp16", "bf16"):
            raise ConfigError("the fast torch mode runs fp16 or bf16; use TorchBackend for fp32")
        if precision == "fp16" and self.device.type == "cpu":
            precision = "bf16"  # CPU kernels for fp16 convolutions are slow or missing
        self.batch_size = batch_size
        h, w = self.metadata.input_hw
        probe = (torch.from_numpy(calibration) if calibration is not None
                 else torch.randn(min(batch_size, 8), 3, h, w))
        probe = probe.to(self.device).contiguous(memory_format=torch.channels_last)
        if precision == "fp16" and not outputs_finite(self.model, probe, torch.float16):
            log.warning("fp16 gave non-finite heatmaps on the calibration crops; using bf16")
            precision = "bf16"
        self.dtype = PRECISIONS[precision]
        self.model = self.model.to(self.dtype)
        self.metadata.precision = precision
        # Our own CUDA graphs wrap the compiled model, so never let inductor add its own
        # ("reduce-overhead"); "max-autotune-no-cudagraphs" autotunes for minutes.
        if compile_mode not in ("default", "max-autotune-no-cudagraphs"):
            raise ConfigError("compile_mode: use 'default' or 'max-autotune-no-cudagraphs'")
        self.forward = torch.compile(self.model, mode=compile_mode, dynamic=False) \
            if compile else self.model
        self.use_graphs = cuda_graphs and self.device.type == "cuda"
        self._graphed = GraphedForward(self._infer)

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.forward(x)

    @torch.inference_mode()
    def predict_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device, non_blocking=True).to(self.dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        if not self.use_graphs:
            return self.forward(x).float()
        return self._graphed(x).float()  # a new tensor: the graph's buffer is reused

    def close(self) -> None:
        """Give back the GPU memory this backend holds (graphs, weights, cache), e.g.
        before spawning labeling processes; it cannot predict afterwards."""
        self._graphed.reset()
        self.model.to("cpu")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        host = torch.from_numpy(np.ascontiguousarray(batch))
        if self.device.type == "cuda":
            host = host.pin_memory()
        return self.predict_tensor(host).cpu().numpy()
