"""Calibration crops from real images and the batcher every calibrator wraps."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from posemum_deploy.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_numpy
from posemum_deploy.errors import ConfigError
from posemum_deploy.export.calibration import CropBatcher, calibration_crops
from posemum_deploy.export.quantize import CropReader


def test_crops_from_coco_boxes_and_from_a_folder(coco_mini_dir: Path) -> None:
    boxes = calibration_crops(coco_mini_dir / "test_coco.json", (64, 48))
    assert boxes.shape == (12, 64, 48, 3) and boxes.dtype == np.uint8 and boxes.std() > 10
    whole = calibration_crops(coco_mini_dir, (64, 48))
    assert whole.shape == (4, 64, 48, 3)
    assert len(calibration_crops(coco_mini_dir / "test_coco.json", (64, 48), limit=5)) == 5


def test_bad_calibration_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--calib"):
        calibration_crops(tmp_path / "missing", (64, 48))
    with pytest.raises(ConfigError, match="no images"):
        calibration_crops(tmp_path, (64, 48))


def test_batcher_fixed_batches_over_real_crops(coco_mini_dir: Path) -> None:
    crops = calibration_crops(coco_mini_dir / "test_coco.json", (64, 48))
    batcher = CropBatcher(crops, 5, IMAGENET_MEAN, IMAGENET_STD)
    batches = list(batcher)
    assert len(batcher) == 2 and [b.shape for b in batches] == [(5, 3, 64, 48)] * 2
    assert batcher.next_batch() is None  # exhausted until reset (TensorRT asks once more)
    np.testing.assert_allclose(batches[1], normalize_numpy(crops[5:10], IMAGENET_MEAN, IMAGENET_STD))
    batcher.reset()
    assert np.array_equal(batcher.next_batch(), batches[0])
    small = CropBatcher(crops[:3], 8, IMAGENET_MEAN, IMAGENET_STD)  # fewer crops than a batch
    assert len(small) == 1 and small.shape == (8, 3, 64, 48)
    with pytest.raises(ConfigError):
        CropBatcher(crops[:0], 4, IMAGENET_MEAN, IMAGENET_STD)


def test_ort_reader_feeds_named_input_then_none(coco_mini_dir: Path) -> None:
    crops = calibration_crops(coco_mini_dir / "test_coco.json", (64, 48))
    reader = CropReader(CropBatcher(crops, 6, IMAGENET_MEAN, IMAGENET_STD))
    first = reader.get_next()
    assert list(first) == ["input"] and first["input"].shape == (6, 3, 64, 48)
    assert reader.get_next() is not None and reader.get_next() is None
    reader.rewind()
    assert np.array_equal(reader.get_next()["input"], first["input"])
