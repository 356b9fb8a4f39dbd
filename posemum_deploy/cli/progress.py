"""Rich progress displays handed to library functions as callbacks."""
from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
# labeled images after which the progress line shows hours per million images
ESTIMATE_AFTER_IMAGES = 100


def make_progress(*extra: TextColumn) -> Progress:
    """A bar with count, rate-friendly fields, elapsed time and ETA."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TaskProgressColumn(), *extra, TimeElapsedColumn(), TextColumn("eta"),
                    TimeRemainingColumn(), console=console, transient=False)


class RichTrainCallbacks:
    """Shows steps, loss, crops/s and ETA; prints each validation's AP."""

    def __init__(self) -> None:
        self.progress = make_progress(TextColumn("{task.fields[info]}"))
        self.task: TaskID | None = None

    def __enter__(self) -> RichTrainCallbacks:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def on_start(self, total_steps: int, start_step: int) -> None:
        self.task = self.progress.add_task("train", total=total_steps, completed=start_step,
                                           info="")

    def on_step(self, step: int, logs: dict[str, float]) -> None:
        assert self.task is not None  # the trainer calls on_start first
        if "loss" not in logs:  # nothing logged yet (the first runtime.log_every steps)
            self.progress.update(self.task, completed=step)
            return
        info = f"loss {logs['loss']:.2e}  {logs.get('crops_per_s', 0):.0f} crops/s"
        self.progress.update(self.task, completed=step, info=info)

    def on_eval(self, epoch: int, metrics: dict[str, float]) -> None:
        self.progress.console.print(f"epoch {epoch + 1}: val AP {metrics.get('AP', 0):.4f}  "
                                    f"AP50 {metrics.get('AP50', 0):.4f}")


class RichLabelProgress:
    """Images done with images/s, crops/s, skipped count and ETA; on its own bar, or as a
    task of a running `progress` (rounds show labeling and training in one display)."""

    def __init__(self, progress: Progress | None = None) -> None:
        # Its own display shows the bar while the model loads; a shared one gets it when
        # labeling starts (not during the trainings before it).
        self.progress = progress or make_progress(TextColumn("{task.fields[info]}"))
        self.task: TaskID | None = (None if progress
                                    else self.progress.add_task("label", total=None, info=""))
        self.images = self.crops = self.skipped = 0
        self.t0 = time.perf_counter()

    def start(self, total_images: int, done_images: int) -> None:
        if self.task is None:
            self.task = self.progress.add_task("label", total=None, info="")
        self.progress.reset(self.task, total=total_images, completed=done_images, info="")
        self.images = self.crops = self.skipped = 0
        self.t0 = time.perf_counter()

    def advance(self, images: int, crops: int, skipped: int) -> None:
        self.images, self.crops, self.skipped = (self.images + images, self.crops + crops,
                                                 self.skipped + skipped)
        dt = max(time.perf_counter() - self.t0, 1e-9)
        info = (f"{self.images / dt:.1f} img/s  {self.crops / dt:.1f} crops/s  "
                f"skipped {self.skipped}")
        if self.images >= ESTIMATE_AFTER_IMAGES:  # past the first shards: a planning number
            from posemum_deploy.label.summary import hours_per_million_images

            info += f"  ≈{hours_per_million_images(self.images / dt):.1f} h/1M img"
        assert self.task is not None  # the labeler calls start first
        self.progress.update(self.task, advance=images, info=info)
