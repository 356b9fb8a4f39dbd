"""evaluate_results reproduces pycocotools exactly and rejects bad inputs in one line."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from testdata import NO_SHARED_DATA
from testdata import SHARED_DATA as SHARED

from posemum_deploy.errors import AnnotationError
from posemum_deploy.evaluation.coco_eval import STAT_NAMES, evaluate_results

GOLDEN = SHARED / "eval_golden" / "faster_coco_eval_keypoints"
COCO_MINI = SHARED / "coco_mini" / "test_coco.json"

pytestmark = pytest.mark.skipif(not SHARED.is_dir(),
                                reason=NO_SHARED_DATA)


def gt_as_results(gt: dict) -> list[dict]:
    """GT people with keypoints, written as score-1.0 predictions."""
    return [{"image_id": a["image_id"], "category_id": a["category_id"],
             "keypoints": a["keypoints"], "score": 1.0}
            for a in gt["annotations"] if a["num_keypoints"] > 0]


def test_golden_stats_match_pycocotools() -> None:
    expected = json.loads((GOLDEN / "expected.json").read_text())["stats"]
    stats = evaluate_results(GOLDEN / "gt_dataset.json", str(GOLDEN / "dt_dataset.json"))
    assert list(stats) == list(STAT_NAMES)
    assert [stats[n] for n in STAT_NAMES] == pytest.approx(expected, abs=1e-9, rel=0)


def test_golden_from_loaded_objects_does_not_mutate_results() -> None:
    gt = json.loads((GOLDEN / "gt_dataset.json").read_text())
    dets = json.loads((GOLDEN / "dt_dataset.json").read_text())
    before = json.dumps(dets)
    expected = json.loads((GOLDEN / "expected.json").read_text())["stats"]
    stats = evaluate_results(gt, dets)
    assert [stats[n] for n in STAT_NAMES] == pytest.approx(expected, abs=1e-9, rel=0)
    assert json.dumps(dets) == before


def test_gt_as_results_scores_one(capsys: pytest.CaptureFixture[str]) -> None:
    gt = json.loads(COCO_MINI.read_text())
    stats = evaluate_results(COCO_MINI, gt_as_results(gt))
    assert stats == {n: pytest.approx(1.0, abs=1e-12) for n in STAT_NAMES}
    assert capsys.readouterr().out == ""  # pycocotools' prints are silenced


def test_empty_results_score_zero_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        stats = evaluate_results(COCO_MINI, [])
    assert stats == dict.fromkeys(STAT_NAMES, 0.0)
    assert "no keypoint results" in caplog.text


def _write(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj))
    return path


def _bad_results(tmp_path: Path, case: str) -> Path:
    """A results file broken in one way; the GT is coco_mini."""
    good = gt_as_results(json.loads(COCO_MINI.read_text()))
    name = tmp_path / f"bad_{case}.json"
    if case == "missing":
        return name
    if case == "invalid_json":
        name.write_text('[{"image_id": 1,')
        return name
    if case == "not_list":
        return _write(name, {"annotations": good})
    if case == "kpt_count":
        return _write(name, [dict(good[0], keypoints=good[0]["keypoints"][:42])])
    if case == "missing_key":
        return _write(name, [{k: v for k, v in good[0].items() if k != "score"}])
    if case == "unknown_image":
        return _write(name, [dict(good[0], image_id=123456789)])
    if case == "category":
        return _write(name, [dict(good[0], category_id=0)])
    raise AssertionError(case)


@pytest.mark.parametrize("case, words", [
    ("missing", "not found"), ("invalid_json", "not valid json"),
    ("not_list", "must be a json list"), ("kpt_count", "42 keypoint numbers"),
    ("missing_key", "lacks score"), ("unknown_image", "123456789"),
    ("category", "category_id 0"),
])
def test_bad_results_name_the_file(tmp_path: Path, case: str, words: str) -> None:
    path = _bad_results(tmp_path, case)
    with pytest.raises(AnnotationError) as info:
        evaluate_results(COCO_MINI, path)
    message = str(info.value)
    assert path.name in message and words in message and "\n" not in message


def _bad_gt(tmp_path: Path, case: str) -> Path:
    gt = json.loads(COCO_MINI.read_text())
    name = tmp_path / f"gt_{case}.json"
    if case == "missing":
        return name
    if case == "invalid_json":
        name.write_text("{")
        return name
    if case == "no_persons":
        for a in gt["annotations"]:
            a["num_keypoints"], a["keypoints"] = 0, [0] * 51
    elif case == "kpt_count":
        gt["annotations"][0]["keypoints"] = gt["annotations"][0]["keypoints"][:39]
    elif case == "no_area":
        del gt["annotations"][0]["area"]
    elif case == "results_list":
        return _write(name, gt_as_results(gt))
    return _write(name, gt)


@pytest.mark.parametrize("case, words", [
    ("missing", "not found"), ("invalid_json", "not valid json"),
    ("no_persons", "no person annotations"), ("kpt_count", "13 keypoints"),
    ("no_area", "lacks area"), ("results_list", "not a COCO annotation file"),
])
def test_bad_gt_names_the_file(tmp_path: Path, case: str, words: str) -> None:
    path = _bad_gt(tmp_path, case)
    with pytest.raises(AnnotationError) as info:
        evaluate_results(path, gt_as_results(json.loads(COCO_MINI.read_text())))
    message = str(info.value)
    assert path.name in message and words in message and "\n" not in message
