"""Helpers for labeling tests: a tiny random checkpoint and small image folders."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from testdata import SHARED_DATA as SHARED  # noqa: F401  (imported by label tests)
from testdata import make_checkpoint as _make_checkpoint

from posemum_deploy.label.boxes import FullImageBoxes


def make_checkpoint(path: Path, seed: int = 0) -> Path:
    """The labeling tests' model (head spread only), from the one builder in testdata."""
    return _make_checkpoint(path, seed=seed, spread_deconv=False)


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
