"""What the training loop asks of a step (`TrainStep`), the supervised step, and the
choice of step for a config.

`trainer.train` knows a step only through `TrainStep`: it calls `set_epoch` before each
epoch and the step on each labeled batch, sizes an epoch by the step's unlabeled
`stream` (if it has one) and validates, checkpoints and resumes its `teacher` (if it has
one). Every step (`SupervisedStep`, `pseudo_mix.PseudoMixStep`,
`ssl_step.SemiSupervisedStep`) states all four, so the loop needs no `hasattr`.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from posemum_deploy.data.datasets import UnreadableImages
from posemum_deploy.data.transforms import normalize_batch
from posemum_deploy.models.simple_baseline import check_input_hw
from posemum_deploy.training.config import TrainConfig
from posemum_deploy.training.losses import joints_mse_loss

# A step that draws its own randomness re-seeds a generator per epoch from
# (runtime.seed, epoch[, rank]) with these strides, primes that keep the triples apart.
STEP_SEED_STRIDE = 1_000_003
STEP_EPOCH_STRIDE = 131


class StepTeacher(Protocol):
    """A step's teacher as the loop sees it: the network validated and saved as the run's
    "teacher", and a state (EMA buffers, a dual partner's optimiser) that resume restores."""

    model: nn.Module

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


class UnlabeledBatches(Protocol):
    """A step's unlabeled stream as the loop sees it: its length (one pass, in batches)
    sizes an `epoch_unit: unlabeled` epoch; its unreadable images join the run's list."""

    unreadable: UnreadableImages

    def __len__(self) -> int: ...


@runtime_checkable
class TrainStep(Protocol):
    """One optimisation step; see the module docstring for how the loop uses each part."""

    # Read-only to the loop, so a step may hold a narrower kind (its own teacher class).
    @property
    def teacher(self) -> StepTeacher | None:
        """None: the student is validated and saved alone."""
        ...

    @property
    def stream(self) -> UnlabeledBatches | None:
        """None: the step reads labeled batches only."""
        ...

    def set_epoch(self, epoch: int) -> None:
        """Re-seed the step's own randomness (and stream) for `epoch`, so a run resumed
        at an epoch sees what an uninterrupted one saw."""
        ...

    def __call__(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """One step on a labeled batch; losses stay device tensors (the loop reads them
        only on the steps it logs, so the GPU is not waited on every step)."""
        ...


class SupervisedStep:
    """One optimisation step on a labeled batch: forward, JointsMSE, backward, Adam."""

    teacher: StepTeacher | None = None
    stream: UnlabeledBatches | None = None

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 device: torch.device, amp: torch.dtype | None, channels_last: bool) -> None:
        self.model, self.optimizer, self.device = model, optimizer, device
        self.amp, self.channels_last = amp, channels_last

    def set_epoch(self, epoch: int) -> None:
        """Nothing to re-seed: the loader's epoch already fixes the augmentation."""

    def inputs(self, batch: dict[str, Any]) -> torch.Tensor:
        x = normalize_batch(batch["image"].to(self.device, non_blocking=True))
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def __call__(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """One step; the loss stays a device tensor until the trainer logs it."""
        x = self.inputs(batch)
        target = batch["target"].to(self.device, non_blocking=True)
        weight = batch["target_weight"].to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32,
                            enabled=self.amp is not None):
            pred = self.model(x)
        loss = joints_mse_loss(pred, target, weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach()}


def build_step(cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
               device: torch.device, amp: torch.dtype | None) -> TrainStep:
    """The step for this config: supervised, or the semi-supervised step of the preset."""
    check_input_hw(cfg.data.input_hw)
    if cfg.ssl.teacher == "none" and cfg.pseudo.labels:
        from posemum_deploy.training.pseudo_mix import PseudoMixStep

        return PseudoMixStep(cfg, model, optimizer, device, amp)
    if cfg.ssl.teacher == "none":
        return SupervisedStep(model, optimizer, device, amp, cfg.runtime.channels_last)
    from posemum_deploy.training.ssl_step import build_ssl_step

    return build_ssl_step(cfg, model, optimizer, device, amp)
