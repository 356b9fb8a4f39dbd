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
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from itertools import groupby
from pathlib import Path
from typing import Any, NamedTuple

from posemum_deploy.inference.backends import Backend, load_backend
from posemum_deploy.inference.pipeline import PoseEstimator
from posemum_deploy.inference.tta import TTAEstimator, TTASpec, parse_tta
from posemum_deploy.label.boxes import BoxSource
from posemum_deploy.label.shard import ImageDone, ShardLabeler, StageTimes, host_stream
from posemum_deploy.label.writer import EncodedShard, encode_shard

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class WorkerSpec:
    """Everything a labeling process needs to build its model and label shards (picklable).

    Keyword-only: twelve fields of which several share a type (bools, strings) would be
    silently swapped by a positional call."""

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
    jpeg_decoder: str = "torchvision"
    cpu_threads: int | None = None  # this labeler's share of the cores (None: all)
    tta: str = "none"  # TTA views of every person (`inference.tta.parse_tta`)
    ensemble: tuple[str, ...] = ()  # further teachers averaged with `model`
    pipeline: bool = True  # ORT/OpenVINO: inference on its own thread (`ShardLabeler`)


class LabelerInfo(NamedTuple):
    """Which labeler did a shard: its process, when it began loading its model and when
    that was done (time.time()), and the GPU(s) it was given (CUDA_VISIBLE_DEVICES)."""

    pid: int = 0
    started_at: float = 0.0
    ready_at: float = 0.0
    gpu: str = ""


@dataclass
class ShardResult:
    """One labeled shard, as a worker hands it back to the writer."""

    index: int
    shard: EncodedShard
    seconds: dict[str, float]
    crops: int
    finished_at: float = 0.0  # time.time() when labeled (the writer may see it later)
    labeler: LabelerInfo = LabelerInfo()
    # CPU seconds the labeler's process used (all threads) since its previous shard: far
    # above the stage seconds means threads spinning (e.g. on CUDA syncs), not working
    cpu_s: float = 0.0


def open_backend(spec: WorkerSpec) -> Backend:
    options = dict(spec.backend_options)
    if spec.backend == "torch-fast":  # its CUDA graphs are captured for this batch size
        options.setdefault("batch_size", spec.batch_size)
    return load_backend(spec.model, spec.backend, cpu_threads=spec.cpu_threads, **options)


def use_cpu_share(threads: int | None) -> None:
    """Size this process's torch and OpenCV thread pools to its share of the cores: N
    labeling processes each running pools as wide as the machine oversubscribe it N×."""
    if not threads:
        return
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def host_crops_estimator(backend: Backend, spec: WorkerSpec) -> PoseEstimator:
    """The estimator for crops cut on the host: a torch network on a GPU gets them as uint8
    through pinned memory and keeps flip test and heatmap decode on the device
    (`UploadingPoseEstimator`); every other backend takes the float NumPy batch."""
    device = getattr(backend, "device", None)
    if hasattr(backend, "predict_tensor") and getattr(device, "type", None) == "cuda":
        from posemum_deploy.inference.tensor_pipeline import UploadingPoseEstimator

        return UploadingPoseEstimator(backend, spec.batch_size, spec.flip, spec.dark)
    return PoseEstimator(backend, spec.batch_size, spec.flip, spec.dark)


def uses_tta(spec: WorkerSpec) -> bool:
    """Several views or teachers: labels come from a `TTAEstimator` (with agreement)."""
    return bool(spec.ensemble) or not parse_tta(spec.tta).trivial


def tta_estimator(backend: Backend, spec: WorkerSpec) -> TTAEstimator:
    """`backend` and every `spec.ensemble` teacher, each as the host-crops estimator of its
    runtime without flip test, over the TTA views (`--flip` adds the mirrored ones)."""
    tta = parse_tta(spec.tta)
    plain = replace(spec, flip=False)
    members = [host_crops_estimator(backend, plain)]
    members += [host_crops_estimator(open_backend(replace(plain, model=m)), plain)
                for m in spec.ensemble]
    names = [Path(m).name for m in (spec.model, *spec.ensemble)]
    return TTAEstimator(members, TTASpec(tta.flip or spec.flip, tta.scales), names)


def inference_stream(backend: Backend) -> Any:
    """A CUDA stream of its own for a torch backend on a GPU (None otherwise).

    torchvision's nvjpeg decoder runs on a blocking stream and syncs it with the legacy
    default stream: inference on the default stream would wait for every decode and every
    decode for the inference queued before it, so the decode thread could not run ahead.
    On a non-blocking stream of its own the network never meets the decoder's stream."""
    device = getattr(backend, "device", None)
    if not hasattr(backend, "predict_tensor") or getattr(device, "type", None) != "cuda":
        return None
    import torch

    return torch.cuda.Stream(device)


