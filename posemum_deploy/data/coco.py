"""COCO person-keypoint metadata and JSON I/O.

Everything that knows the COCO-17 layout lives here, so the codec, the datasets, the
evaluator and the exporters agree on one table of names, flip pairs and OKS sigmas.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from posemum_deploy.errors import AnnotationError

KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)
FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16),
)
# pycocotools' sigmas for the 17 COCO keypoints (OKS per-joint falloff).
OKS_SIGMAS = np.array(
    [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62,
     1.07, 1.07, 0.87, 0.87, 0.89, 0.89], dtype=np.float64) / 10.0
# 1-based joint index pairs, as COCO's json stores them.
SKELETON: tuple[tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7),
    (6, 8), (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5),
    (4, 6), (5, 7),
)


def flip_permutation(num_joints: int = NUM_KEYPOINTS,
                     flip_pairs: tuple[tuple[int, int], ...] = FLIP_PAIRS) -> np.ndarray:
    """Index array p such that flipped[..., j] = original[..., p[j]] swaps left/right."""
    perm = np.arange(num_joints)
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    return perm


def person_category() -> dict[str, Any]:
    """The COCO 'person' category entry with keypoint names and skeleton."""
    return {"id": 1, "name": "person", "supercategory": "person",
            "keypoints": list(KEYPOINT_NAMES), "skeleton": [list(p) for p in SKELETON]}


def load_json(path: str | Path) -> Any:
    """Read a json file, turning I/O and syntax problems into one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: file not found; pass the path of an existing COCO json")
    try:
        with path.open("r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: not valid json ({e.msg} at line {e.lineno}); "
                              "check that the file is complete") from e


def load_coco_keypoints(path: str | Path, require_persons: bool = True) -> dict[str, Any]:
    """Load and validate a COCO person-keypoints annotation file.

    Checks the structure the trainer and evaluator rely on, so that a wrong file fails
    here with its name rather than deep inside a data loader.
    """
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise AnnotationError(f"{path}: not a COCO annotation file (needs 'images' and "
                              "'annotations'); for a results list use --results")
    for ann in data["annotations"]:
        kps = ann.get("keypoints")
        if kps is not None and len(kps) != 3 * NUM_KEYPOINTS:
            raise AnnotationError(
                f"{path}: annotation {ann.get('id')} has {len(kps) // 3} keypoints, expected "
                f"{NUM_KEYPOINTS} (COCO-17 layout x,y,v per joint); convert the file first")
    if require_persons and not any(a.get("num_keypoints", 0) > 0 or _has_kps(a)
                                   for a in data["annotations"]):
        raise AnnotationError(f"{path}: no person annotations with keypoints; "
                              "point to a person_keypoints json with labelled people")
    return data


def _has_kps(ann: dict[str, Any]) -> bool:
    kps = ann.get("keypoints")
    if not kps:
        return False
    return any(v > 0 for v in kps[2::3])


def save_json(obj: Any, path: str | Path) -> Path:
    """Write json atomically (temp name + rename) so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(obj, f)
    tmp.replace(path)
    return path
