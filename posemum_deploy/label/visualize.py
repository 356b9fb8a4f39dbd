"""`visualize`: draw the pseudo-labels of a sample of images, to eyeball a run.

The sample is evenly spaced over the images that have people, so it is the same each
time and covers the whole folder rather than its first shard.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from posemum_deploy.data.coco import SKELETON
from posemum_deploy.data.images import read_image
from posemum_deploy.errors import ImageError
from posemum_deploy.label.writer import iter_records

log = logging.getLogger(__name__)
_LEFT, _RIGHT, _CENTER = (255, 128, 0), (0, 160, 255), (0, 220, 0)  # RGB


def _joint_color(j: int) -> tuple[int, int, int]:
    """Left joints orange, right blue, nose green: a left/right swap is easy to spot."""
    return _CENTER if j == 0 else (_LEFT if j % 2 == 1 else _RIGHT)


def draw_persons(image: np.ndarray, persons: list[dict[str, Any]],
                 min_joint_score: float = 0.2) -> np.ndarray:
    """RGB image with boxes, skeleton limbs and joints scoring ≥ min_joint_score drawn."""
    out = image.copy()
    thick = max(1, round(max(image.shape[:2]) / 400))
    for person in persons:
        x, y, w, h = (int(round(v)) for v in person["box"])
        cv2.rectangle(out, (x, y), (x + w, y + h), (255, 255, 255), thick)
        xy = np.asarray(person["keypoints"], dtype=np.float64)
        ok = np.asarray(person["joint_scores"]) >= min_joint_score
        for a, b in SKELETON:
            if ok[a - 1] and ok[b - 1]:
                cv2.line(out, tuple(int(v) for v in xy[a - 1]), tuple(int(v) for v in xy[b - 1]),
                         _joint_color(b - 1), thick, cv2.LINE_AA)
        for j in np.flatnonzero(ok).tolist():
            cv2.circle(out, tuple(int(v) for v in xy[j]), thick + 1, _joint_color(j), -1,
                       cv2.LINE_AA)
        cv2.putText(out, f"{person['score']:.2f}", (x, max(10, y - 3)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thick, (255, 255, 255), thick, cv2.LINE_AA)
    return out


def visualize_run(out_dir: str | Path, images_dir: str | Path, vis_dir: str | Path,
                  n: int = 20, min_joint_score: float = 0.2) -> list[Path]:
    """Draw `n` evenly spaced images with people; returns the written files. Two passes
    over the shards, holding only the drawn records (a million-image run would not fit)."""
    count = sum(1 for r in iter_records(out_dir) if r["persons"])
    if not count:
        log.warning("%s: no labeled people to draw", out_dir)
        return []
    picks = set(np.linspace(0, count - 1, min(n, count)).astype(int).tolist())
    chosen = [r for k, r in enumerate(r for r in iter_records(out_dir) if r["persons"])
              if k in picks]
    vis_dir = Path(vis_dir)
    vis_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for record in chosen:
        try:
            image = read_image(Path(images_dir) / record["file"])
        except ImageError as e:
            log.warning("cannot draw: %s", e)
            continue
        drawn = draw_persons(image, record["persons"], min_joint_score)
        path = vis_dir / (record["file"].replace("/", "__").rsplit(".", 1)[0] + ".jpg")
        cv2.imwrite(str(path), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        written.append(path)
    return written
