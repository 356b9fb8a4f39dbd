"""`data.decode: device` for training: crops cut on the GPU, not in loader workers.

A training step of ResNet-18 at 256×192 on an H100 consumes ~3.5k crops/s, about what
16 CPU workers decoding full images (1–3 ms each) deliver. With this setting the workers
only read each file's bytes and compute the crop's affine and heatmap targets
(`TopDownDataset(encoded=True)`); the main process decodes the batch's JPEGs on the GPU
in one nvjpeg call (other formats by cv2, uploaded) and cuts every crop with one
`grid_sample` (`warp_crops_batched`, the labeler's device crops). Same geometry as the
host path's `cv2.warpAffine`; the pixels differ by interpolation rounding only (float
crops, no uint8 round trip).

The decode runs in the training thread and torchvision's nvjpeg stream syncs with the
default stream the step runs on: it adds to the step instead of overlapping it, so it
pays only where the workers cannot keep up (not yet timed on a GPU; gpu_bench's training
section prints this loader's rate).

A file the worker's byte check passed but no decoder can read (rare: not an image at
all) becomes a black crop whose targets weigh 0, and is reported like any unreadable
image (its `unreadable` entry).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from posemum_deploy.data.jpeg_decoders import decode_files, make_jpeg_decoder
from posemum_deploy.errors import ConfigError
from posemum_deploy.inference.gpu_crops import warp_crops_batched

log = logging.getLogger(__name__)
DECODES = ("host", "device")


def encoded_items(decode: str) -> bool:
    """Whether loader items carry file bytes (`decode: device`) or crops (`host`)."""
    if decode not in DECODES:
        raise ConfigError(f"data.decode {decode!r}: choose {' or '.join(DECODES)}")
    return decode == "device"


def loader_collate(decode: str) -> Callable[[list[dict[str, Any]]], dict[str, Any]] | None:
    """The DataLoader collate_fn for this decode setting (None: torch's default)."""
    return collate_encoded if encoded_items(decode) else None


def batch_crops(decode: str, device: torch.device, input_hw: tuple[int, int]
                ) -> DeviceCropBatches | None:
    """What turns a loader batch into crops on `device` (None: the workers made them)."""
    if not encoded_items(decode):
        return None
    if device.type == "cpu":
        log.warning("--decode device on the CPU decodes every image in the training process, "
                    "slower than loader workers; it is meant for GPUs")
    return DeviceCropBatches(device, input_hw)


def collate_encoded(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Default collation, except each item's file bytes stay one tensor each (a list)."""
    encoded = [item.pop("encoded") for item in items]
    batch = default_collate(items)
    batch["encoded"] = encoded
    return batch


class DeviceCropBatches:
    """Turns a collated batch of file bytes + crop → image affines into `image` crops
    [B, 3, h, w] (float, 0..255) on `device`; batches that already hold crops pass."""

    def __init__(self, device: torch.device, input_hw: tuple[int, int],
                 jpeg_decoder: str = "torchvision") -> None:
        self.device, self.input_hw = device, input_hw
        self.jpeg = make_jpeg_decoder(jpeg_decoder, device)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if "encoded" not in batch:
            return batch
        files = [(name, bytes(t.numpy())) for name, t in zip(batch.pop("file"),
                                                               batch.pop("encoded"), strict=True)]
        decoded = decode_files(files, self.jpeg, self.device)
        inverse = batch.pop("inverse").numpy()
        bad = [k for k, image in enumerate(decoded) if isinstance(image, str)]
        # a black stand-in for each; its loss weight goes to 0 below
        images = [torch.zeros(3, 1, 1, dtype=torch.uint8, device=self.device)
                  if isinstance(image, str) else image for image in decoded]
        batch["image"] = warp_crops_batched(images, np.arange(len(images)), inverse,
                                            self.input_hw)
        if bad:
            batch["image"][bad] = 0
            if "target_weight" in batch:
                batch["target_weight"][bad] = 0
            # an item already standing in for an unreadable one keeps that report; this
            # instance is reported when it is requested itself
            earlier = batch["unreadable"][bad]
            batch["unreadable"][bad] = torch.where(earlier >= 0, earlier, batch["index"][bad])
        return batch
