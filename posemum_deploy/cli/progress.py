"""Rich progress displays handed to library functions as callbacks."""
from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn,
                           TextColumn, TimeElapsedColumn, TimeRemainingColumn)

console = Console(stderr=True)


def make_progress(*extra: TextColumn) -> Progress:
    """A bar with count, rate-friendly fields, elapsed time and ETA."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TaskProgressColumn(), *extra, TimeElapsedColumn(), TextColumn("eta"),
                    TimeRemainingColumn(), console=console, transient=False)


class RichTrainCallbacks:
    """Shows steps, loss, crops/s and ETA; prints each validation's AP."""

    def __init__(self) -> None:
        self.progress = make_progress(TextColumn("{task.fields[info]}"))
        self.task = None

    def __enter__(self) -> "RichTrainCallbacks":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def on_start(self, total_steps: int, start_step: int) -> None:
        self.task = self.progress.add_task("train", total=total_steps, completed=start_step,
                                           info="")

    def on_step(self, step: int, logs: dict[str, float]) -> None:
        if "loss" not in logs:  # nothing logged yet (the first runtime.log_every steps)
            self.progress.update(self.task, completed=step)
            return
        info = f"loss {logs['loss']:.2e}  {logs.get('crops_per_s', 0):.0f} crops/s"
        self.progress.update(self.task, completed=step, info=info)

    def on_eval(self, epoch: int, metrics: dict[str, float]) -> None:
        self.progress.console.print(f"epoch {epoch + 1}: val AP {metrics.get('AP', 0):.4f}  "
                                    f"AP50 {metrics.get('AP50', 0):.4f}")
