"""Box sources: matching files to COCO ids, limits, HOG, and a local torchvision detector."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from posemum_deploy.errors import ArtifactError, BackendUnavailableError, ConfigError
from posemum_deploy.label.boxes import BoxLimits, HogBoxes, parse_box_source
from posemum_deploy.label.detector import TorchvisionDetectorBoxes, build_detector


def _coco(tmp_path: Path) -> Path:
    coco = {"images": [{"id": 7, "file_name": "a/one.jpg", "width": 100, "height": 80},
                       {"id": 9, "file_name": "two.jpg", "width": 100, "height": 80}],
            "annotations": [
                {"id": 1, "image_id": 7, "category_id": 1, "bbox": [10, 10, 30, 50], "iscrowd": 0},
                {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 1},
                {"id": 3, "image_id": 9, "category_id": 1, "bbox": [50, 20, 80, 90], "iscrowd": 0}],
            "categories": [{"id": 1, "name": "person"}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco))
    return path


def test_limits_clip_sort_threshold_cap() -> None:
    limits = BoxLimits(score_threshold=0.3, max_people=2)
    boxes = np.array([[-5, -5, 20, 20], [10, 10, 5, 5], [90, 70, 50, 50], [0, 0, 0, 4]], float)
    out, scores = limits.apply(boxes, np.array([0.5, 0.9, 0.4, 1.0]), 100, 80)
    assert scores.tolist() == [0.9, 0.5]
    assert out.tolist() == [[10, 10, 5, 5], [0, 0, 15, 15]]


def _limits_of_one_image(limits: BoxLimits, boxes, scores, width, height):
    """The per-image rule written out plainly: clip, drop, sort by score (stable), cap."""
    x1, y1 = np.clip(boxes[:, 0], 0, width - 1), np.clip(boxes[:, 1], 0, height - 1)
    x2 = np.clip(boxes[:, 0] + boxes[:, 2], 0, width)
    y2 = np.clip(boxes[:, 1] + boxes[:, 3], 0, height)
    out = np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)
    ok = (out[:, 2] > 0) & (out[:, 3] > 0) & (scores >= limits.score_threshold)
    out, scores = out[ok], scores[ok]
    order = np.argsort(-scores, kind="stable")[: limits.max_people]
    return out[order], scores[order]


def test_limits_of_a_whole_chunk_equal_limits_image_by_image() -> None:
    """`apply_many` (the GPU labeler's one pass per chunk) must give every image exactly
    the boxes, scores and order of the per-image rule: clipping to its own size,
    threshold, ties kept in input order, the cap per image, images with none."""
    rng = np.random.default_rng(3)
    limits = BoxLimits(score_threshold=0.2, max_people=3)
    sizes = rng.integers(20, 200, (12, 2))
    counts = rng.integers(0, 7, 12)
    owner = np.repeat(np.arange(12), counts)
    boxes = np.concatenate([rng.uniform(-30, 220, (len(owner), 2)),
                            rng.uniform(-5, 90, (len(owner), 2))], axis=1)
    scores = rng.choice([0.1, 0.5, 0.5, 0.9, 0.3], len(owner))  # many ties
    got_boxes, got_scores, got_owner = limits.apply_many(boxes, scores, owner,
                                                         sizes[:, 0], sizes[:, 1])
    for i, (w, h) in enumerate(sizes):
        want_boxes, want_scores = _limits_of_one_image(limits, boxes[owner == i],
                                                       scores[owner == i], w, h)
        got_one = limits.apply(boxes[owner == i], scores[owner == i], w, h)
        np.testing.assert_array_equal(got_one[0], want_boxes)
        np.testing.assert_array_equal(got_boxes[got_owner == i], want_boxes)
        np.testing.assert_array_equal(got_scores[got_owner == i], want_scores)
    assert (np.diff(got_owner) >= 0).all()  # grouped by image, in order


def test_sized_boxes_equal_each_sources_boxes(tmp_path: Path) -> None:
    from posemum_deploy.label.boxes import sized_boxes

    images = [("a/one.jpg", 100, 80), ("three.jpg", 60, 50), ("two.jpg", 100, 80)]
    for source in (parse_box_source(f"gt:{_coco(tmp_path)}", max_people=1),
                   parse_box_source("full")):
        boxes, scores, counts = sized_boxes(source, images)
        assert counts.sum() == len(boxes) == len(scores)
        start = 0
        for (rel, w, h), n in zip(images, counts, strict=True):
            want = source.boxes(rel, np.zeros((h, w, 3), np.uint8))
            np.testing.assert_array_equal(boxes[start:start + n], want[0])
            np.testing.assert_array_equal(scores[start:start + n], want[1])
            start += n
    assert sized_boxes(parse_box_source("full"), [])[2].tolist() == []


def test_gt_boxes_match_relative_path_and_basename(tmp_path: Path) -> None:
    src = parse_box_source(f"gt:{_coco(tmp_path)}")
    image = np.zeros((80, 100, 3), np.uint8)
    boxes, scores = src.boxes("a/one.jpg", image)
    # SimpleBaseline's box cleaning (w - 1) as in evaluation; the crowd box is dropped
    assert boxes.tolist() == [[10, 10, 29, 49]] and scores.tolist() == [1.0]
    assert len(src.boxes("elsewhere/two.jpg", image)[0]) == 1  # unique basename
    assert len(src.boxes("three.jpg", image)[0]) == 0
    assert src.boxes("two.jpg", image)[0].tolist() == [[50, 20, 49, 59]]  # clipped


def test_det_boxes_by_ann_or_numeric_stem(tmp_path: Path) -> None:
    dets = [{"image_id": 9, "category_id": 1, "bbox": [1, 2, 30, 40], "score": 0.8},
            {"image_id": 9, "category_id": 1, "bbox": [5, 5, 30, 40], "score": 0.1}]
    det = tmp_path / "det.json"
    det.write_text(json.dumps(dets))
    image = np.zeros((80, 100, 3), np.uint8)
    by_ann = parse_box_source(f"det:{det}", score_threshold=0.5, ann=_coco(tmp_path))
    assert by_ann.boxes("two.jpg", image)[1].tolist() == [0.8]
    by_stem = parse_box_source(f"det:{det}")
    assert len(by_stem.boxes("sub/000000000009.jpg", image)[0]) == 2
    assert by_ann.identity() != by_stem.identity()


def test_a_box_file_of_another_set_is_refused(tmp_path: Path) -> None:
    """A folder none of whose files the box file knows: refused, naming the file; one
    known file (of a first 1,000) is enough, as an image without people is legitimate."""
    gt = parse_box_source(f"gt:{_coco(tmp_path)}")
    with pytest.raises(ConfigError, match=r"gt:.*gt\.json: none of the folder's first 2 images"):
        gt.check_covers(["x.jpg", "sub/y.jpg"])
    gt.check_covers(["x.jpg", "two.jpg"])
    det = tmp_path / "det.json"
    det.write_text(json.dumps([{"image_id": 9, "category_id": 1, "bbox": [1, 2, 3, 4],
                                "score": 0.8}]))
    by_stem = parse_box_source(f"det:{det}")
    with pytest.raises(ConfigError, match="none of the folder's first 1 images"):
        by_stem.check_covers(["000000000008.jpg"])  # numeric, but not an id of the file
    by_stem.check_covers(["000000000008.jpg", "000000000009.jpg"])


@pytest.mark.parametrize("spec, words", [("yolo", "unknown source"), ("gt:", "needs a file"),
                                         ("det", "needs a file")])
def test_bad_specs(spec: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_box_source(spec)


def test_full_image_box() -> None:
    src = parse_box_source("full")
    boxes, scores = src.boxes("x.jpg", np.zeros((30, 40, 3), np.uint8))
    assert boxes.tolist() == [[0, 0, 40, 30]] and scores.tolist() == [1.0]


def test_hog_boxes_or_clear_error() -> None:
    try:
        src = parse_box_source("hog", max_people=3)
    except BackendUnavailableError as e:
        assert "opencv-contrib" in str(e)
        pytest.skip(f"no HOG in this OpenCV build: {e}")
    src = pickle.loads(pickle.dumps(src))
    assert isinstance(src, HogBoxes)
    boxes, scores = src.boxes("x.jpg", np.full((300, 200, 3), 128, np.uint8))
    assert boxes.shape[1] == 4 and len(boxes) <= 3 and ((scores > 0) & (scores < 1)).all()


def test_torchvision_detector_from_local_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "ssdlite.pth"
    torch.save(build_detector("ssdlite320_mobilenet_v3_large").state_dict(), weights)
    src = parse_box_source(f"detector:{weights}", max_people=5)
    assert isinstance(src, TorchvisionDetectorBoxes) and src.arch == "ssdlite320_mobilenet_v3_large"
    src = pickle.loads(pickle.dumps(src))  # what Ray does to ship it to an actor
    image = np.random.default_rng(0).integers(0, 255, (64, 48, 3), dtype=np.uint8)
    boxes, scores = src.boxes("x.jpg", image)
    assert boxes.shape == (len(scores), 4) and len(scores) <= 5
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= 48 + 1e-6).all()
    assert src.identity()["arch"] == "ssdlite320_mobilenet_v3_large"


def test_detector_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_text("not torch")
    with pytest.raises(ArtifactError, match="not a loadable"):
        parse_box_source(f"detector:{bad}")
    other = tmp_path / "other.pth"
    torch.save({"w": torch.zeros(3)}, other)
    with pytest.raises(ArtifactError, match="not a torchvision detector"):
        parse_box_source(f"detector:{other}")
    torch.save({"backbone.w": torch.zeros(3)}, other)
    with pytest.raises(ArtifactError, match="not ssdlite"):
        parse_box_source(f"detector:ssdlite320_mobilenet_v3_large:{other}")
