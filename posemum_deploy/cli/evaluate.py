"""`posemum evaluate`: COCO keypoint AP of a results file, or of a model it runs first."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from posemum_deploy.data.coco import save_json
from posemum_deploy.errors import ConfigError
from posemum_deploy.evaluation.coco_eval import STAT_NAMES, evaluate_results


def evaluate(
    ann: Annotated[Path, typer.Option("--ann", help="COCO person-keypoints GT json.")],
    results: Annotated[Path | None, typer.Option(
        "--results", help="COCO keypoint results json to score (mode a).")] = None,
    model: Annotated[Path | None, typer.Option(
        "--model", help="Checkpoint / ONNX / engine to run on --ann's images first (mode b).")] = None,
    images: Annotated[Path | None, typer.Option(
        "--images", help="Folder with --ann's images (--model).",
        show_default="the folder of --ann")] = None,
    boxes: Annotated[str, typer.Option(
        "--boxes", help="Person boxes for --model: 'gt' or a COCO detection results json.")] = "gt",
    flip: Annotated[bool, typer.Option("--flip/--no-flip", help="Flip test (--model).")] = True,
    dark: Annotated[bool, typer.Option("--dark", help="DARK sub-pixel decoding (--model).")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Crops per batch (--model).")] = 64,
    backend: Annotated[str, typer.Option(
        "--backend", help="Runtime for --model: auto, torch, onnxruntime, tensorrt...")] = "auto",
    json_out: Annotated[Path | None, typer.Option(
        "--json-out", help="Write the 10 stats as json here.")] = None,
    results_out: Annotated[Path | None, typer.Option(
        "--results-out", help="Where --model writes its COCO results json.",
        show_default="results.json beside --json-out, else ./results.json")] = None,
) -> None:
    """Score person keypoints with pycocotools (OKS AP/AR), from --results or --model."""
    if (results is None) == (model is None):
        raise ConfigError("give exactly one of --results (score a results json) or "
                          "--model (predict, then score)")
    if results_out is not None and model is None:
        raise ConfigError("--results-out only applies with --model; --results is already a file")
    if model is not None:
        results = results_out or (json_out.parent if json_out else Path(".")) / "results.json"
        _predict(model, ann, images or ann.parent, boxes, flip, batch_size, backend, results, dark)
    assert results is not None  # given, or set just above for --model (exactly one of them)
    stats = evaluate_results(ann, results)
    console = Console()
    console.print(f"scored {results}", highlight=False, soft_wrap=True)
    console.print(_stats_table(stats))
    if json_out is not None:
        extra = {"results_file": str(results)} if model is not None else {}
        save_json({**stats, **extra}, json_out)


def _predict(model: Path, ann: Path, images: Path, boxes: str, flip: bool,
             batch_size: int, backend: str, results_path: Path, dark: bool = False) -> None:
    """Run the model over the GT images (rescored, OKS-NMSed) and save a results json."""
    # Lazy: inference pulls in the runtimes, which scoring a results file never needs.
    from posemum_deploy.inference.predict import predict_coco

    with Progress(*Progress.get_default_columns()[:1], MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("predicting (images)", total=None)
        dets = predict_coco(model, ann, images, boxes="gt" if boxes == "gt" else Path(boxes),
                            flip=flip, batch_size=batch_size, backend=backend, dark=dark,
                            progress=lambda n: bar.advance(task, n))
    save_json(dets, results_path)


def _stats_table(stats: dict[str, float]) -> Table:
    table = Table(title="OKS AP / AR")
    table.add_column("stat")
    table.add_column("value", justify="right")
    for name in STAT_NAMES:
        table.add_row(name, f"{stats[name]:.4f}")
    return table
