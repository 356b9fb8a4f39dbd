"""`posemum synth`: write the built-in synthetic people dataset (COCO person keypoints)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from posemum_deploy.data.synthetic import generate_dataset


class _RateColumn(ProgressColumn):
    """Images per second, so a user can tell how long a big dataset will take."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- img/s" if speed is None else f"{speed:.0f} img/s", style="cyan")


def _parse_size(size: str) -> tuple[int, int]:
    """'256x320' -> (256, 320), height first like the rest of the toolkit."""
    try:
        h, w = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"{size!r}: expected HEIGHTxWIDTH, e.g. 256x320") from None
    if min(h, w) < 32:
        raise typer.BadParameter(f"{size!r}: both sides must be at least 32 pixels")
    return h, w


def synth(
    out: Annotated[Path, typer.Argument(help="Output folder (images/ and annotations.json).")],
    images: Annotated[int, typer.Option("--images", min=1, help="Number of images.")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, byte-identical dataset.")] = 0,
    size: Annotated[str, typer.Option("--size", help="Image size HEIGHTxWIDTH.")] = "256x320",
    max_people: Annotated[int, typer.Option("--max-people", min=1,
                                            help="At most this many people per image.")] = 4,
) -> None:
    """Generate synthetic articulated people with COCO-17 keypoints (the default dataset)."""
    image_size = _parse_size(size)
    with Progress(TextColumn("synth"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("synth", total=images)
        path = generate_dataset(out, images, seed, image_size=image_size, max_people=max_people,
                                progress=lambda n: bar.update(task, completed=n))
    Console().print(f"wrote {images} images; annotations: {path}", highlight=False,
                    soft_wrap=True)
