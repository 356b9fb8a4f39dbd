"""One model-holding labeler that labels whole shards: the unit of work of the
multi-process local engine (`--processes N`) and of Ray actors.

A GPU labels faster than one Python process can decode, crop and write records for it
(the per-image Python work holds the GIL), so several processes, each with its own
model on the same GPU, share it. Every process labels whole shards with the same
`ShardLabeler` and the same batch packing, so the output is identical for any number of
processes, engines and resumes.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posemum_deploy.inference.backends import Backend, load_backend
from posemum_deploy.inference.pipeline import PoseEstimator
from posemum_deploy.label.boxes import BoxSource
from posemum_deploy.label.shard import ShardLabeler, StageTimes, host_stream
from posemum_deploy.label.writer import EncodedShard, encode_shard

log = logging.getLogger(__name__)


@dataclass
class WorkerSpec:
    """Everything a labeling process needs to build its model and label shards (picklable)."""

    model: str
    root: str
    boxes: BoxSource
    backend: str = "auto"
    backend_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 64
    workers: int = 2
    flip: bool = False
    dark: bool = False
    oks_nms: float | None = 0.9
    decode: str = "host"


@dataclass
class ShardResult:
    """One labeled shard, as a worker hands it back to the writer."""

    index: int
    shard: EncodedShard
    seconds: dict[str, float]
    crops: int


def open_backend(spec: WorkerSpec) -> Backend:
    options = dict(spec.backend_options)
    if spec.backend == "torch-fast":  # its CUDA graphs are captured for this batch size
        options.setdefault("batch_size", spec.batch_size)
    return load_backend(spec.model, spec.backend, **options)


def host_crops_estimator(backend: Backend, spec: WorkerSpec) -> PoseEstimator:
    """The estimator for crops cut on the host: a torch network on a GPU gets them as uint8
    through pinned memory and keeps flip test and heatmap decode on the device
    (`UploadingPoseEstimator`); every other backend takes the float NumPy batch."""
    device = getattr(backend, "device", None)
    if hasattr(backend, "predict_tensor") and getattr(device, "type", None) == "cuda":
        from posemum_deploy.inference.tensor_pipeline import UploadingPoseEstimator

        return UploadingPoseEstimator(backend, spec.batch_size, spec.flip, spec.dark)
    return PoseEstimator(backend, spec.batch_size, spec.flip, spec.dark)


class ShardWorker:
    """Holds one backend; `label(index, files)` labels one shard from its file list."""

    def __init__(self, spec: WorkerSpec, backend: Backend | None = None) -> None:
        self.spec = spec
        be = backend if backend is not None else open_backend(spec)
        if spec.decode == "device":
            from posemum_deploy.inference.tensor_pipeline import TensorPoseEstimator
            from posemum_deploy.label.device_crops import backend_device

            self.estimator = TensorPoseEstimator(be, spec.batch_size, spec.flip, spec.dark)
            self.device = backend_device(be)
        else:
            self.estimator = host_crops_estimator(be, spec)

    def stream(self, items: Any, times: StageTimes) -> Any:
        """(key, Prepared) for (key, relative path) items, decoded on host or device."""
        root = Path(self.spec.root)
        if self.spec.decode == "device":
            from posemum_deploy.label.device_crops import DeviceCropper, device_stream

            cropper = DeviceCropper(root, self.spec.boxes, self.estimator.meta, self.device, times)
            return device_stream(cropper, items, self.spec.workers, times)
        depth = max(4 * self.spec.workers, 2 * self.spec.batch_size)
        return host_stream(root, items, self.spec.boxes, tuple(self.estimator.meta.input_hw),
                           self.spec.workers, depth, times)

    def label(self, index: int, files: list[str]) -> ShardResult:
        times = StageTimes()
        labeler = ShardLabeler(self.estimator, self.spec.oks_nms, times)
        crops = [0]

        def count(n: int, _skipped: int) -> None:
            crops[0] += n

        stream = self.stream(((index, rel) for rel in files), times)
        records = labeler.label((p for _, p in stream), count)
        t0 = time.perf_counter()
        shard = encode_shard(records)
        times.add("encode", time.perf_counter() - t0)
        return ShardResult(index, shard, dict(times.seconds), crops[0])


# The pool's worker processes each hold one ShardWorker, built once by `init_process`.
_PROCESS_WORKER: dict[str, Any] = {}


def init_process(spec: WorkerSpec) -> None:
    """Pool initializer: build this process's model; keep a failure to report per task."""
    try:
        _PROCESS_WORKER["worker"] = ShardWorker(spec)
    except Exception as e:  # raised again, with its message, by the first task
        _PROCESS_WORKER["error"] = e


def label_in_process(index: int, files: list[str]) -> ShardResult:
    if "error" in _PROCESS_WORKER:
        raise _PROCESS_WORKER["error"]
    return _PROCESS_WORKER["worker"].label(index, files)
