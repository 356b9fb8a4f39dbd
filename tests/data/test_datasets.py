import json

import numpy as np
import pytest
import torch

from posemum_deploy.data.coco import load_coco_keypoints
from posemum_deploy.data.codec import HeatmapCodec
from posemum_deploy.data.datasets import TopDownDataset, load_instances
from posemum_deploy.data.transforms import AffineAugment
from posemum_deploy.errors import AnnotationError

CODEC = HeatmapCodec((128, 96), (32, 24), 2.0)


def test_load_instances_in_annotation_order_with_limit(coco_mini):
    inst = load_instances(coco_mini / "test_coco.json", coco_mini)
    assert len(inst) == 12
    first = load_instances(coco_mini / "test_coco.json", coco_mini, limit=5)
    assert [i.ann_id for i in first] == [i.ann_id for i in inst[:5]]


def test_targets_peak_at_the_annotated_joints(coco_mini):
    inst = load_instances(coco_mini / "test_coco.json", coco_mini)
    ds = TopDownDataset(inst, CODEC)
    item = ds[0]
    assert item["image"].shape == (3, 128, 96) and item["image"].dtype == torch.uint8
    assert item["target"].shape == (17, 32, 24)
    vis = inst[0].keypoints[:, 2] > 0
    assert item["target_weight"].numpy()[vis].mean() > 0.8
    assert np.all(item["target_weight"].numpy()[~vis] == 0)


def test_augmentation_is_deterministic_per_seed_epoch_index(coco_mini):
    inst = load_instances(coco_mini / "test_coco.json", coco_mini)
    a = TopDownDataset(inst, CODEC, AffineAugment(), seed=1)
    b = TopDownDataset(inst, CODEC, AffineAugment(), seed=1)
    assert torch.equal(a[3]["image"], b[3]["image"])
    b.set_epoch(1)
    assert not torch.equal(a[3]["image"], b[3]["image"])


def test_bad_image_is_skipped_and_counted(coco_mini, tmp_path):
    data = json.loads((coco_mini / "test_coco.json").read_text())
    for im in data["images"]:
        src = coco_mini / im["file_name"]
        (tmp_path / im["file_name"]).write_bytes(src.read_bytes())
    bad = data["images"][0]["file_name"]
    (tmp_path / bad).write_bytes(b"garbage")
    inst = load_instances(coco_mini / "test_coco.json", tmp_path)
    ds = TopDownDataset(inst, CODEC)
    items = [ds[i] for i in range(len(ds))]
    assert len(items) == len(ds) and len(ds.skipped) >= 1


def test_annotation_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(AnnotationError, match="empty.json: no person annotations"):
        load_coco_keypoints(empty)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"images": [{"id": 1}], "annotations": [
        {"id": 1, "image_id": 1, "keypoints": [1, 2, 2] * 13, "num_keypoints": 13}]}))
    with pytest.raises(AnnotationError, match="wrong.json: annotation 1 has 13 keypoints"):
        load_coco_keypoints(wrong)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(AnnotationError, match="broken.json: not valid json"):
        load_coco_keypoints(broken)


def test_detection_boxes_of_a_folder_keep_image_id_zero(tmp_path):
    """An image named 000000.jpg is image 0: its boxes and its crops both say so."""
    import cv2

    from posemum_deploy.data.datasets import load_unlabeled_instances

    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("000000.jpg", "000007.jpg"):
        cv2.imwrite(str(folder / name), np.full((40, 30, 3), 128, np.uint8))
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([{"image_id": i, "category_id": 1, "bbox": [2, 3, 20, 30],
                                 "score": 0.9} for i in (0, 7)]))
    instances = load_unlabeled_instances(folder, boxes=str(dets))
    assert sorted(i.image_id for i in instances) == [0, 7]
    assert all(i.box == (2.0, 3.0, 20.0, 30.0) for i in instances)
