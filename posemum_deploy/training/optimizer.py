"""The student's Adam, built one way for the trainer, the Dual partner and the benchmarks,
and its learning rate: the per-epoch schedule and an optional linear warmup.

On CUDA it is the fused implementation: one kernel updates every parameter, where the
default multi-tensor path launches several per step. A semi-supervised ResNet-18 step is
short enough on a Hopper GPU that kernel launches, not arithmetic, bound it, so launches
saved here are time saved. The update rule is Adam's either way (Kingma & Ba), and the
state dict has the same layout, so checkpoints move between CPU and GPU runs.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

from posemum_deploy.errors import ConfigError

if TYPE_CHECKING:
    from posemum_deploy.training.config import TrainConfig

WARMUP_START = 0.001  # first step's share of the lr (mmpose's LinearLR start_factor)


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
    for group, (fused, foreach) in zip(optimizer.param_groups, chosen, strict=True):
        group["fused"], group["foreach"] = fused, foreach


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> Any:
    """Per-epoch LR schedule: the paper's steps (×gamma at milestones) or cosine, which
    converges faster when the whole budget is a few minutes (the demo). Cosine steps once
    per epoch, so epoch e of E runs at (1 + cos(πe/E))/2 of the base lr: the last epoch of
    20 at 0.006×, of 3 at 0.25× (few-epoch runs that should anneal want `step`)."""
    if cfg.optim.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.optim.milestones),
                                                    cfg.optim.gamma)
    if cfg.optim.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.optim.epochs)
    raise ConfigError(f"schedule must be 'step' or 'cosine', got {cfg.optim.schedule!r}")


class WarmupLR:
    """Linear LR warmup over the first `steps` steps, from WARMUP_START× to 1× of what
    the per-epoch schedule says: mmpose's SimpleBaseline recipe (500 steps), for users who
    train its way. (It did not keep a pose-mum-plus run that blows up at its start from
    blowing up, only delayed it; `ssl.clamp_targets` did: rounds-recipe.md.) The
    schedules are chainable (they step from the group's lr), so the warmed lr is put
    back before each epoch's scheduler step. `steps` 0: off."""

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler: Any, steps: int) -> None:
        if steps < 0:
            raise ConfigError(f"optim.warmup_steps must be >= 0, got {steps}; 0 turns it off")
        self.optimizer, self.scheduler, self.steps = optimizer, scheduler, steps

    def before_step(self, done: int) -> None:
        """Set the lr of step `done` + 1 (`done` steps trained so far)."""
        if done > self.steps or not self.steps:
            return
        factor = WARMUP_START + (1 - WARMUP_START) * done / self.steps
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr(), strict=True):
            group["lr"] = lr * factor

    def restore(self) -> None:
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr(), strict=True):
            group["lr"] = lr
