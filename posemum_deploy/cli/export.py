"""`posemum export`: a checkpoint to ONNX, ONNX Runtime INT8 or a TensorRT engine."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from posemum_deploy.export.formats import FORMATS, ExportOptions, export_model, parse_profile


def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.pt), or a posemum .onnx for "
                                               "tensorrt / onnx-int8 / openvino.")],
    fmt: Annotated[str, typer.Option("--format", help=f"One of: {', '.join(FORMATS)}.")] = "onnx",
    out: Annotated[Path, typer.Option("--out", help="Artifact file, or a folder for model.<ext>.")
                   ] = Path("export"),
    fp16: Annotated[bool, typer.Option("--fp16", help="TensorRT: FP16 kernels.")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="TensorRT: INT8 calibrated on --calib.")] = False,
    calib: Annotated[Path | None, typer.Option(
        "--calib", help="Person images folder or COCO keypoints json for INT8 calibration.")] = None,
    calib_count: Annotated[int, typer.Option("--calib-count", min=1, help="Crops to calibrate on.")
                           ] = 256,
    check: Annotated[Path | None, typer.Option(
        "--check", help="Images folder or COCO json for the torch parity check.",
        show_default="--calib, else the checkpoint's val set")] = None,
    batch: Annotated[str, typer.Option("--batch", help="TensorRT batch profile MIN,OPT,MAX.")
                     ] = "1,32,64",
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (≥ 17).")] = 17,
    weights: Annotated[str, typer.Option("--weights", help="teacher or student.")] = "teacher",
    val_ann: Annotated[Path | None, typer.Option(
        "--val-ann", help="COCO json to compare AP of INT8 with fp32.")] = None,
    val_images: Annotated[Path | None, typer.Option("--val-images", help="Its images.")] = None,
    max_ap_drop: Annotated[float, typer.Option(
        "--max-ap-drop", help="Refuse INT8 when AP drops more (points).")] = 1.0,
    precision: Annotated[str | None, typer.Option(
        "--precision", help="OpenVINO: fp32, bf16 or int8 (bf16/int8 need --calib).")] = None,
) -> None:
    """Export the network (crops in, heatmaps out) with a model.json sidecar, then check it."""
    options = ExportOptions(opset=opset, weights=weights, fp16=fp16, int8=int8, calib=calib,
                            calib_count=calib_count, check=check, batch=parse_profile(batch),
                            val_ann=val_ann, val_images=val_images, max_ap_drop=max_ap_drop,
                            extra={"precision": precision} if precision else {})
    console = Console()
    with console.status(f"exporting {checkpoint.name} → {fmt}"):
        result = export_model(checkpoint, fmt, out, options)
    console.print(f"wrote {result.artifact} (+ {result.sidecar.name}, "
                  f"precision {result.metadata.precision})", highlight=False, soft_wrap=True)
    if result.report:
        console.print(_report_table(result.report))


def _report_table(report: dict[str, Any]) -> Table:
    table = Table(title="checks")
    table.add_column("check")
    table.add_column("value", justify="right", overflow="fold")
    for key, value in report.items():
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        table.add_row(escape(key), escape(text))
    return table
