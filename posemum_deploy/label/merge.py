"""`merge`: labeling shards → a training-ready COCO keypoint file (and a results file).

Pseudo-labels are only useful where the teacher was confident, so joints below
`min_joint_score` become unlabeled (v=0 at (0, 0), as COCO writes missing joints) and
people below `min_instance_score` or with fewer than `min_joints` confident joints are
dropped. Image ids are the image's position in the run's sorted image list (+1), so
they are the same whichever engine or machine labeled a shard.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from posemum_deploy.data.coco import person_category, save_json
from posemum_deploy.errors import ConfigError
from posemum_deploy.label.writer import iter_indexed, load_manifest

log = logging.getLogger(__name__)


@dataclass
class MergeFilter:
    """Which pseudo-labels are trusted enough to train on."""

    min_joint_score: float = 0.2
    min_instance_score: float = 0.0
    min_joints: int = 1


@dataclass
class MergeStats:
    images: int = 0
    persons_in: int = 0
    annotations: int = 0
    results: int = 0


def _annotation(person: dict[str, Any], image_id: int, ann_id: int,
                flt: MergeFilter) -> dict[str, Any] | None:
    """A COCO annotation for one labeled person, or None when the filter drops it."""
    xy = np.asarray(person["keypoints"], dtype=np.float64)
    scores = np.asarray(person["joint_scores"], dtype=np.float64)
    keep = scores >= flt.min_joint_score
    if person["score"] < flt.min_instance_score or keep.sum() < flt.min_joints:
        return None
    kps = np.zeros((len(xy), 3))
    kps[keep, :2] = xy[keep]
    kps[keep, 2] = 2
    x, y, w, h = person["box"]
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": [x, y, w, h],
            "area": float(w * h), "iscrowd": 0, "keypoints": np.round(kps, 2).reshape(-1).tolist(),
            "num_keypoints": int(keep.sum()), "score": person["score"]}


def _result(person: dict[str, Any], image_id: int) -> dict[str, Any]:
    """A COCO keypoint results entry (x, y, joint score per joint) for evaluation tools."""
    xy = np.asarray(person["keypoints"], dtype=np.float64)
    s = np.asarray(person["joint_scores"], dtype=np.float64)[:, None]
    return {"image_id": image_id, "category_id": 1,
            "keypoints": np.concatenate([xy, s], axis=1).reshape(-1).tolist(),
            "score": person["score"]}


def merge_labels(out_dir: str | Path, pseudo_out: str | Path, flt: MergeFilter | None = None,
                 results_out: str | Path | None = None) -> MergeStats:
    """Write the COCO pseudo-label file (and optionally a results list); returns counts."""
    flt = flt or MergeFilter()
    manifest = load_manifest(out_dir)
    if not manifest.get("complete"):
        log.warning("%s: the labeling run is not complete; merging its finished shards only "
                    "(finish it with `posemum label ... --resume`)", out_dir)
    if not manifest["shards"]:
        raise ConfigError(f"{out_dir}: no finished shards to merge; run `posemum label` first")
    images, anns, results = [], [], []
    stats = MergeStats()
    for position, record in iter_indexed(out_dir):
        if "error" in record:
            continue
        image_id = position + 1
        images.append({"id": image_id, "file_name": record["file"], "width": record["width"],
                       "height": record["height"]})
        for person in record["persons"]:
            stats.persons_in += 1
            ann = _annotation(person, image_id, len(anns) + 1, flt)
            if ann is not None:
                anns.append(ann)
            if results_out is not None and person["score"] >= flt.min_instance_score:
                results.append(_result(person, image_id))
    stats.images, stats.annotations, stats.results = len(images), len(anns), len(results)
    save_json({"info": {"description": "posemum pseudo-labels", "model": manifest["model"],
                        "filter": vars(flt)},
               "images": images, "annotations": anns, "categories": [person_category()]},
              pseudo_out)
    if results_out is not None:
        save_json(results, results_out)
    return stats
