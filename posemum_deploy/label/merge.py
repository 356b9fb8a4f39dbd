"""`merge`: labeling shards → a training-ready COCO keypoint file (and a results file).

Pseudo-labels are only useful where the teacher was confident, so joints below
`min_joint_score` become unlabeled (v=0 at (0, 0), as COCO writes missing joints) and
people below `min_instance_score` or with fewer than `min_joints` confident joints are
dropped. Image ids are the image's position in the run's sorted image list (+1), so
they are the same whichever engine or machine labeled a shard.

Labels made with TTA or an ensemble also carry each joint's agreement across views
(`joint_agreement`): `min_agreement` drops joints the views disagree on, and per-joint
`thresholds` (from `posemum calibrate`) replace `min_joint_score` / `min_agreement`
joint type by joint type.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from posemum_deploy.data.coco import person_category
from posemum_deploy.errors import ConfigError
from posemum_deploy.label.calibrate import JointThresholds
from posemum_deploy.label.writer import iter_indexed, load_manifest

log = logging.getLogger(__name__)


@dataclass
class MergeFilter:
    """Which pseudo-labels are trusted enough to train on."""

    min_joint_score: float = 0.2
    min_instance_score: float = 0.0
    min_joints: int = 1
    min_agreement: float = 0.0
    thresholds: JointThresholds | None = None  # per joint type; replaces the two above

    def limits(self, num_joints: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-joint (score, agreement) minimums for labels of `num_joints` joints."""
        score = np.full(num_joints, float(self.min_joint_score))
        agreement = np.full(num_joints, float(self.min_agreement))
        t = self.thresholds
        if t is not None:
            if len(t.keypoint_names) != num_joints:
                raise ConfigError(
                    f"--thresholds: the file is for {len(t.keypoint_names)} keypoints "
                    f"({', '.join(t.keypoint_names[:3])}, ...), these labels have {num_joints}; "
                    "calibrate the labeling model with `posemum calibrate` for this set")
            score = np.where(np.isnan(t.score), score, t.score)
            agreement = np.where(np.isnan(t.agreement), agreement, t.agreement)
        return score, agreement

    def describe(self) -> dict[str, Any]:
        """The filter as json for the output's info block."""
        out = {k: v for k, v in vars(self).items() if k != "thresholds"}
        if self.thresholds is not None:
            out["thresholds"] = self.thresholds.to_json()
        return out


@dataclass
class MergeStats:
    images: int = 0
    persons_in: int = 0
    annotations: int = 0
    results: int = 0


def _annotation(person: dict[str, Any], image_id: int, ann_id: int,
                flt: MergeFilter, limits: tuple[np.ndarray, np.ndarray]) -> dict[str, Any] | None:
    """A COCO annotation for one labeled person, or None when the filter drops it."""
    xy = np.asarray(person["keypoints"], dtype=np.float64)
    scores = np.asarray(person["joint_scores"], dtype=np.float64)
    keep = scores >= limits[0]
    if (limits[1] > 0).any():
        if "joint_agreement" not in person:
            raise ConfigError("--min-agreement / --thresholds with agreement: these labels "
                              "have no joint_agreement; label with --tta or several --model, "
                              "or filter on the score only")
        keep &= np.asarray(person["joint_agreement"], dtype=np.float64) >= limits[1]
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


class _JsonArrayFile:
    """One JSON array written element by element to a temp file: merge never holds a
    million images' records, annotations or results in memory at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path.open("w", encoding="utf-8")
        self.count = 0

    def add(self, obj: Any) -> None:
        self.file.write(("," if self.count else "") + json.dumps(obj))
        self.count += 1

    def write_into(self, out: IO[str]) -> None:
        self.file.close()
        out.write("[")
        with self.path.open(encoding="utf-8") as f:
            shutil.copyfileobj(f, out, 1 << 20)
        out.write("]")


def _write_json(path: Path, value: dict[str, Any] | _JsonArrayFile) -> None:
    """`value` (an object whose values may be array files, or one array file) as json,
    atomically: a temp name, then a rename."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        if isinstance(value, _JsonArrayFile):
            value.write_into(out)
        else:
            out.write("{")
            for i, (key, item) in enumerate(value.items()):
                out.write(("," if i else "") + json.dumps(key) + ":")
                if isinstance(item, _JsonArrayFile):
                    item.write_into(out)
                else:
                    out.write(json.dumps(item))
            out.write("}")
    tmp.replace(path)


def merge_labels(out_dir: str | Path, pseudo_out: str | Path, flt: MergeFilter | None = None,
                 results_out: str | Path | None = None,
                 progress: Callable[[int, int], None] | None = None) -> MergeStats:
    """Write the COCO pseudo-label file (and optionally a results list); returns counts.
    `progress(records_read, records_total)` is called every 1,000 records and at the end."""
    flt = flt or MergeFilter()
    manifest = load_manifest(out_dir)
    if not manifest.get("complete"):
        log.warning("%s: the labeling run is not complete; merging its finished shards only "
                    "(finish it with `posemum label ... --resume`)", out_dir)
    if not manifest["shards"]:
        raise ConfigError(f"{out_dir}: no finished shards to merge; run `posemum label` first")
    pseudo_out = Path(pseudo_out)
    pseudo_out.parent.mkdir(parents=True, exist_ok=True)
    stats = MergeStats()
    with tempfile.TemporaryDirectory(dir=pseudo_out.parent, prefix=".merge-") as tmp:
        images, anns = _JsonArrayFile(Path(tmp) / "images"), _JsonArrayFile(Path(tmp) / "anns")
        results = _JsonArrayFile(Path(tmp) / "results") if results_out is not None else None
        total = sum(entry["images"] for entry in manifest["shards"].values())
        limits: tuple[np.ndarray, np.ndarray] | None = None
        for read, (position, record) in enumerate(iter_indexed(out_dir), 1):
            if progress and read % 1000 == 0:
                progress(read, total)
            if "error" in record:
                continue
            image_id = position + 1
            images.add({"id": image_id, "file_name": record["file"], "width": record["width"],
                        "height": record["height"]})
            for person in record["persons"]:
                stats.persons_in += 1
                if limits is None:
                    limits = flt.limits(len(person["joint_scores"]))
                ann = _annotation(person, image_id, anns.count + 1, flt, limits)
                if ann is not None:
                    anns.add(ann)
                if results is not None and person["score"] >= flt.min_instance_score:
                    results.add(_result(person, image_id))
        if progress:
            progress(total, total)
        stats.images, stats.annotations = images.count, anns.count
        _write_json(pseudo_out, {"info": {"description": "posemum pseudo-labels",
                                          "model": manifest["model"], "filter": flt.describe()},
                                 "images": images, "annotations": anns,
                                 "categories": [person_category()]})
        if results is not None and results_out is not None:  # one is set with the other
            stats.results = results.count
            Path(results_out).parent.mkdir(parents=True, exist_ok=True)
            _write_json(Path(results_out), results)
    return stats
