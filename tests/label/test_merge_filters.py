"""merge filters on reliability: --min-agreement and per-joint --thresholds files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from posemum_deploy.data.coco import KEYPOINT_NAMES
from posemum_deploy.errors import ConfigError
from posemum_deploy.label.calibrate import JointThresholds, load_thresholds
from posemum_deploy.label.merge import MergeFilter, merge_labels
from posemum_deploy.label.writer import ShardStore

IDENTITY = {"model": {"sha256": "x"}, "settings": {}, "images": {"count": 2, "shard_size": 2}}


def _run(tmp_path: Path, agreement: bool = True) -> Path:
    person = {"box": [0, 0, 30, 40], "box_score": 1.0, "score": 0.9, "area": 1500.0,
              "keypoints": [[float(j), 1.0] for j in range(17)],
              "joint_scores": [0.9] * 8 + [0.3] * 9}
    if agreement:
        person["joint_agreement"] = [0.95] * 4 + [0.4] * 13
    ShardStore(tmp_path / "out", IDENTITY, resume=False).write_shard(
        0, [{"file": "a.jpg", "width": 64, "height": 48, "persons": [person]},
            {"file": "b.jpg", "width": 64, "height": 48, "persons": []}])
    return tmp_path / "out"


def _kept(path: Path) -> list[int]:
    (ann,) = json.loads(path.read_text())["annotations"]
    return [j for j in range(17) if ann["keypoints"][3 * j + 2] > 0]


def test_min_agreement_drops_joints_the_views_disagree_on(tmp_path):
    out = _run(tmp_path)
    merge_labels(out, tmp_path / "p.json", MergeFilter(0.2, min_agreement=0.5))
    assert _kept(tmp_path / "p.json") == [0, 1, 2, 3]
    merge_labels(out, tmp_path / "q.json", MergeFilter(0.5, min_agreement=0.0))
    assert _kept(tmp_path / "q.json") == list(range(8))
    info = json.loads((tmp_path / "p.json").read_text())["info"]["filter"]
    assert info["min_agreement"] == 0.5


def test_thresholds_file_sets_each_joint(tmp_path):
    out = _run(tmp_path)
    score = np.full(17, np.nan)
    score[:3] = 0.95           # joints 0-2 need more than their 0.9
    score[10] = 0.25           # joint 10 (0.3) passes its own lower threshold
    score[16] = np.inf         # never reached: never kept
    agreement = np.full(17, np.nan)
    agreement[3] = 0.99        # joint 3's 0.95 is not enough
    t = JointThresholds(KEYPOINT_NAMES, score, agreement)
    path = t.save(tmp_path / "t.json")
    merge_labels(out, tmp_path / "p.json", MergeFilter(0.5, thresholds=load_thresholds(path)))
    # unlisted joints fall back to --min-joint-score 0.5: 4-7 kept, 8+ dropped but 10
    assert _kept(tmp_path / "p.json") == [4, 5, 6, 7, 10]
    info = json.loads((tmp_path / "p.json").read_text())["info"]["filter"]
    assert info["thresholds"]["keypoint_names"][0] == "nose"


def test_agreement_filters_need_agreement_and_the_same_keypoints(tmp_path):
    out = _run(tmp_path, agreement=False)
    with pytest.raises(ConfigError, match="--min-agreement.*no joint_agreement.*--tta"):
        merge_labels(out, tmp_path / "p.json", MergeFilter(min_agreement=0.3))
    five = JointThresholds(tuple("abcde"), np.full(5, 0.1), np.full(5, np.nan))
    with pytest.raises(ConfigError, match="--thresholds: the file is for 5 keypoints.*have 17"):
        merge_labels(out, tmp_path / "p.json", MergeFilter(thresholds=five))
    merge_labels(out, tmp_path / "p.json", MergeFilter(0.5))  # score-only still works
    assert _kept(tmp_path / "p.json") == list(range(8))
