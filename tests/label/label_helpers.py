"""Helpers for labeling tests: a tiny random checkpoint and small image folders."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from posemum_deploy.artifacts import ModelMetadata
from posemum_deploy.label.boxes import FullImageBoxes
from posemum_deploy.models.simple_baseline import build_model

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def make_checkpoint(path: Path, seed: int = 0) -> Path:
    """A random-weight ResNet-18 SimpleBaseline at 128x96, as `load_model` reads it."""
    torch.manual_seed(seed)
    model = build_model("resnet18", 17)
    with torch.no_grad():  # make heatmaps peak somewhere, so scores are not all ~0
        model.final.weight.normal_(0, 0.05)
    meta = ModelMetadata(input_hw=(128, 96), heatmap_hw=(32, 24))
    torch.save({"model": model.state_dict(), "teacher": None, "model_meta": meta.to_dict()}, path)
    return path


def write_images(folder: Path, n: int, seed: int = 0, size: tuple[int, int] = (120, 90)) -> list[Path]:
    """n small random JPEGs/PNGs in nested folders, some with upper-case suffixes."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        sub = folder / f"part{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        suffix = (".jpg", ".PNG", ".jpeg", ".bmp")[i % 4]
        path = sub / f"img{i:03d}{suffix}"
        image = rng.integers(0, 255, (size[0] + i, size[1] + 2 * i, 3), dtype=np.uint8)
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


class DyingBoxes:
    """Whole-image boxes whose labeling process dies (os._exit, like an OOM kill) when it
    reaches `fatal`: a box source that spawned labelers unpickle from this module."""

    def __init__(self, fatal: str) -> None:
        from posemum_deploy.label.boxes import FullImageBoxes

        self.fatal, self.inner = fatal, FullImageBoxes()

    def boxes(self, rel_path: str, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if rel_path == self.fatal:
            import os

            os._exit(3)
        return self.inner.boxes(rel_path, image)

    def identity(self) -> dict:
        return {"kind": "full"}  # the output does not depend on which file kills


@dataclass
class FailingBoxes(FullImageBoxes):
    """Whole-image boxes for the device path that raise (a bug, not a bad file) at
    `fatal`: the error must reach the caller of a multi-process run."""

    fatal: str = ""

    def raw(self, rel_path: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        if rel_path == self.fatal:
            raise RuntimeError(f"box source failed at {rel_path}")
        return super().raw(rel_path, width, height)
