"""Heatmap losses."""
from __future__ import annotations

import torch
from torch import Tensor


def joints_mse_loss(pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """SimpleBaseline's JointsMSELoss: mean over joints of 0.5·MSE(pred·w, target·w).

    pred, target [N, K, h, w]; weight [N, K] (0 for unlabelled joints) or None.
    """
    pred = pred.float()
    if weight is not None:
        w = weight.float()[:, :, None, None]
        pred, target = pred * w, target * w
    return 0.5 * torch.mean((pred - target.float()) ** 2)
