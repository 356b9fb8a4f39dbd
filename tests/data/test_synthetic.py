"""The built-in synthetic dataset: deterministic, valid COCO, honest visibility flags."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from posemum_deploy.data import synthetic_body
from posemum_deploy.data.coco import NUM_KEYPOINTS, load_coco_keypoints
from posemum_deploy.data.synthetic import generate_dataset
from posemum_deploy.errors import ConfigError

SIZE = (256, 320)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth")
    path = generate_dataset(out, 40, seed=0, image_size=SIZE, max_people=4)
    return path, json.loads(path.read_text())


def _keypoints(data: dict) -> np.ndarray:
    return np.array([a["keypoints"] for a in data["annotations"]]).reshape(-1, NUM_KEYPOINTS, 3)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_same_seed_is_byte_identical_and_seeds_differ(tmp_path: Path) -> None:
    a, b, c = (generate_dataset(tmp_path / n, 6, seed=s) for n, s in (("a", 3), ("b", 3), ("c", 4)))
    fa, fb, fc = _files(a.parent), _files(b.parent), _files(c.parent)
    assert fa == fb
    assert fa["annotations.json"] != fc["annotations.json"]
    assert all(fa[k] != fc[k] for k in fa if k.startswith("images/"))


def test_shorter_dataset_is_a_prefix(tmp_path: Path, dataset: tuple[Path, dict]) -> None:
    path, _ = dataset
    short = generate_dataset(tmp_path, 3, seed=0, image_size=SIZE)
    for name in ("000001.jpg", "000002.jpg", "000003.jpg"):
        assert (short.parent / "images" / name).read_bytes() == \
            (path.parent / "images" / name).read_bytes()


def test_json_is_valid_coco_with_images_on_disk(dataset: tuple[Path, dict]) -> None:
    path, data = dataset
    load_coco_keypoints(path)
    assert [im["id"] for im in data["images"]] == list(range(1, 41))
    assert data["categories"][0]["keypoints"][0] == "nose"
    for im in data["images"]:
        assert "/" not in im["file_name"]
        img = cv2.imread(str(path.parent / "images" / im["file_name"]))
        assert img.shape == (SIZE[0], SIZE[1], 3) == (im["height"], im["width"], 3)
    ids = [a["id"] for a in data["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    counts = np.bincount([a["image_id"] for a in data["annotations"]], minlength=41)[1:]
    assert counts.min() >= 1 and counts.max() <= 4 and len(set(counts)) > 1
    assert all(a["category_id"] == 1 and a["iscrowd"] == 0 for a in data["annotations"])


def test_visibility_flags_match_geometry(dataset: tuple[Path, dict]) -> None:
    _, data = dataset
    kps = _keypoints(data)
    h, w = SIZE
    hidden, shown = kps[kps[..., 2] == 0], kps[kps[..., 2] > 0]
    assert np.all(hidden[:, :2] == 0)
    assert np.all((shown[:, 0] >= 0) & (shown[:, 0] <= w - 1))
    assert np.all((shown[:, 1] >= 0) & (shown[:, 1] <= h - 1))
    assert set(np.unique(kps[..., 2])) == {0, 1, 2}  # occlusion and truncation both occur
    assert 0.02 < np.mean(kps[..., 2] == 1) < 0.4
    nums = np.array([a["num_keypoints"] for a in data["annotations"]])
    np.testing.assert_array_equal(nums, (kps[..., 2] > 0).sum(1))


def test_boxes_and_areas_are_tight(dataset: tuple[Path, dict]) -> None:
    _, data = dataset
    h, w = SIZE
    for ann, kp in zip(data["annotations"], _keypoints(data), strict=True):
        x, y, bw, bh = ann["bbox"]
        assert x >= 0 and y >= 0 and x + bw <= w and y + bh <= h and bw > 0 and bh > 0
        vis = kp[kp[:, 2] > 0]
        assert np.all((vis[:, 0] >= x - 2) & (vis[:, 0] <= x + bw + 2))
        assert np.all((vis[:, 1] >= y - 2) & (vis[:, 1] <= y + bh + 2))
        # A body covers part of its box, not all of it and not a sliver (OKS scale).
        assert 0.1 * bw * bh < ann["area"] < 0.95 * bw * bh


def test_ground_truth_as_results_scores_ap_one(dataset: tuple[Path, dict]) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    path, data = dataset
    results = [dict(image_id=a["image_id"], category_id=1, keypoints=a["keypoints"], score=1.0)
               for a in data["annotations"] if a["num_keypoints"] > 0]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        ev = COCOeval(gt, gt.loadRes(results), iouType="keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_front_facing_person_has_left_on_image_right() -> None:
    pose = synthetic_body.sample_pose(np.random.default_rng(0))
    pose.update(arm_a=np.full(2, 0.2), lean=0.0, side=0.0, head_yaw=0.0, head_pitch=0.0)
    pts, normals = synthetic_body.body_points(np.random.default_rng(0), pose)
    assert pts[5, 0] > pts[6, 0] and pts[11, 0] > pts[12, 0] and pts[1, 0] > pts[2, 0]
    assert normals[0, 2] > 0.9 and pts[0, 1] > pts[5, 1] > pts[11, 1]


def test_bad_arguments_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        generate_dataset(tmp_path, 0)
    with pytest.raises(ConfigError):
        generate_dataset(tmp_path, 1, image_size=(16, 16))


def test_cli_writes_dataset(tmp_path: Path) -> None:
    from posemum_deploy.cli.app import app

    out = tmp_path / "syn"
    res = CliRunner().invoke(app, ["synth", str(out), "--images", "5", "--seed", "1",
                                   "--size", "128x96", "--max-people", "2"])
    assert res.exit_code == 0, res.output
    data = load_coco_keypoints(out / "annotations.json")
    assert len(data["images"]) == 5 and data["images"][0]["width"] == 96
    assert "annotations.json" in res.output
    bad = CliRunner().invoke(app, ["synth", str(out), "--size", "big"])
    assert bad.exit_code != 0
