"""`posemum import`: bring a teacher trained elsewhere (SimpleBaseline checkpoint or an
ONNX heatmap model) into posemum, so label / evaluate / export / train accept it."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from posemum_deploy.cli.options import parse_hw
from posemum_deploy.errors import ConfigError


def _floats(text: str | None, flag: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError as e:
        raise ConfigError(f"{flag} {text!r}: expected 3 numbers, e.g. 123.675,116.28,103.53") from e
    if len(values) != 3 or (flag == "--std" and min(values) <= 0):
        raise ConfigError(f"{flag} {text!r}: expected 3 numbers (one per channel"
                          f"{', all > 0' if flag == '--std' else ''})")
    return values


def import_(
    src: Annotated[Path, typer.Argument(help="Upstream checkpoint (.pth/.pth.tar) or, with "
                                        "--onnx-heatmap, an ONNX heatmap model.")],
    out: Annotated[Path, typer.Option("--out", help="model.pt to write (checkpoints) or a "
                                      "folder for model.onnx + model.json (--onnx-heatmap).")],
    source: Annotated[str, typer.Option(
        "--from", help="auto | mmpose (1.x or 0.x) | simplebaseline (original release)")] = "auto",
    onnx_heatmap: Annotated[bool, typer.Option(
        "--onnx-heatmap", help="SRC is an ONNX model: crops [N,3,H,W] in, heatmaps out.")] = False,
    input_size: Annotated[str, typer.Option("--input-size", help="Crop HxW the model was "
                                            "trained at.")] = "256x192",
    mean: Annotated[str | None, typer.Option(
        "--mean", help="Per-channel mean in the network's channel order, 0..255 or 0..1.",
        show_default="123.675,116.28,103.53")] = None,
    std: Annotated[str | None, typer.Option(
        "--std", help="Per-channel std, same scale and order as --mean.",
        show_default="58.395,57.12,57.375")] = None,
    channel_order: Annotated[str | None, typer.Option(
        "--channel-order", help="rgb | bgr: what the network expects.",
        show_default="mmpose and ONNX: rgb; simplebaseline: bgr")] = None,
    keypoints: Annotated[str, typer.Option("--keypoints", help="Joint layout: coco17.")] = "coco17",
    heatmap_offset: Annotated[float, typer.Option(
        "--heatmap-offset", help="--onnx-heatmap: 0 if heatmaps peak at crop_xy/stride "
        "(mmpose MSRA, original SimpleBaseline), 0.5 for posemum's pixel-centre convention")
    ] = 0.0,
) -> None:
    """Import a SimpleBaseline checkpoint (mmpose / original) or wrap an ONNX heatmap model."""
    from posemum_deploy.models.upstream import normalisation

    hw = parse_hw(input_size, "--input-size", model_rule=False)
    mean_v, std_v = _floats(mean, "--mean"), _floats(std, "--std")
    console = Console()
    if onnx_heatmap:
        from posemum_deploy.export.onnx_heatmap import import_onnx_heatmap

        if source != "auto":
            raise ConfigError("--from is for checkpoints; --onnx-heatmap reads any ONNX layout")
        meta = import_onnx_heatmap(src, out, hw, *normalisation(mean_v, std_v),
                                   channel_order or "rgb", keypoints, heatmap_offset)
        written = out / "model.onnx"
    else:
        from posemum_deploy.models.upstream import import_checkpoint

        if keypoints != "coco17":
            raise ConfigError(f"--keypoints {keypoints!r}: checkpoints import as coco17")
        if out.suffix == "":
            out = out / "model.pt"
        meta = import_checkpoint(src, out, source, hw, mean_v, std_v, channel_order)
        written = out
    origin = meta.extra["imported_from"]
    console.print(f"{written}: {meta.backbone}, {meta.num_joints} joints, input "
                  f"{meta.input_hw[0]}x{meta.input_hw[1]} → heatmaps {meta.heatmap_hw[0]}x"
                  f"{meta.heatmap_hw[1]}; from {origin['layout']} ({origin['channel_order']} "
                  f"network), RGB mean {tuple(round(v * 255, 3) for v in meta.mean)} std "
                  f"{tuple(round(v * 255, 3) for v in meta.std)}", highlight=False, soft_wrap=True)
    console.print(f"check it: posemum evaluate --model {written} --ann VAL.json --images DIR",
                  highlight=False, soft_wrap=True)
