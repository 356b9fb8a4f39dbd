"""YOLO-pose datasets: COCO → YOLO → COCO on real COCO images, odd inputs, bad lines."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from posemum_deploy.data.yolo import write_yolo_dataset, yolo_to_coco
from posemum_deploy.errors import AnnotationError


def test_round_trip_on_coco_mini(coco_mini: Path, tmp_path: Path) -> None:
    coco = json.loads((coco_mini / "test_coco.json").read_text())
    data = write_yolo_dataset(coco, coco_mini, tmp_path / "yolo", "train")
    spec = yaml.safe_load(data.read_text())
    assert spec["kpt_shape"] == [17, 3] and spec["train"] == "images/train"
    assert spec["flip_idx"][:3] == [0, 2, 1] and spec["names"] == {0: "person"}
    first = tmp_path / "yolo" / "images" / "train" / coco["images"][0]["file_name"]
    assert first.is_symlink() and first.resolve() == (coco_mini / first.name).resolve()

    back, root = yolo_to_coco(data, "train")
    assert root == tmp_path / "yolo" / "images" / "train"
    ids = {im["file_name"]: im["id"] for im in back["images"]}
    orig_images = {im["id"]: im for im in coco["images"]}
    assert set(ids) == {im["file_name"] for im in coco["images"]}
    for im in back["images"]:
        ref = next(i for i in coco["images"] if i["file_name"] == im["file_name"])
        assert (im["width"], im["height"]) == (ref["width"], ref["height"])
    got: dict[str, list] = {}
    for ann in back["annotations"]:
        name = next(f for f, i in ids.items() if i == ann["image_id"])
        got.setdefault(name, []).append(ann)
    compared = 0
    for ann in coco["annotations"]:
        if ann.get("iscrowd"):
            continue
        name = orig_images[ann["image_id"]]["file_name"]
        mine = got[name].pop(0)  # same order within an image
        want = np.asarray(ann["keypoints"], dtype=float).reshape(17, 3)
        have = np.asarray(mine["keypoints"], dtype=float).reshape(17, 3)
        np.testing.assert_array_equal(have[:, 2], want[:, 2])  # every visibility flag
        assert np.abs(have[:, :2] - want[:, :2]).max() <= 0.5
        np.testing.assert_allclose(mine["bbox"], ann["bbox"], atol=0.5)
        assert mine["iscrowd"] == 0 and mine["num_keypoints"] == ann["num_keypoints"]
        assert mine["area"] == pytest.approx(mine["bbox"][2] * mine["bbox"][3], abs=1e-2)
        compared += 1
    assert compared >= 10 and not any(got.values())


def dataset(tmp_path: Path, lines: list[str], shape: tuple[int, ...] = (77, 101)) -> Path:
    """A one-image YOLO-pose dataset with the given label lines (grayscale, odd-sized)."""
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "labels" / "val").mkdir(parents=True)
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "images" / "val" / "a.png"), img)
    (tmp_path / "labels" / "val" / "a.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(
        {"path": str(tmp_path), "train": "images/val", "val": "images/val",
         "kpt_shape": [17, 3], "flip_idx": list(range(17)), "names": {0: "person"}}))
    return tmp_path / "data.yaml"


def test_grayscale_odd_size_and_unlabeled_line(tmp_path: Path) -> None:
    kps = ["0.5 0.25 2"] + ["0 0 0"] * 16
    data = dataset(tmp_path, ["0 0.5 0.5 0.4 0.6 " + " ".join(kps),
                              "0 0.2 0.3 0.1 0.2 " + " ".join(["0 0 0"] * 17)])
    coco, root = yolo_to_coco(data, "val")
    assert root == tmp_path / "images" / "val"
    assert coco["images"] == [{"id": 1, "file_name": "a.png", "width": 101, "height": 77}]
    a, b = coco["annotations"]
    assert a["keypoints"][:3] == [50.5, 19.25, 2] and a["num_keypoints"] == 1
    assert a["bbox"] == [pytest.approx(30.3), pytest.approx(15.4), pytest.approx(40.4),
                         pytest.approx(46.2)]
    assert b["num_keypoints"] == 0 and b["keypoints"] == [0.0, 0.0, 0] * 17 and b["iscrowd"] == 0


@pytest.mark.parametrize(("line", "message"), [
    ("0 0.5 0.5 0.4", r"a\.txt:2: 4 fields, expected 56"),
    ("0 0.5 0.5 0.4 1.5 " + " ".join(["0 0 0"] * 17), r"a\.txt:2: value 1\.5 outside \[0, 1\]"),
    ("0 0.5 0.5 0.4 0.5 " + " ".join(["0.1 0.1 3"] * 17), r"a\.txt:2: visibility must be"),
])
def test_malformed_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    good = "0 0.5 0.5 0.4 0.6 " + " ".join(["0 0 0"] * 17)
    data = dataset(tmp_path, [good, line])
    with pytest.raises(AnnotationError, match=message) as info:
        yolo_to_coco(data, "val")
    assert "\n" not in str(info.value)


def test_keypoints_outside_image_written_unlabeled(tmp_path: Path) -> None:
    """Pseudo-labels may put a joint past the border: Ultralytics refuses such lines, so
    the joint is written unlabeled and the box clipped to the image."""
    cv2.imwrite(str(tmp_path / "b.jpg"), np.zeros((40, 60, 3), np.uint8))
    kps = [70.0, 10.0, 2, 30.0, 20.0, 2] + [0.0] * 45
    coco = {"images": [{"id": 1, "file_name": "b.jpg", "width": 60, "height": 40}],
            "annotations": [{"id": 1, "image_id": 1, "bbox": [-5, 0, 70, 40], "keypoints": kps,
                             "num_keypoints": 2, "iscrowd": 0, "category_id": 1}]}
    data = write_yolo_dataset(coco, tmp_path, tmp_path / "y")
    back, _ = yolo_to_coco(data, "train")
    (ann,) = back["annotations"]
    assert ann["keypoints"][:6] == [0.0, 0.0, 0, 30.0, 20.0, 2]
    assert ann["bbox"] == [0.0, 0.0, 60.0, 40.0]
