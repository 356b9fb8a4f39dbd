"""Person boxes per image from COCO json files (ground truth or detector results)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from posemum_deploy.data.coco import load_json
from posemum_deploy.errors import AnnotationError

# image_id -> (boxes [M, 4] xywh, scores [M])
BoxTable = dict[int, tuple[np.ndarray, np.ndarray]]


def _clean_box(box: list[float], width: float, height: float) -> list[float] | None:
    """Clip xywh to the image as SimpleBaseline does; None for a degenerate box."""
    x, y, w, h = box
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
    if x2 < x1 or y2 < y1 or w <= 0 or h <= 0:
        return None
    return [x1, y1, x2 - x1, y2 - y1]


def gt_boxes(coco: dict[str, Any], require_keypoints: bool = True) -> BoxTable:
    """Non-crowd person boxes (score 1) from a COCO annotation dict."""
    sizes = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
    table: dict[int, list[list[float]]] = {}
    for ann in coco["annotations"]:
        if ann.get("iscrowd", 0) or ann.get("category_id", 1) != 1:
            continue
        if require_keypoints and ann.get("num_keypoints", 0) == 0:
            continue
        box = _clean_box(ann["bbox"], *sizes[ann["image_id"]])
        if box is not None:
            table.setdefault(ann["image_id"], []).append(box)
    return {k: (np.array(v, dtype=np.float64), np.ones(len(v))) for k, v in table.items()}


def detection_boxes(path: str | Path, score_threshold: float = 0.0,
                    max_per_image: int | None = None) -> BoxTable:
    """Person boxes from a COCO detection results list (image_id, bbox, score, category_id)."""
    dets = load_json(path)
    if not isinstance(dets, list):
        raise AnnotationError(f"{path}: expected a COCO detection results list "
                              "([{image_id, category_id, bbox, score}, ...])")
    table: dict[int, list[tuple[float, list[float]]]] = {}
    for i, det in enumerate(dets):
        try:
            if det.get("category_id", 1) != 1 or det["score"] < score_threshold:
                continue
            box = [float(v) for v in det["bbox"]]
            if len(box) != 4:
                raise ValueError
            table.setdefault(int(det["image_id"]), []).append((float(det["score"]), box))
        except (KeyError, TypeError, ValueError) as e:
            raise AnnotationError(f"{path}: entry {i} is not a detection (needs image_id, "
                                  "bbox [x,y,w,h], score)") from e
    out: BoxTable = {}
    for image_id, entries in table.items():
        entries.sort(key=lambda e: -e[0])
        entries = entries[:max_per_image] if max_per_image else entries
        out[image_id] = (np.array([b for _, b in entries]), np.array([s for s, _ in entries]))
    return out
