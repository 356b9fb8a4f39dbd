"""PyTorch backend: a checkpoint (or an in-memory model) run in eager mode.

CPU runs can use bf16 autocast with channels_last (fast on AVX-512 bf16 CPUs); CUDA
runs fp32, fp16 or bf16. Asking for CUDA where there is none is an error, not a CPU run.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from posemum_deploy.artifacts import ModelMetadata
from posemum_deploy.errors import ConfigError
from posemum_deploy.system import resolve_device

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchBackend:
    """Eager PyTorch inference; `predict` takes float32 NCHW NumPy, returns NumPy heatmaps."""

    name = "torch"

    def __init__(self, model: str | Path | nn.Module, metadata: ModelMetadata | None = None,
                 device: str | None = "auto", precision: str = "fp32",
                 channels_last: bool | None = None, weights: str = "teacher") -> None:
        if isinstance(model, (str, Path)):
            from posemum_deploy.models.checkpoint import load_model

            model, metadata = load_model(model, weights=weights)
        if metadata is None:
            raise ConfigError("TorchBackend(model=nn.Module) needs its ModelMetadata")
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}")
        self.device = resolve_device(device)
        if precision == "fp16" and self.device.type == "cpu":
            raise ConfigError("fp16 inference is for CUDA; on the CPU use --precision bf16")
        self.dtype = PRECISIONS[precision]
        self.channels_last = (precision != "fp32") if channels_last is None else channels_last
        self.model = model.eval().to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.metadata = metadata
        self.metadata.precision = precision

    @staticmethod
    def is_available(path: str | Path | None = None) -> tuple[bool, str]:
        return True, ""

    @torch.inference_mode()
    def predict_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        """Normalised float batch on any device → float32 heatmaps on self.device."""
        x = batch.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype == torch.float32:
            return self.model(x.float())
        with torch.autocast(self.device.type, dtype=self.dtype):
            return self.model(x).float()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.predict_tensor(torch.from_numpy(np.ascontiguousarray(batch))).cpu().numpy()
