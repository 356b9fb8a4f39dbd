"""`posemum convert yolo2coco`: a YOLO-pose dataset split as a COCO keypoints json."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from posemum_deploy.errors import ConfigError

DIRECTIONS = ("yolo2coco",)


def convert(
    direction: Annotated[str, typer.Argument(help="yolo2coco")],
    data: Annotated[Path, typer.Argument(help="The dataset's data.yaml (Ultralytics format).")],
    out: Annotated[Path, typer.Option("--out", help="COCO person-keypoints json to write.")],
    split: Annotated[str, typer.Option("--split", help="train | val | test")] = "train",
) -> None:
    """Convert between label formats (yolo2coco: YOLO-pose split → COCO json)."""
    from posemum_deploy.data.coco import save_json
    from posemum_deploy.data.yolo import yolo_to_coco

    if direction not in DIRECTIONS:
        raise ConfigError(f"convert {direction!r}: choose {', '.join(DIRECTIONS)} (COCO → YOLO "
                          "is `posemum merge ... --format yolo`)")
    coco, images = yolo_to_coco(data, split)
    save_json(coco, out)
    Console().print(f"{out}: {len(coco['images'])} images, {len(coco['annotations'])} persons; "
                    f"file names are relative to {images} (pass it as --images)",
                    highlight=False, soft_wrap=True)
