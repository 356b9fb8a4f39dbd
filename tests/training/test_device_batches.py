"""data.decode: device — workers hand over file bytes, crops are cut where the model runs.

On the CPU the same code path runs with torchvision's CPU JPEG decoder, so the geometry,
targets and bad-file handling are tested here; the GPU speed is gpu_bench's job.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from posemum_deploy.data.codec import HeatmapCodec
from posemum_deploy.data.datasets import TopDownDataset, UnreadableImages, load_instances
from posemum_deploy.data.transforms import AffineAugment
from posemum_deploy.errors import ConfigError
from posemum_deploy.training.device_batches import (
    DeviceCropBatches,
    batch_crops,
    collate_encoded,
    encoded_items,
)

CODEC = HeatmapCodec((128, 96), (32, 24), 2.0)
CPU = torch.device("cpu")


def _pair(instances, **kw):
    host = TopDownDataset(instances, CODEC, AffineAugment(), seed=3, **kw)
    device = TopDownDataset(instances, CODEC, AffineAugment(), seed=3, encoded=True, **kw)
    return host, device


def _batches(host, device, n, on=CPU):
    a = next(iter(DataLoader(host, batch_size=n)))
    b = next(iter(DataLoader(device, batch_size=n, collate_fn=collate_encoded)))
    b = DeviceCropBatches(on, CODEC.input_hw)(b)
    return a, {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in b.items()}


DEVICES = [CPU, pytest.param(torch.device("cuda"), marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (nvjpeg decode)")])]


@pytest.mark.parametrize("on", DEVICES)
def test_device_crops_match_the_workers_crops(coco_mini: Path, tmp_path: Path,
                                              on: torch.device) -> None:
    """Same augmentation draw, same geometry: crops agree up to interpolation rounding
    (real COCO photos, rotation, scale and flip), targets and weights exactly; a PNG goes
    through cv2 and is uploaded. On a GPU the JPEGs go through nvjpeg."""
    images = tmp_path / "images"
    shutil.copytree(coco_mini, images)
    instances = load_instances(coco_mini / "test_coco.json", images)
    png = instances[0].image_path
    cv2.imwrite(str(png.with_suffix(".png")), cv2.imread(str(png)))
    png.with_suffix(".png").rename(png)  # PNG bytes under the .jpg name
    host, device = _pair(instances)
    a, b = _batches(host, device, len(instances), on)
    assert b["image"].shape == a["image"].shape and b["image"].dtype == torch.float32
    diff = (b["image"] - a["image"].float()).abs()
    assert diff.mean() < 0.5 and torch.quantile(diff.flatten()[::7], 0.99) <= 2.5 and diff.max() <= 8
    torch.testing.assert_close(b["target"], a["target"])
    torch.testing.assert_close(b["target_weight"], a["target_weight"])
    assert b["index"].tolist() == a["index"].tolist()
    assert (b["unreadable"] == -1).all() and "encoded" not in b and "inverse" not in b


def test_an_undecodable_file_is_a_zero_weight_black_crop_and_reported(coco_mini: Path,
                                                                       tmp_path: Path) -> None:
    """Bytes that pass the worker's check (JPEG markers at both ends) but decode nowhere:
    the crop is black, its loss weight 0, and UnreadableImages lists the image; a file
    the check refuses (truncated) is skipped in the worker as on the host path."""
    images = tmp_path / "images"
    shutil.copytree(coco_mini, images)
    instances = load_instances(coco_mini / "test_coco.json", images)
    fake, cut = instances[0].image_path, instances[-1].image_path
    fake.write_bytes(b"\xff\xd8" + b"\x00" * 500 + b"\xff\xd9")
    cut.write_bytes(cut.read_bytes()[:2000])
    _, device = _pair(instances)
    batch = DeviceCropBatches(CPU, CODEC.input_hw)(next(iter(
        DataLoader(device, batch_size=len(instances), collate_fn=collate_encoded))))
    bad = [k for k, i in enumerate(batch["index"].tolist()) if instances[i].image_path == fake]
    assert bad and all(batch["image"][k].abs().sum() == 0 for k in bad)
    assert all(batch["target_weight"][k].sum() == 0 for k in bad)
    good = [k for k in range(len(instances)) if k not in bad]
    assert all(batch["image"][k].abs().sum() > 0 for k in good)
    seen = UnreadableImages(device)
    seen.note(batch)
    assert seen.paths() == {str(fake), str(cut)}


def test_decode_setting_is_checked(coco_mini: Path) -> None:
    assert not encoded_items("host") and encoded_items("device")
    assert batch_crops("host", CPU, (128, 96)) is None
    with pytest.raises(ConfigError, match="data.decode 'gpu': choose host or device"):
        encoded_items("gpu")
    batch = {"image": torch.zeros(1, 3, 4, 4)}
    assert DeviceCropBatches(CPU, (4, 4))(batch) is batch  # crops already made: untouched


@pytest.mark.slow
def test_training_with_device_decode_runs_supervised_and_ssl(synthetic_small: Path,
                                                             tmp_path: Path) -> None:
    from posemum_deploy.training.config import TrainConfig
    from posemum_deploy.training.presets import apply_preset
    from posemum_deploy.training.trainer import train

    for preset in ("supervised", "pose-mum-plus"):
        cfg = apply_preset(TrainConfig(), preset)
        cfg.out = str(tmp_path / preset)
        cfg.data.labeled = cfg.ssl.unlabeled = str(synthetic_small)
        cfg.data.images = cfg.ssl.unlabeled_images = str(synthetic_small.parent / "images")
        cfg.data.input_hw, cfg.data.workers, cfg.data.decode = (64, 64), 1, "device"
        cfg.ssl.tiles, cfg.ssl.unlabeled_batch_size = (2, 2), 4
        cfg.optim.batch_size, cfg.optim.epochs, cfg.optim.max_steps = 4, 1, 2
        cfg.runtime.precision, cfg.runtime.log_every = "fp32", 1
        result = train(cfg)
        assert result.steps == 2 and not result.unreadable
        assert np.isfinite(result.model.final.weight.detach().numpy()).all()
