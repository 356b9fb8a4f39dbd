"""Label the images of one shard: prepared crops in, one JSON record per image out.

Decode, person boxes and affine crops run in worker threads (`prepare_image`, fed
through the bounded in-order `prefetch`), so inference never waits for JPEG decoding
while cores are free: cv2 and the runtimes release the GIL. Crops of consecutive
images are packed into batches of exactly `batch_size`, counted from the start of the
shard, so a shard's batches (and hence its numbers) are the same on every engine and on
every resume; the last batch of a shard is padded by `PoseEstimator`. (Just over 300
lines: preparing, batching and recording one shard's images are one pipeline.)
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from posemum_deploy.data.images import read_image
from posemum_deploy.evaluation.nms import oks_nms, rescore
from posemum_deploy.inference.pipeline import CropBatch, PoseEstimator, make_crops
from posemum_deploy.inference.tta import TTAEstimator, make_view_crops
from posemum_deploy.label.boxes import BoxSource

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
ImageDone = Callable[[int, int], None]  # (crops of the image, 1 if skipped else 0)


class StageTimes:
    """Seconds spent per stage, summed over threads (decode runs on several at once)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def merge(self, other: dict[str, float]) -> None:
        for stage, seconds in other.items():
            self.add(stage, seconds)


@dataclass
class Prepared:
    """One image after decode, boxes and crops (or the reason it could not be read)."""

    rel: str
    width: int = 0
    height: int = 0
    crops: CropBatch | None = None
    error: str | None = None


def prepare_image(root: Path, rel: str, boxes: BoxSource, input_hw: tuple[int, int],
                  times: StageTimes, scales: tuple[float, ...] | None = None) -> Prepared:
    """Decode → person boxes → crops. Never raises: a bad file becomes `error`.

    `scales` (TTA): crops [N, S, H, W, 3] of every box at each scale (`make_view_crops`).
    """
    try:
        t0 = time.perf_counter()
        image = read_image(root / rel)
        t1 = time.perf_counter()
        box_xywh, scores = boxes.boxes(rel, image)
        t2 = time.perf_counter()
        crops = (make_crops(image, box_xywh, scores, input_hw) if scales is None
                 else make_view_crops(image, box_xywh, scores, input_hw, scales))
        times.add("decode", t1 - t0)
        times.add("boxes", t2 - t1)
        times.add("crop", time.perf_counter() - t2)
        return Prepared(rel, image.shape[1], image.shape[0], crops)
    except Exception as e:  # one bad file must never end a million-image run
        reason = str(e) if getattr(e, "args", None) else type(e).__name__
        log.warning("skipped %s: %s", rel, reason)
        return Prepared(rel, error=reason if isinstance(e, ValueError | OSError)
                        else f"{type(e).__name__}: {reason}")


def prefetch(fn: Callable[[T], R], items: Iterable[T], workers: int, depth: int,
             times: StageTimes | None = None, wait_stage: str = "wait_for_decode"
             ) -> Iterator[R]:
    """`map(fn, items)` on `workers` threads, in order, at most `depth` results ahead.

    Time the consumer spends blocked on a result goes to `times[wait_stage]`: near zero
    when the threads keep ahead of it.
    """
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="label-decode")
    futures: deque[Future] = deque()
    it = iter(items)
    try:
        for item in islice(it, max(1, depth)):
            futures.append(pool.submit(fn, item))
        while futures:
            done = futures.popleft()
            for item in islice(it, 1):
                futures.append(pool.submit(fn, item))
            t0 = time.perf_counter()
            result = done.result()
            if times is not None:
                times.add(wait_stage, time.perf_counter() - t0)
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def concat(parts: list[Any]) -> Any:
    """np.concatenate for host crops, torch.cat for crops that live on a device."""
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    import torch

    return torch.cat(parts)