class ShardWorker:
    """Holds one backend; `label(index, files)` labels one shard from its file list."""

    def __init__(self, spec: WorkerSpec, backend: Backend | None = None) -> None:
        self.started_at = time.time()
        self.spec = spec
        be = backend if backend is not None else open_backend(spec)
        self.scales: tuple[float, ...] | None = None
        if uses_tta(spec):  # host crops only (runner.check_run_options)
            self.estimator: Any = tta_estimator(be, spec)
            self.scales = self.estimator.spec.scales
        elif spec.decode == "device":
            from posemum_deploy.data.jpeg_decoders import make_jpeg_decoder
            from posemum_deploy.inference.tensor_pipeline import TensorPoseEstimator
            from posemum_deploy.label.device_crops import backend_device

            self.estimator = TensorPoseEstimator(be, spec.batch_size, spec.flip, spec.dark)
            self.device = backend_device(be)
            self.jpeg = make_jpeg_decoder(spec.jpeg_decoder, self.device, spec.workers)
            log.info("device crops on %s, JPEG decoder: %s", self.device, self.jpeg.name)
        else:
            self.estimator = host_crops_estimator(be, spec)
        self.infer_stream = inference_stream(be)
        # Plain host-crop estimators of the CPU runtimes only: their calls release the GIL
        # and are the same from any thread (torch's thread pools are per thread).
        self.pipelined = (spec.pipeline and type(self.estimator) is PoseEstimator
                          and getattr(be, "name", "") in ("onnxruntime", "openvino"))
        self.inflight = int(getattr(be, "streams", 1)) if self.pipelined else 1
        self.info = LabelerInfo(os.getpid(), self.started_at, time.time(),
                                os.environ.get("CUDA_VISIBLE_DEVICES", ""))

    def stream(self, items: Any, times: StageTimes) -> Any:
        """(key, Prepared) for (key, relative path) items, decoded on host or device."""
        root = Path(self.spec.root)
        if self.spec.decode == "device":
            from posemum_deploy.label.device_crops import DeviceCropper, device_stream

            cropper = DeviceCropper(root, self.spec.boxes, self.estimator.meta, self.device,
                                    times, self.jpeg, self.infer_stream)
            return device_stream(cropper, items, self.spec.workers, times)
        depth = max(4 * self.spec.workers, 2 * self.spec.batch_size)
        return host_stream(root, items, self.spec.boxes, tuple(self.estimator.meta.input_hw),
                           self.spec.workers, depth, times, self.scales)

    def label_shards(self, jobs: Iterable[tuple[int, list[str]]], times: StageTimes,
                     on_image: ImageDone | None = None) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """(shard index, records) for each (index, files) job, in order. One stream feeds
        them all, so decoding runs ahead across shard ends (a stream per shard would stall
        at every start and idle while the finished shard is encoded); each shard still
        starts its own batches, so numbers match a shard labeled alone."""
        labeler = ShardLabeler(self.estimator, self.spec.oks_nms, times, self.pipelined,
                               self.inflight)
        prepared = self.stream(((index, rel) for index, files in jobs for rel in files), times)
        for index, group in groupby(prepared, key=lambda x: x[0]):
            with self._on_inference_stream():
                records = labeler.label((p for _, p in group), on_image)
            yield index, records

    def _on_inference_stream(self) -> Any:
        """This thread's CUDA work on the labeler's own stream (see `inference_stream`)."""
        if self.infer_stream is None:
            return nullcontext()
        import torch

        return torch.cuda.stream(self.infer_stream)

    def label_many(self, jobs: list[tuple[int, list[str]]]) -> Iterator[ShardResult]:
        """Label several shards as one stream; yield each, encoded, as it finishes, with
        its crop count and the stage seconds spent since the previous one."""
        times = StageTimes()
        crops = [0]
        reported: dict[str, float] = {}
        cpu_mark = time.process_time()

        def count(n: int, _skipped: int) -> None:
            crops[0] += n

        for index, records in self.label_shards(jobs, times, count):
            t0 = time.perf_counter()
            shard = encode_shard(records)
            times.add("encode", time.perf_counter() - t0)
            now = dict(times.seconds)
            seconds = {k: v - reported.get(k, 0.0) for k, v in now.items()}
            reported = now
            cpu_now = time.process_time()
            yield ShardResult(index, shard, seconds, crops[0], time.time(), self.info,
                              cpu_now - cpu_mark)
            cpu_mark, crops[0] = cpu_now, 0

    def label(self, index: int, files: list[str]) -> ShardResult:
        """One shard (Ray actors take shards one at a time)."""
        return next(self.label_many([(index, files)]))


# The pool's worker processes each hold one ShardWorker, built once by `init_process`, and
# the queue that carries each finished shard back to the writer.
_PROCESS_WORKER: dict[str, Any] = {}


def init_process(spec: WorkerSpec, finished: Any, gpu_slots: Any = None) -> None:
    """Pool initializer: take a GPU from `gpu_slots` (a queue holding one entry per
    labeler) before anything touches CUDA, build this process's model; keep a failure to
    report per task."""
    _PROCESS_WORKER["finished"] = finished
    if gpu_slots is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_slots.get(timeout=60)
    try:
        use_cpu_share(spec.cpu_threads)
        _PROCESS_WORKER["worker"] = ShardWorker(spec)
    except Exception as e:  # raised again, with its message, by the first task
        _PROCESS_WORKER["error"] = e


def label_in_process(jobs: list[tuple[int, list[str]]]) -> int:
    """Label a run of shards as one stream, putting each ShardResult on the `finished`
    queue as soon as it is done (the writer, progress and resume see every shard, not
    every run); returns how many were put."""
    if "error" in _PROCESS_WORKER:
        raise _PROCESS_WORKER["error"]
    done = 0
    for result in _PROCESS_WORKER["worker"].label_many(jobs):
        _PROCESS_WORKER["finished"].put(result)
        done += 1
    return done
