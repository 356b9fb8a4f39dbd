"""Decode and crop on the accelerator: the labeling path for GPUs that outrun the CPU.

On a GPU the network labels tens of thousands of crops a second, far more than CPU
threads decode JPEGs and warp crops (DESIGN: labeling must run at ≥ 0.8× model-only).
Here threads only read file bytes; chunks of images are decoded together on the device
(`jpeg_decoders`), warped by one `grid_sample` per chunk and normalised on the device,
in a background thread on its own CUDA stream, so the next chunk is decoded while the
current one is inferred (on the labeler's own stream). Only keypoints return to the host.

Box sources that need only the image size (gt:, det:, full) work here; pixel-reading
detectors (hog, detector:) need host images and use the host path. Files the device
decoder cannot decode (PNG, CMYK JPEG, ...) are decoded by cv2 and uploaded; unreadable
ones become error records exactly as on the host path.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import torch

from posemum_deploy.artifacts import ModelMetadata
from posemum_deploy.data.images import read_checked_bytes
from posemum_deploy.data.jpeg_decoders import JpegDecoder, decode_files, make_jpeg_decoder
from posemum_deploy.data.transforms import normalize_batch
from posemum_deploy.errors import ConfigError
from posemum_deploy.inference.gpu_crops import warp_crops_batched
from posemum_deploy.inference.pipeline import CropBatch, crop_frames
from posemum_deploy.label.boxes import SIZE_ONLY_KINDS, BoxSource, SizeOnlyBoxSource, sized_boxes
from posemum_deploy.label.shard import Prepared, StageTimes, prefetch

log = logging.getLogger(__name__)
_WRONG_BOXES = ("--decode device works with --boxes gt:, det: or full; hog and detector: "
                "boxes read the pixels on the host, so use --decode host")


def check_box_spec(spec: str) -> None:
    """Refuse a --boxes spec that device crops cannot serve, before anything loads."""
    if spec.partition(":")[0] not in SIZE_ONLY_KINDS:
        raise ConfigError(_WRONG_BOXES)


def _size_only(boxes: BoxSource) -> TypeGuard[SizeOnlyBoxSource]:
    return callable(getattr(boxes, "raw", None))


def check_box_source(boxes: BoxSource) -> SizeOnlyBoxSource:
    """Device crops know only each image's size on the host, not its pixels: `boxes`,
    once it is a source that needs no more."""
    if not _size_only(boxes):
        raise ConfigError(_WRONG_BOXES)
    return boxes


def backend_device(backend: Any) -> torch.device:
    """Where crops should live: the torch backend's device; for runtimes that take host
    arrays, the GPU when there is one (nvjpeg), else the CPU."""
    device = getattr(backend, "device", None)
    if isinstance(device, torch.device):
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def read_bytes(root: Path, rel: str) -> tuple[str, bytes | str]:
    """(rel, file bytes) or (rel, error text); never raises (threads run it)."""
    try:
        return rel, read_checked_bytes(root / rel)
    except (OSError, ValueError) as e:
        log.warning("skipped %s: %s", rel, e)
        return rel, str(e)


class DeviceCropper:
    """Turns chunks of (shard index, rel, bytes) into Prepared images with device crops."""

    def __init__(self, root: Path, boxes: BoxSource, meta: ModelMetadata,
                 device: torch.device, times: StageTimes, jpeg: JpegDecoder | None = None,
                 consumer: torch.cuda.Stream | None = None) -> None:
        self.boxes = check_box_source(boxes)
        self.root, self.meta, self.device, self.times = root, meta, device, times
        self.jpeg = jpeg or make_jpeg_decoder("torchvision", device)
        self.consumer = consumer  # the stream that reads the crops (None: the default one)
        self._local = threading.local()

    def _stream(self) -> torch.cuda.Stream | None:
        if self.device.type != "cuda":
            return None
        if not hasattr(self._local, "stream"):
            self._local.stream = torch.cuda.Stream(self.device)
        return self._local.stream

    def decode(self, chunk: list[tuple[str, bytes]]) -> list[torch.Tensor | str]:
        """uint8 [3, H, W] device tensors (or error text) for (rel, bytes) files."""
        return decode_files([(self.root / rel, data) for rel, data in chunk], self.jpeg,
                            self.device)

    def prepare(self, chunk: list[tuple[int, tuple[str, bytes | str]]]
                ) -> list[tuple[int, Prepared]]:
        """One chunk of images → Prepared items whose crops are normalised device tensors."""
        stream = self._stream()
        ctx = torch.cuda.stream(stream) if stream is not None else nullcontext()
        with ctx:
            result = self._prepare(chunk)
        if stream is not None:
            t0 = time.perf_counter()
            stream.synchronize()  # the consumer's stream may use the crops from here on
            self.times.add("sync", time.perf_counter() - t0)
        return result

    def _prepare(self, chunk: list[tuple[int, tuple[str, bytes | str]]]
                 ) -> list[tuple[int, Prepared]]:
        t0 = time.perf_counter()
        readable = [(k, rel, data) for k, (_, (rel, data)) in enumerate(chunk)
                    if isinstance(data, bytes)]
        images = self.decode([(rel, data) for _, rel, data in readable])
        t1 = time.perf_counter()
        prepared: dict[int, Prepared] = {}
        decoded: list[torch.Tensor] = []
        sized: list[tuple[int, str, int, int]] = []  # (k, rel, width, height)
        h_in, w_in = self.meta.input_hw
        for (k, rel, _), image in zip(readable, images, strict=True):
            if isinstance(image, str):
                prepared[k] = Prepared(rel, error=image)
                continue
            sized.append((k, rel, int(image.shape[-1]), int(image.shape[-2])))
            decoded.append(image)
        # Every box of the chunk at once: limits, then crop geometry.
        boxes, box_scores, counts = sized_boxes(self.boxes, [x[1:] for x in sized])
        owners = np.repeat(np.arange(len(sized)), counts)
        _, _, inverse, areas = crop_frames(boxes, (h_in, w_in))
        t2 = time.perf_counter()
        crops = None
        if len(owners):
            crops = warp_crops_batched(decoded, owners, inverse, (h_in, w_in))
            crops = normalize_batch(crops, self.meta.mean, self.meta.std)
            if self.device.type == "cuda":  # read on the consumer's stream
                crops.record_stream(self.consumer or torch.cuda.default_stream(self.device))
        start = 0
        for (k, rel, width, height), n in zip(sized, counts.tolist(), strict=True):
            part = slice(start, start + n)
            # Device tensors (None for an image without boxes), where CropBatch.crops is
            # annotated for host crops (an ndarray).
            part_crops: Any = crops[part] if n and crops is not None else None
            batch = CropBatch(part_crops, inverse[part], boxes[part], box_scores[part], areas[part])
            prepared[k] = Prepared(rel, width, height, batch)
            start += n
        for k, (_, (rel, data)) in enumerate(chunk):
            if not isinstance(data, bytes):
                prepared[k] = Prepared(rel, error=data)
        self.times.add("decode", t1 - t0)
        self.times.add("boxes", t2 - t1)
        self.times.add("crop", time.perf_counter() - t2)
        return [(chunk[k][0], prepared[k]) for k in range(len(chunk))]


def chunked(items: Iterable[tuple[int, tuple[str, bytes | str]]], size: int
            ) -> Iterator[list[tuple[int, tuple[str, bytes | str]]]]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def device_stream(cropper: DeviceCropper, items: Iterable[tuple[Any, str]], workers: int,
                  times: StageTimes, chunk_images: int = 64) -> Iterator[tuple[Any, Prepared]]:
    """(key, Prepared) for (key, relative path) items: `workers` threads read bytes, one
    thread decodes and crops chunks of `chunk_images` on the device (its own stream)
    while the consumer infers the previous chunk."""
    root = cropper.root
    # Chunks are gathered (and so reads waited for) on the thread that submits decodes.
    reads = prefetch(lambda item: (item[0], read_bytes(root, item[1])), items, workers,
                     3 * chunk_images, times, "wait_for_read")
    for chunk in prefetch(cropper.prepare, chunked(reads, chunk_images), 1, 2, times):
        yield from chunk