def host_stream(root: Path, items: Iterable[tuple[Any, str]], boxes: BoxSource,
                input_hw: tuple[int, int], workers: int, depth: int, times: StageTimes,
                scales: tuple[float, ...] | None = None) -> Iterator[tuple[Any, Prepared]]:
    """(key, Prepared) for (key, relative path) items, decoded and cropped by `workers`
    CPU threads running up to `depth` images ahead of the consumer, in order (`scales`:
    the TTA view crops of every box, see `prepare_image`)."""

    def prepare(item: tuple[Any, str]) -> tuple[Any, Prepared]:
        return item[0], prepare_image(root, item[1], boxes, input_hw, times, scales)

    return prefetch(prepare, items, workers, depth, times)


@dataclass
class _Waiting:
    slot: int
    item: Prepared
    crops: CropBatch  # item.crops, known not to be None here
    parts: list[np.ndarray] = field(default_factory=list)
    have: int = 0


class ShardLabeler:
    """Batches crops across the images of a shard and turns keypoints into records."""

    def __init__(self, estimator: PoseEstimator | TTAEstimator, oks_nms_threshold: float | None = 0.9,
                 times: StageTimes | None = None, pipelined: bool = False,
                 inflight: int = 1) -> None:
        self.estimator = estimator
        self.nms = oks_nms_threshold
        self.times = times or StageTimes()
        # Inference of batch k+1 on a thread of its own while this thread decodes batch k's
        # heatmaps and builds records: the runtime's pool never waits for that Python work.
        # Same batches, same order, same calls: the records are byte-identical.
        self.pipelined = pipelined
        # Batches running at once when pipelined: one per OpenVINO stream, so a core taken
        # by the decode thread slows one single-threaded stream, not every thread of one.
        self.inflight = max(1, inflight)

    def label(self, items: Iterable[Prepared], on_image: ImageDone | None = None
              ) -> list[dict[str, Any]]:
        """Records for `items` in order; `on_image(crops, skipped)` as each one finishes."""
        records: list[dict[str, Any] | None] = []
        queue: deque[_Waiting] = deque()
        buf_crops: list[np.ndarray] = []
        buf_inv: list[np.ndarray] = []
        batch = self.estimator.batch_size

        def finish(slot: int, item: Prepared, kpts: np.ndarray) -> None:
            t0 = time.perf_counter()
            records[slot] = self.record(item, kpts)
            self.times.add("records", time.perf_counter() - t0)
            if on_image:
                on_image(len(kpts), int(item.error is not None))

        self._pending: deque[tuple[Future, np.ndarray]] = deque()
        self._pool = (ThreadPoolExecutor(self.inflight, thread_name_prefix="label-infer")
                      if self.pipelined else None)
        try:
            self._label(items, records, queue, buf_crops, buf_inv, batch, finish)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
        return records  # type: ignore[return-value]  # finish() filled every slot

    def _label(self, items: Iterable[Prepared], records: list[dict[str, Any] | None],
               queue: deque[_Waiting], buf_crops: list[np.ndarray], buf_inv: list[np.ndarray],
               batch: int, finish: Callable[[int, Prepared, np.ndarray], None]) -> None:
        buffered = 0  # crops in buf_crops (counted, not summed: this loop runs per image)
        for item in items:
            records.append(None)
            crops = item.crops
            if crops is None or len(crops.boxes) == 0:
                finish(len(records) - 1, item, np.zeros((0, self.estimator.meta.num_joints, 4)))
                continue
            queue.append(_Waiting(len(records) - 1, item, crops))
            buf_crops.append(crops.crops)
            buf_inv.append(crops.inverse)
            buffered += len(crops.boxes)
            while buffered >= batch:
                self._run(batch, buf_crops, buf_inv, queue, finish)
                buffered -= batch
        if buffered:
            self._run(buffered, buf_crops, buf_inv, queue, finish)
        self._drain(queue, finish)

    def _run(self, k: int, buf_crops: list[np.ndarray], buf_inv: list[np.ndarray],
             queue: deque[_Waiting], finish: Callable[[int, Prepared, np.ndarray], None]) -> None:
        """Infer the first k buffered crops, hand keypoints to the waiting images in order."""
        crops, inv = concat(buf_crops), np.concatenate(buf_inv)
        buf_crops[:] = [crops[k:]] if len(crops) > k else []
        buf_inv[:] = [inv[k:]] if len(inv) > k else []
        if self._pool is not None:
            self._pending.append((self._pool.submit(self._infer, crops[:k]), inv[:k]))
            while len(self._pending) > self.inflight:  # one queued behind the running ones
                self._collect(queue, finish)
            return
        t0 = time.perf_counter()
        # Any, as from `_infer`: each estimator's decode takes what its own heatmaps returns
        # (arrays for a PoseEstimator, ViewHeatmaps for a TTAEstimator).
        heatmaps: Any = self.estimator.heatmaps(crops[:k])
        t1 = time.perf_counter()
        kpts = self.estimator.decode(heatmaps, inv[:k])
        self.times.add("infer", t1 - t0)
        self.times.add("decode_heatmaps", time.perf_counter() - t1)
        self._hand_out(kpts, queue, finish)

    def _infer(self, crops: np.ndarray) -> Any:
        """The inference thread's work (pipelined): one batch's heatmaps."""
        t0 = time.perf_counter()
        heatmaps = self.estimator.heatmaps(crops)
        self.times.add("infer", time.perf_counter() - t0)
        return heatmaps

    def _collect(self, queue: deque[_Waiting],
                 finish: Callable[[int, Prepared, np.ndarray], None]) -> None:
        """Wait for the oldest batch in flight, decode it and hand out its keypoints."""
        future, inverse = self._pending.popleft()
        t0 = time.perf_counter()
        heatmaps = future.result()
        t1 = time.perf_counter()
        kpts = self.estimator.decode(heatmaps, inverse)
        self.times.add("wait_for_infer", t1 - t0)
        self.times.add("decode_heatmaps", time.perf_counter() - t1)
        self._hand_out(kpts, queue, finish)

    def _drain(self, queue: deque[_Waiting],
               finish: Callable[[int, Prepared, np.ndarray], None]) -> None:
        while self._pending:
            self._collect(queue, finish)

    @staticmethod
    def _hand_out(kpts: np.ndarray, queue: deque[_Waiting],
                  finish: Callable[[int, Prepared, np.ndarray], None]) -> None:
        """Keypoints of consecutive crops to the waiting images, in order."""
        while len(kpts):
            head = queue[0]
            take = min(len(head.crops.boxes) - head.have, len(kpts))
            head.parts.append(kpts[:take])
            head.have += take
            kpts = kpts[take:]
            if head.have == len(head.crops.boxes):
                queue.popleft()
                finish(head.slot, head.item, np.concatenate(head.parts))

    def record(self, item: Prepared, kpts: np.ndarray) -> dict[str, Any]:
        """One output line: the image and its people, rescored (and OKS-NMSed) as in eval.

        Keypoints [N, K, 4] from a `TTAEstimator` add each joint's agreement across views
        and models ("joint_agreement"); a single pass ([N, K, 3]) writes none."""
        if item.error is not None:
            return {"file": item.rel, "error": item.error}
        persons: list[dict[str, Any]] = []
        if len(kpts):
            crops = item.crops
            assert crops is not None  # keypoints only come from an image's crops
            scores = rescore(kpts[:, :, 2], crops.box_scores)
            order = (oks_nms(kpts[:, :, :3], scores, crops.areas, self.nms)
                     if self.nms and len(kpts) > 1
                     else range(len(kpts)))
            # Rounded once per image, as arrays (a GPU labeler writes thousands of people
            # a second, so this runs hot).
            boxes = np.round(crops.boxes, 2).tolist()
            xy = np.round(kpts[:, :, :2], 2).tolist()
            joint_scores = np.round(kpts[:, :, 2], 5).tolist()
            box_scores = np.round(crops.box_scores, 5).tolist()
            instance = np.round(scores, 5).tolist()
            areas = np.round(crops.areas, 2).tolist()
            persons = [{"box": boxes[i], "box_score": box_scores[i], "score": instance[i],
                        "keypoints": xy[i], "joint_scores": joint_scores[i], "area": areas[i]}
                       for i in order]
            if kpts.shape[-1] > 3:
                agreement = np.round(kpts[:, :, 3], 4).tolist()
                for i, person in zip(order, persons, strict=True):
                    person["joint_agreement"] = agreement[i]
        return {"file": item.rel, "width": item.width, "height": item.height, "persons": persons}
