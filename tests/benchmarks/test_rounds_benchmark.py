"""benchmarks/rounds_synthetic.py: the seed draws the data, label quality is measured right."""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2] / "benchmarks"


def _bench(name: str = "rounds_synthetic"):
    """A benchmark script as a module; benchmarks/ goes on sys.path as when it is run
    (rounds_synthetic imports rounds_label_quality beside it)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _coco(kps, bbox):
    return {"images": [{"id": 1, "file_name": "000001.jpg", "width": 320, "height": 256}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": bbox,
                             "area": bbox[2] * bbox[3], "iscrowd": 0,
                             "num_keypoints": int((kps[:, 2] > 0).sum()),
                             "keypoints": kps.reshape(-1).tolist()}],
            "categories": [{"id": 1, "name": "person"}]}


def test_label_quality_against_hand_made_truth(tmp_path):
    bench = _bench("rounds_label_quality")
    truth = np.zeros((17, 3))
    truth[:, 0], truth[:, 1], truth[:, 2] = np.arange(17) * 3 + 100, 150, 2
    pseudo = truth.copy()
    pseudo[10:13, 0] += 40          # 3 joints far off: OKS < 0.5
    pseudo[13:, :] = 0              # 4 joints dropped by the filter
    (tmp_path / "t.json").write_text(json.dumps(_coco(truth, [90, 100, 80, 120])))
    (tmp_path / "p.json").write_text(json.dumps(_coco(pseudo, [90, 100, 79, 119])))  # clipped box
    q = bench.label_quality(str(tmp_path / "p.json"), tmp_path / "t.json")
    assert q["q-precision"] == pytest.approx(100 * 10 / 13)
    assert q["q-keep"] == pytest.approx(100 * 13 / 17)
    from posemum_deploy.data.coco import OKS_SIGMAS

    far = np.exp(-40.0 ** 2 / (2 * 80 * 120 * (2 * OKS_SIGMAS[10:13]) ** 2))  # truth's area
    assert far.max() < 0.5
    assert q["q-mean-oks"] == pytest.approx(100 * (10 + far.sum()) / 13)


def test_the_seed_draws_every_data_set(tmp_path):
    bench = _bench()
    args = argparse.Namespace(labeled_images=2, unlabeled_images=3, val_images=2)
    a, b = bench.seed_data(tmp_path, args, 0), bench.seed_data(tmp_path, args, 1)
    for name in ("labeled", "unlabeled", "val"):
        assert json.loads(a[name].read_text())["annotations"] != \
            json.loads(b[name].read_text())["annotations"]
    assert bench.seed_data(tmp_path, args, 0) == a  # generated once, then reused


def test_truth_at_kept_joints_keeps_true_positions_where_the_labels_kept_joints():
    bench = _bench("rounds_label_quality")
    truth = np.zeros((17, 3))
    truth[:, 0], truth[:, 1], truth[:, 2] = np.arange(17) * 3 + 100, 150, 2
    pseudo = truth.copy()
    pseudo[:, 0] += 5               # kept joints sit off the truth
    pseudo[13:, :] = 0              # 4 joints dropped by the filter
    t, p = _coco(truth, [90, 100, 80, 120]), _coco(pseudo, [90, 100, 79, 119])
    masked = bench.truth_at_kept_joints(t, p)
    k = np.asarray(masked["annotations"][0]["keypoints"]).reshape(-1, 3)
    np.testing.assert_array_equal(k[:13], truth[:13])    # true positions, not the pseudo ones
    assert (k[13:] == 0).all() and masked["annotations"][0]["num_keypoints"] == 13
    far = _coco(pseudo, [200, 10, 30, 30])                 # no person at the true box
    assert bench.truth_at_kept_joints(t, far)["annotations"] == []
