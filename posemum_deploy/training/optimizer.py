"""The student's Adam, built one way for the trainer, the Dual partner and the benchmarks.

On CUDA it is the fused implementation: one kernel updates every parameter, where the
default multi-tensor path launches several per step. A semi-supervised ResNet-18 step is
short enough on a Hopper GPU that kernel launches, not arithmetic, bound it, so launches
saved here are time saved. The update rule is Adam's either way (Kingma & Ba), and the
state dict has the same layout, so checkpoints move between CPU and GPU runs.
"""
from __future__ import annotations

from typing import Iterable

import torch


def make_adam(params: Iterable[torch.nn.Parameter], lr: float,
              device: torch.device | str) -> torch.optim.Adam:
    """Adam with lr `lr`; fused into one kernel per step when `device` is CUDA."""
    fused = torch.device(device).type == "cuda"
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


def load_adam_state(optimizer: torch.optim.Adam, state: dict) -> None:
    """`optimizer.load_state_dict(state)`, keeping the kernel choice made for this device.

    A state dict carries its param groups' `fused`/`foreach` flags; loading one saved on
    the CPU would otherwise turn a resumed CUDA run back to the unfused path.
    """
    chosen = [(g["fused"], g["foreach"]) for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, (fused, foreach) in zip(optimizer.param_groups, chosen):
        group["fused"], group["foreach"] = fused, foreach
