"""`posemum plot`: val AP and losses of training runs, or a labeling run's rates, as a PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def plot(
    folders: Annotated[list[Path], typer.Argument(
        help="Training run folders (metrics.jsonl) or labeling output folders "
             "(label_log.jsonl), not both.")],
    out: Annotated[Path, typer.Option("--out", help="Image to write (.png, .pdf or .svg).")
                   ] = Path("curves.png"),
) -> None:
    """Compare runs: val AP against step and the training losses, one line per run
    (labeled by its preset); for labeling folders, images/s and crops/s over time."""
    from posemum_deploy.plots import RunCurves, plot_folders

    series = plot_folders(folders, out)
    console = Console()
    for s in series:
        if isinstance(s, RunCurves):
            last = f"last val AP {s.val_ap[-1]:.4f}" if s.val_ap else "no val AP yet"
            console.print(f"{s.label}: {len(s.val_steps)} val points, {last}, "
                          f"losses {', '.join(sorted(s.losses)) or '-'}", highlight=False)
        else:
            console.print(f"{s.out_dir.name}: {len(s.seconds)} shards, last "
                          f"{s.images_per_s[-1]:.1f} images/s, {s.crops_per_s[-1]:.1f} crops/s",
                          highlight=False)
    console.print(f"wrote {out}", highlight=False)
