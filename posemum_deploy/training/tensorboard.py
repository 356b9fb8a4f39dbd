"""TensorBoard scalars for `posemum train --tensorboard` (optional: `pip install
'posemum[tensorboard]'`).

The trainer already reports through `TrainCallbacks`; TensorBoard is one more listener,
so it needs no hook of its own in the training loop: `TensorBoardCallbacks` writes what
metrics.jsonl holds (losses, lr, crops/s under `train/`, val AP and friends under `val/`)
as event files in RUN_DIR/tensorboard, and `FanOut` lets it sit beside the CLI's progress
bars. Only rank 0 writes (under torchrun every rank runs the callbacks it is given).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from posemum_deploy.errors import import_optional

TENSORBOARD_HINT = ("--tensorboard needs the tensorboard package: pip install "
                    "'posemum[tensorboard]' (or pip install tensorboard)")
LOG_SUBDIR = "tensorboard"


class TensorBoardCallbacks:
    """TrainCallbacks writing scalars to `log_dir`; close() (or `with`) flushes the file."""

    def __init__(self, log_dir: str | Path) -> None:
        import_optional("tensorboard", TENSORBOARD_HINT)  # one-line error when it is absent
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.enabled = int(os.environ.get("RANK", "0")) == 0
        self.writer = SummaryWriter(str(self.log_dir)) if self.enabled else None
        self.step = 0
        self._written: dict[str, float] | None = None

    def on_start(self, total_steps: int, start_step: int) -> None:
        self.step = start_step

    def on_step(self, step: int, logs: dict[str, float]) -> None:
        # The trainer hands every step the last *logged* values (a new dict each
        # runtime.log_every steps): write each logged row once, at the step it was read.
        self.step = step
        if self.writer is None or not logs or logs is self._written:
            return
        self._written = logs
        for key, value in logs.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(f"train/{key}", value, step)

    def on_eval(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.writer is None:
            return
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(f"val/{key}", value, self.step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> TensorBoardCallbacks:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class FanOut:
    """Several TrainCallbacks as one (the trainer takes one): each hook calls each, in order."""

    def __init__(self, *callbacks: Any) -> None:
        self.callbacks = [c for c in callbacks if c is not None]

    def on_start(self, total_steps: int, start_step: int) -> None:
        for c in self.callbacks:
            c.on_start(total_steps, start_step)

    def on_step(self, step: int, logs: dict[str, float]) -> None:
        for c in self.callbacks:
            c.on_step(step, logs)

    def on_eval(self, epoch: int, metrics: dict[str, float]) -> None:
        for c in self.callbacks:
            c.on_eval(epoch, metrics)
