"""Real person crops for INT8 calibration and parity checks, and a batcher over them.

Quantisation ranges calibrated on noise or on a handful of crops clip real activations,
so every calibration (ORT static QDQ, the TensorRT QDQ graph, OpenVINO/NNCF) reads crops made
exactly as at inference time (`make_crops`: aspect-fixed box, 1.25 padding) from real
images: person boxes of a COCO keypoints json, or each image of a folder whole (a
folder of pre-cropped people). `CropBatcher` is plain NumPy, so the batching that every
quantiser reads is testable without any runtime.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from posemum_deploy.data.boxes import gt_boxes
from posemum_deploy.data.coco import load_coco_keypoints
from posemum_deploy.data.images import list_images, read_image
from posemum_deploy.data.transforms import normalize_numpy
from posemum_deploy.errors import ConfigError
from posemum_deploy.inference.pipeline import make_crops


def _coco_images_dir(ann: Path, first_file: str) -> Path:
    """The folder a COCO json's file_names are relative to: beside it, or `images/`."""
    for folder in (ann.parent, ann.parent / "images"):
        if (folder / first_file).is_file():
            return folder
    raise ConfigError(f"{ann}: cannot find its images (looked for {first_file} beside the json "
                      "and in images/ next to it)")


def _coco_crops(ann: Path, input_hw: tuple[int, int]) -> list[np.ndarray]:
    coco = load_coco_keypoints(ann)
    table = gt_boxes(coco)
    images = [im for im in coco["images"] if im["id"] in table]
    if not images:
        return []
    folder = _coco_images_dir(ann, images[0]["file_name"])
    return [make_crops(read_image(folder / im["file_name"]), *table[im["id"]], input_hw).crops
            for im in images]


def _folder_crops(folder: Path, input_hw: tuple[int, int], limit: int) -> list[np.ndarray]:
    crops = []
    for path in list_images(folder)[: max(limit, 1) * 4]:
        img = read_image(path)
        box = np.array([[0.0, 0.0, img.shape[1] - 1.0, img.shape[0] - 1.0]])
        crops.append(make_crops(img, box, np.ones(1), input_hw).crops)
    return crops


def calibration_crops(source: str | Path, input_hw: tuple[int, int], limit: int = 256,
                      seed: int = 0) -> np.ndarray:
    """uint8 crops [N, H, W, 3] (N ≤ limit, random subset) from a folder or a COCO json."""
    source = Path(source)
    if source.suffix.lower() == ".json" and source.is_file():
        crops = _coco_crops(source, input_hw)
    elif source.is_dir():
        crops = _folder_crops(source, input_hw, limit)
    else:
        raise ConfigError(f"--calib {source}: pass a folder of person images or a COCO "
                          "keypoints json (its person boxes are cropped)")
    if not crops:
        raise ConfigError(f"--calib {source}: no images or person boxes found; pass real "
                          "person images (tens to hundreds)")
    out = np.concatenate(crops)
    if len(out) > limit:
        out = out[np.sort(np.random.default_rng(seed).choice(len(out), limit, replace=False))]
    return out


class CropBatcher:
    """Fixed-size normalised float32 NCHW batches over uint8 crops, then exhaustion.

    Calibrators ask for one batch at a time and expect exactly `batch_size` images; the
    last partial batch is dropped (a calibration graph may bind a fixed shape), unless
    there are fewer crops than one batch, in which case it is padded by repeating crops.
    """

    def __init__(self, crops: np.ndarray, batch_size: int,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        if len(crops) == 0:
            raise ConfigError("calibration needs at least one real crop; pass --calib")
        if batch_size < 1:
            raise ConfigError(f"calibration batch size must be ≥ 1, got {batch_size}")
        if len(crops) < batch_size:
            crops = crops[np.arange(batch_size) % len(crops)]
        self.crops = crops
        self.batch_size = batch_size
        self.mean, self.std = mean, std
        self.index = 0

    def __len__(self) -> int:
        return len(self.crops) // self.batch_size

    @property
    def shape(self) -> tuple[int, int, int, int]:
        h, w = self.crops.shape[1:3]
        return self.batch_size, 3, h, w

    def next_batch(self) -> np.ndarray | None:
        """The next [B, 3, H, W] float32 batch, or None when the crops are used up."""
        if self.index >= len(self):
            return None
        start = self.index * self.batch_size
        self.index += 1
        return normalize_numpy(self.crops[start:start + self.batch_size], self.mean, self.std)

    def reset(self) -> None:
        self.index = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        self.reset()
        while (batch := self.next_batch()) is not None:
            yield batch
