"""Calibrated per-joint thresholds: the known answers of hand-made sets, the file's round
trip and refusals, and a real calibration run (tiny model, COCO images, GT boxes)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from posemum_deploy.errors import ConfigError
from posemum_deploy.label.calibrate import (
    calibrate,
    joint_thresholds,
    load_thresholds,
    lowest_threshold,
    pair_threshold,
)


def test_lowest_threshold_hand_made():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    correct = [1, 1, 1, 0, 1, 0]
    # precisions of the prefixes: 1, 1, 1, .75, .8, .667
    assert lowest_threshold(scores, correct, 0.8) == (0.5, 5, 0.8)
    assert lowest_threshold(scores, correct, 0.6) == (0.4, 6, pytest.approx(4 / 6))
    assert lowest_threshold(scores, correct, 1.0) == (0.7, 3, 1.0)
    t, kept, prec = lowest_threshold([0.5, 0.3], [0, 0], 0.5)
    assert np.isposinf(t) and kept == 0 and np.isnan(prec)
    # ties go together: keeping 0.6 keeps both of its joints
    assert lowest_threshold([0.9, 0.6, 0.6, 0.2], [1, 1, 0, 1], 0.8) == (0.9, 1, 1.0)


def test_joint_thresholds_hand_made():
    # joint 0: as above; joint 1: all right; joint 2: never right; invisible rows ignored
    scores = np.array([[0.9, 0.2, 0.9], [0.8, 0.3, 0.8], [0.7, 0.1, 0.7], [0.6, 0.5, 0.6],
                       [0.5, 0.4, 0.5], [0.4, 0.9, 0.4], [0.95, 0.05, 0.99]])
    correct = np.array([[1, 1, 0]] * 7, bool)
    correct[:6, 0] = [1, 1, 1, 0, 1, 0]
    visible = np.ones((7, 3), bool)
    visible[6] = False  # a wrong, high-scoring joint of an unlabeled truth does not count
    correct[6] = False
    agreement = np.array([[0.9, 0.5, 0.1]] * 7)
    agreement[:6, 0] = [0.2, 0.3, 0.4, 0.1, 0.9, 0.05]  # agreement ranks 0 best: 0.9 → right
    t = joint_thresholds(scores, agreement, correct, visible, ("a", "b", "c"), 0.8)
    assert t.score[0] == 0.5 and t.score[1] == 0.1 and np.isposinf(t.score[2])
    # joint 0 by agreement: sorted .9(1) .4(1) .3(1) .2(1) .1(0) .05(0): prefix 4 all right,
    # 5 → .8 exactly
    assert t.agreement[0] == 0.1
    assert t.stats[0]["visible"] == 6 and t.stats[0]["kept_share_score"] == round(5 / 6, 4)
    assert t.stats[1]["kept_share_score"] == 1.0 and t.stats[2]["kept_share_score"] == 0.0
    no_agreement = joint_thresholds(scores, None, correct, visible, ("a", "b", "c"), 0.8)
    assert np.isnan(no_agreement.agreement).all()
    with pytest.raises(ConfigError, match="--precision"):
        joint_thresholds(scores, None, correct, visible, ("a", "b", "c"), 1.5)


def test_lowest_threshold_at_a_confidence_bound():
    # ten right joints: measured precision 1 everywhere; the Wilson lower bound at z = 1 is
    # (1 + 1/2n - sqrt(1/4n²)) / (1 + 1/n) = n / (n + 1): 0.909 at 10 joints, 0.833 at 5
    scores = np.linspace(1.0, 0.1, 10)
    assert lowest_threshold(scores, np.ones(10), 0.9, z=1.0) == (pytest.approx(0.1), 10, 1.0)
    t, kept, _ = lowest_threshold(scores[:5], np.ones(5), 0.9, z=1.0)
    assert np.isposinf(t) and kept == 0  # five right joints do not show 90 %
    assert lowest_threshold(scores[:5], np.ones(5), 0.9) == (pytest.approx(0.6), 5, 1.0)


def test_pair_search_keeps_what_each_threshold_alone_would_drop():
    # one joint type: the score ranks the eight right joints first; the agreement ranks a
    # wrong one first, so no agreement threshold alone reaches precision 1
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    correct = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], bool)
    agreement = np.array([0.1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.95, 0.2])
    assert pair_threshold(scores, agreement, correct, 1.0) == (0.2, 0.1, 8)
    args = (scores[:, None], agreement[:, None], correct[:, None], np.ones((10, 1), bool), ("a",))
    each = joint_thresholds(*args, precision=1.0)
    assert each.score[0] == 0.2 and np.isposinf(each.agreement[0])
    assert each.stats[0]["kept_share_both"] == 0.0  # both must pass: nothing kept
    pair = joint_thresholds(*args, precision=1.0, search="pair")
    assert (pair.score[0], pair.agreement[0]) == (0.2, 0.1)
    assert pair.stats[0]["kept_share_both"] == 0.8 and pair.stats[0]["precision_both"] == 1.0
    assert pair_threshold(scores, agreement, np.zeros(10, bool), 0.5) == (np.inf, np.inf, 0)
    for bad, message in (({"search": "both"}, "--search both: use each "),
                         ({"z": -0.5}, "--confidence-z -0.5: standard errors")):
        with pytest.raises(ConfigError, match=message):
            joint_thresholds(*args, precision=1.0, **bad)


def test_thresholds_file_round_trip_and_refusals(tmp_path):
    scores = np.array([[0.9, 0.2], [0.1, 0.3]])
    t = joint_thresholds(scores, None, np.array([[1, 1], [0, 0]], bool), np.ones((2, 2), bool),
                         ("nose", "neck"), 0.9)
    back = load_thresholds(t.save(tmp_path / "t.json"))
    assert back.keypoint_names == ("nose", "neck") and (back.search, back.z) == ("each", 0.0)
    paired = joint_thresholds(scores, scores, np.array([[1, 1], [0, 0]], bool),
                              np.ones((2, 2), bool), ("nose", "neck"), 0.9, search="pair", z=1)
    loaded = load_thresholds(paired.save(tmp_path / "p.json"))
    assert (loaded.search, loaded.z) == ("pair", 1.0)
    np.testing.assert_array_equal(back.score, t.score)
    assert np.isnan(back.agreement).all()
    (tmp_path / "bad.json").write_text(json.dumps({"joints": []}))
    for bad in (tmp_path / "bad.json", tmp_path / "missing.json"):
        with pytest.raises(ConfigError, match=r"--thresholds .*posemum calibrate"):
            load_thresholds(bad)


def test_calibrate_runs_on_a_labeled_set(tiny_model, coco_mini, tmp_path):
    out = tmp_path / "thresholds.json"
    result = calibrate(tiny_model, coco_mini / "test_coco.json", coco_mini, out, tta="flip",
                       precision=0.5, backend="torch", batch_size=8, max_images=2)
    data = json.loads(out.read_text())
    assert data["keypoint_names"][0] == "nose" and len(data["joints"]) == 17
    assert data["source"]["tta"] == "flip" and data["source"]["persons"] > 0
    assert (tmp_path / "thresholds.png").stat().st_size > 10_000
    visible = sum(j["visible"] for j in data["joints"])
    assert visible > 0
    # every calibrated threshold keeps joints at the asked precision or better
    for j, entry in enumerate(data["joints"]):
        if entry["score_reached"] and entry["visible"]:
            assert entry["precision_score"] >= 0.5
            assert result.score[j] == pytest.approx(entry["score"], abs=1e-6)
    # the pair search keeps at least what either threshold alone keeps, at the precision
    paired = calibrate(tiny_model, coco_mini / "test_coco.json", coco_mini, tmp_path / "p.json",
                       tta="flip", precision=0.5, backend="torch", batch_size=8, max_images=2,
                       plot=None, search="pair")
    assert json.loads((tmp_path / "p.json").read_text())["search"] == "pair"
    for entry in paired.stats:
        assert entry["kept_share_both"] >= max(entry["kept_share_score"],
                                               entry["kept_share_agreement"])
        assert entry["precision_both"] is None or entry["precision_both"] >= 0.5
    assert sum(e["kept_share_both"] for e in paired.stats) > sum(
        e["kept_share_both"] for e in result.stats)


@pytest.mark.slow
def test_calibrate_label_merge_commands(tiny_model, coco_mini, tmp_path):
    """The commands end to end: calibrate writes thresholds, label --tta writes agreement,
    merge --thresholds/--min-agreement keeps only what passes them."""
    from typer.testing import CliRunner

    from posemum_deploy.cli.app import app

    runner, ann = CliRunner(), coco_mini / "test_coco.json"
    thr = tmp_path / "t.json"
    res = runner.invoke(app, ["calibrate", str(tiny_model), "--ann", str(ann), "--images",
                              str(coco_mini), "--out", str(thr), "--tta", "flip",
                              "--precision", "0.5", "--backend", "torch", "--max-images", "1"])
    assert res.exit_code == 0, res.output
    assert "left_ankle" in res.output and thr.is_file() and thr.with_suffix(".png").is_file()
    paired = tmp_path / "pair.json"
    for extra, code in ((["--search", "pair", "--confidence-z", "1"], 0), (["--search", "both"], 1)):
        res = runner.invoke(app, ["calibrate", str(tiny_model), "--ann", str(ann), "--images",
                                  str(coco_mini), "--out", str(paired), "--tta", "flip",
                                  "--backend", "torch", "--max-images", "1", *extra])
        assert res.exit_code == code, res.output
    assert "--search both" in str(res.exception or res.output)
    assert json.loads(paired.read_text())["confidence_z"] == 1.0
    res = runner.invoke(app, ["calibrate", str(tiny_model), "--ann", str(ann), "--images",
                              str(coco_mini), "--out", str(thr), "--tta", "scales=0"])
    assert res.exit_code != 0 and "--tta" in str(res.exception or res.output)
    out = tmp_path / "labels"
    res = runner.invoke(app, ["label", str(tiny_model), str(coco_mini), "--out", str(out),
                              "--boxes", f"gt:{ann}", "--tta", "flip", "--backend", "torch",
                              "--batch-size", "8"])
    assert res.exit_code == 0, res.output
    everything, strict = tmp_path / "all.json", tmp_path / "strict.json"
    for path, opts in ((everything, ["--min-joint-score", "0"]),
                       (strict, ["--thresholds", str(thr), "--min-agreement", "0.5"])):
        res = runner.invoke(app, ["merge", str(out), "--out", str(path), *opts])
        assert res.exit_code == 0, res.output
    loose = json.loads(everything.read_text())["annotations"]
    kept = json.loads(strict.read_text())["annotations"]
    assert sum(a["num_keypoints"] for a in kept) < sum(a["num_keypoints"] for a in loose)


def test_reliability_bins_take_negative_scores():
    """An undertrained teacher's heatmap maxima can be below 0: the plot's bins start at
    the lowest score instead of failing on a negative bin index."""
    from posemum_deploy.label.reliability_plot import binned_precision

    scores = np.array([-0.2, -0.1, 0.0, 0.4, 0.8])
    correct = np.array([False, False, True, True, True])
    mean, share, count = binned_precision(scores, correct, bins=5)  # bins 0.2 wide from -0.2
    assert list(count) == [2, 1, 1, 1] and list(share) == [0.0, 1.0, 1.0, 1.0]
    assert mean == pytest.approx([-0.15, 0.0, 0.4, 0.8])
    mean, share, count = binned_precision(np.array([0.1, 0.5, 1.0]),
                                          np.array([False, True, True]), bins=2)
    assert list(count) == [1, 2] and list(share) == [0.0, 1.0]  # [0, 0.5) and [0.5, 1]
