"""`posemum calibrate`: per-joint thresholds for pseudo-labels at an asked precision."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from posemum_deploy.cli.progress import make_progress


def calibrate(
    model: Annotated[Path, typer.Argument(help="The labeling model (checkpoint or export).")],
    ann: Annotated[Path, typer.Option("--ann", help="Labeled COCO keypoint json (GT boxes).")],
    images: Annotated[Path, typer.Option("--images", help="Its image folder.")],
    out: Annotated[Path, typer.Option("--out", help="Thresholds json to write (PNG beside).")],
    tta: Annotated[str, typer.Option(
        "--tta", help="The views the labels will use: flip | scales=0.8,1.0,1.2 | ...")] = "none",
    ensemble: Annotated[list[Path] | None, typer.Option(
        "--model", help="Another teacher of the ensemble (as with `posemum label`).")] = None,
    models_file: Annotated[Path | None, typer.Option(
        "--models", help="A text file of further teachers, one path a line.")] = None,
    precision: Annotated[float, typer.Option(
        "--precision", help="Share of kept joints that must lie within OKS 0.5.")] = 0.9,
    search: Annotated[str, typer.Option(
        "--search", help="each: score and agreement thresholds each reach --precision alone "
        "(a joint passes both); pair: the pair keeping the most joints at it.")] = "each",
    confidence_z: Annotated[float, typer.Option(
        "--confidence-z", help="> 0: the precision's Wilson lower bound (Z standard errors) "
        "must reach --precision, so the thresholds hold on new images (1 is careful).")] = 0.0,
    backend: Annotated[str, typer.Option(
        "--backend", help="auto | torch | torch-fast | onnxruntime | tensorrt | openvino")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Crops per call.")] = 32,
    max_images: Annotated[int | None, typer.Option(
        "--max-images", min=1, help="Use only the first N labeled images.")] = None,
) -> None:
    """Per joint type, the lowest score (and agreement) threshold whose kept joints are
    right (OKS ≥ 0.5) at least --precision of the time; for `merge --thresholds`."""
    from posemum_deploy.inference.tta import read_model_list
    from posemum_deploy.label.calibrate import calibrate as run

    members = [str(model), *map(str, ensemble or [])]
    members += read_model_list(models_file) if models_file is not None else []
    with make_progress() as bar:
        task = bar.add_task("calibrate", total=None)
        result = run(members, ann, images, out, tta, precision,
                     backend=backend, batch_size=batch_size, max_images=max_images,
                     progress=lambda done, total: bar.update(task, completed=done, total=total),
                     search=search, z=confidence_z)
    chosen = f", {search}" + (f", z {confidence_z:g}" if confidence_z else "")
    table = Table(title=f"thresholds at precision {precision:g}{chosen} → {out}")
    for col in ("joint", "score ≥", "keeps", "agreement ≥", "keeps (both)"):
        table.add_column(col, justify="left" if col == "joint" else "right")

    def fmt(v: float) -> str:
        return "never" if math.isinf(v) else "-" if math.isnan(v) else f"{v:.3g}"

    for j, name in enumerate(result.keypoint_names):
        st = result.stats[j]
        table.add_row(name, fmt(result.score[j]), f"{st['kept_share_score']:.0%}",
                      fmt(result.agreement[j]), f"{st['kept_share_both']:.0%}")
    Console().print(table)
    Console().print(f"reliability plot: {out.with_suffix('.png')}", highlight=False)
