"""`label_folder`: pseudo-label every image under a folder into resumable JSONL shards.

The image list is `list_images` (recursive, sorted), cut into fixed shards; the local
engine streams the unfinished shards' images through decode threads into one batched
estimator, the Ray engine hands whole shards to model-holding actors. Both write through
the same `ShardStore`, so a local run, a cluster run and a resumed run agree shard for
shard, and a run with other settings refuses to continue someone else's output.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from posemum_deploy.data.images import IMAGE_SUFFIXES, list_images
from posemum_deploy.errors import ArtifactError, ConfigError, ImageError
from posemum_deploy.artifacts import sha256_file
from posemum_deploy.inference.backends import Backend, check_backend_opens
from posemum_deploy.label.boxes import BoxSource, parse_box_source
from posemum_deploy.data.jpeg_decoders import check_jpeg_decoder
from posemum_deploy.label.shard import StageTimes
from posemum_deploy.label.worker import LabelerInfo, ShardResult, ShardWorker, WorkerSpec
from posemum_deploy.label.writer import ShardStore
from posemum_deploy.system import usable_cpus, visible_gpus

log = logging.getLogger(__name__)
ENGINES = ("local", "ray")
DECODERS = ("host", "device")


@dataclass
class LabelSettings:
    """Everything that changes the output; recorded in the manifest, checked on resume."""

    boxes: str = "full"
    boxes_ann: str | None = None
    box_score_threshold: float = 0.0
    max_people: int = 20
    flip: bool = False
    dark: bool = False
    oks_nms: float | None = 0.9
    shard_size: int = 1000
    decode: str = "host"  # "device": JPEG decode + grid_sample crops on the model's device
    jpeg_decoder: str = "torchvision"  # --decode device: torchvision | nvimgcodec


@dataclass
class LabelSummary:
    """What a run did; rates count only the work done in this invocation."""

    images: int = 0
    persons: int = 0
    skipped: int = 0
    crops: int = 0
    shards_total: int = 0
    shards_written: int = 0
    shards_resumed: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # (time.time() when labeled, images, crops) per shard, stamped where it was labeled
    shard_marks: list[tuple[float, int, int]] = field(default_factory=list)
    # per labeler (process id): when it loaded its model, its shards' times, stage seconds
    labelers: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def crops_per_s(self) -> float:
        return self.crops / self.seconds if self.seconds else 0.0

    def mark_shard(self, finished_at: float, images: int, crops: int, labeler: LabelerInfo,
                   stage_s: float = 0.0, cpu_s: float = 0.0) -> None:
        """Note when a shard was labeled (worker-side clock) and by which labeler, for the
        rates and per-labeler timings (stage seconds, and the process's CPU seconds)."""
        self.shard_marks.append((finished_at, images, crops))
        entry = self.labelers.setdefault(labeler.pid, {
            "started_at": labeler.started_at, "ready_at": labeler.ready_at, "gpu": labeler.gpu,
            "shards": [], "stage_s": 0.0, "cpu_s": 0.0})
        entry["shards"].append(finished_at)
        entry["stage_s"] += stage_s
        entry["cpu_s"] += cpu_s

    def steady_crops_per_s(self, skip: float = 0.2) -> float:
        """Crops/s once the first `skip` of the images are labeled: the rate without
        start-up (spawning labelers, loading models, capturing graphs), which a long job
        pays once. Timed where shards were labeled, so late delivery cannot skew it."""
        marks = sorted(self.shard_marks)
        done = 0
        for i, (t, images, _) in enumerate(marks[:-1]):
            done += images
            if done >= skip * self.images:
                crops = sum(c for _, _, c in marks[i + 1:])
                return crops / (marks[-1][0] - t) if marks[-1][0] > t else 0.0
        return 0.0


class LabelProgress(Protocol):
    """Progress display the CLI hands down (the library itself only logs)."""

    def start(self, total_images: int, done_images: int) -> None: ...

    def advance(self, images: int, crops: int, skipped: int) -> None: ...


@dataclass
class ShardJob:
    """One shard's work: its index and the relative paths of its images."""

    index: int
    files: list[str]


def plan_shards(files: list[str], shard_size: int) -> list[ShardJob]:
    """Shard i = files[i*shard_size : (i+1)*shard_size] of the stable sorted list."""
    if shard_size < 1:
        raise ConfigError(f"--shard-size must be at least 1, got {shard_size}")
    return [ShardJob(i // shard_size, files[i:i + shard_size])
            for i in range(0, len(files), shard_size)]


def run_identity(model_path: Path, files: list[str], settings: LabelSettings,
                 boxes: BoxSource) -> dict[str, Any]:
    """Model hash, output-changing settings and the image list digest, for the manifest.

    The model's sha256 also pins its input size, codec and flip pairs.
    """
    listing = hashlib.sha256("\n".join(files).encode()).hexdigest()
    chosen = {k: v for k, v in asdict(settings).items() if k not in ("boxes_ann", "shard_size")}
    chosen.update(boxes=boxes.identity())
    return {"model": {"file": model_path.name, "sha256": sha256_file(model_path)},
            "settings": chosen,
            "images": {"count": len(files), "sha256": listing, "shard_size": settings.shard_size}}


def check_run_options(settings: LabelSettings, backend: str | Backend, engine: str,
                      processes: int, gpus: list[str] | None) -> None:
    """Refuse option combinations that cannot work, before any file is read."""
    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine!r}: choose {' or '.join(ENGINES)}")
    if settings.decode not in DECODERS:
        raise ConfigError(f"--decode {settings.decode!r}: choose {' or '.join(DECODERS)}")
    if processes < 1 or (processes > 1 and (engine != "local" or not isinstance(backend, str))):
        raise ConfigError("--processes N (N > 1) runs the local engine with a backend name, "
                          "each process loading its own model")
    if gpus and engine == "ray":
        raise ConfigError("--gpus is for the local engine's --processes; Ray gives each of "
                          "its actors a GPU itself (--ray-actors)")
    if gpus and processes == 1:
        raise ConfigError(f"--gpus {','.join(gpus)} spreads --processes N labelers over "
                          "GPUs; pass --processes (e.g. one or two per GPU), or for one "
                          "process choose its GPU with CUDA_VISIBLE_DEVICES")
    check_jpeg_decoder(settings.jpeg_decoder)
    if settings.decode == "device":
        from posemum_deploy.label.device_crops import check_box_spec

        check_box_spec(settings.boxes)


def checked_inputs(model: Path, root: Path, backend: str | Backend) -> list[str]:
    """The image list (relative paths, sorted), once the model file exists, the named
    backend opens its type and the folder holds images: all before `--out` is made."""
    if not model.is_file():
        raise ArtifactError(f"{model}: model file not found; pass a checkpoint, ONNX file, "
                            "OpenVINO model or TensorRT engine (see `posemum export`)")
    if isinstance(backend, str) and backend != "auto":
        check_backend_opens(backend, model)
    files = [p.relative_to(root).as_posix() for p in list_images(root)]
    if not files:
        raise ImageError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under "
                         "this folder or its subfolders; nothing to label")
    return files


def label_folder(model: str | Path, images_dir: str | Path, out_dir: str | Path,
                 settings: LabelSettings | None = None, *, backend: str | Backend = "auto",
                 batch_size: int = 64, workers: int | None = None, resume: bool = False,
                 engine: str = "local", progress: LabelProgress | None = None,
                 backend_options: dict[str, Any] | None = None,
                 ray_actors: int | None = None, processes: int = 1,
                 shards_per_task: int | None = None,
                 gpus: list[str] | None = None) -> LabelSummary:
    """Pseudo-label every image under `images_dir` into `out_dir` (see module docstring).

    `backend` is a kind name for `load_backend` or an already open Backend for `model`;
    `processes` > 1 (local engine) spawns that many labelers, each loading `backend` and
    taking runs of at most `shards_per_task` shards (default: `process_tasks`' choice),
    spread round-robin over `gpus` (CUDA_VISIBLE_DEVICES entries; default: every visible
    GPU); the output does not depend on either.
    """
    settings = settings or LabelSettings()
    check_run_options(settings, backend, engine, processes, gpus)
    root, model = Path(images_dir), Path(model)
    files = checked_inputs(model, root, backend)
    boxes = parse_box_source(settings.boxes, settings.box_score_threshold,
                             settings.max_people, settings.boxes_ann)
    # Checked before the model loads, so a refused resume fails in a second.
    store = ShardStore(out_dir, run_identity(model, files, settings, boxes), resume)
    workers = workers or min(4, usable_cpus())
    spec = WorkerSpec(str(model.resolve()), str(root.resolve()), boxes,
                      backend if isinstance(backend, str) else "auto",
                      dict(backend_options or {}), batch_size, workers, settings.flip,
                      settings.dark, settings.oks_nms, settings.decode, settings.jpeg_decoder)
    # One process loads its model here, before progress and the clock start (rates count
    # labeling only); spawned labelers and Ray actors load their own.
    worker = (ShardWorker(spec, None if isinstance(backend, str) else backend)
              if engine == "local" and processes == 1 else None)
    jobs = plan_shards(files, settings.shard_size)
    todo = [job for job in jobs if not store.is_done(job.index)]
    summary = LabelSummary(shards_total=len(jobs), shards_resumed=len(jobs) - len(todo))
    store.log.start(model=model.name, images=len(files), shards=len(jobs), todo=len(todo),
                    engine=engine, processes=processes, batch_size=batch_size,
                    backend=backend if isinstance(backend, str) else backend.name)
    if progress:
        progress.start(len(files), len(files) - sum(len(j.files) for j in todo))
    times = StageTimes()
    t0 = time.perf_counter()
    if engine == "ray":
        from posemum_deploy.label.ray_engine import run_ray

        run_ray(spec, todo, store, summary, times, progress, actors=ray_actors)
    elif worker is None:
        _run_processes(spec, todo, store, summary, times, progress, processes,
                       shards_per_task, gpus)
    else:
        _run_local(worker, todo, store, summary, times, progress)
    summary.seconds = time.perf_counter() - t0
    summary.stage_seconds = dict(times.seconds)
    totals = store.finish(len(jobs))
    log.info("labeled %d images (%d persons, %d skipped) in total", *totals.values())
    return summary


def _run_local(worker: ShardWorker, todo: list[ShardJob], store: ShardStore,
               summary: LabelSummary, times: StageTimes, progress: LabelProgress | None) -> None:
    """One process: decoding runs ahead (across shard ends) of batched inference, and
    each shard is written as soon as its last image is labeled."""

    def on_image(crops: int, skipped: int) -> None:
        summary.images += 1
        summary.crops += crops
        summary.skipped += skipped
        if progress:
            progress.advance(1, crops, skipped)

    before = (0, 0)
    for index, records in worker.label_shards(((j.index, j.files) for j in todo), times, on_image):
        crops = summary.crops - before[1]
        summary.mark_shard(time.time(), summary.images - before[0], crops, worker.info)
        before = (summary.images, summary.crops)
        t0 = time.perf_counter()
        entry = store.write_shard(index, records, crops)
        times.add("write", time.perf_counter() - t0)
        summary.persons += entry["persons"]
        summary.shards_written += 1


def record_shard(result: ShardResult, store: ShardStore, summary: LabelSummary,
                 times: StageTimes, progress: LabelProgress | None) -> None:
    """Write a shard labeled elsewhere (a process or a Ray actor) and count it."""
    t0 = time.perf_counter()
    entry = store.write_shard(result.index, result.shard, result.crops)
    times.add("write", time.perf_counter() - t0)
    times.merge(result.seconds)
    summary.images += entry["images"]
    summary.persons += entry["persons"]
    summary.skipped += entry["errors"]
    summary.crops += result.crops
    summary.shards_written += 1
    summary.mark_shard(result.finished_at, entry["images"], result.crops, result.labeler,
                       sum(result.seconds.values()), result.cpu_s)
    if progress:
        progress.advance(entry["images"], result.crops, entry["errors"])


def process_tasks(todo: list[ShardJob], processes: int, max_shards: int | None = None
                  ) -> list[list[ShardJob]]:
    """Consecutive runs of shards, one task each. A task is one decode stream (a stream
    stalls as it starts), so tasks are long: about four per labeler, which still evens
    out the end of the run, and at most `max_shards` shards (default 64)."""
    size = max(1, min(max_shards or 64, -(-len(todo) // (4 * processes))))
    return [todo[i:i + size] for i in range(0, len(todo), size)]


def _run_processes(spec: WorkerSpec, todo: list[ShardJob], store: ShardStore,
                   summary: LabelSummary, times: StageTimes, progress: LabelProgress | None,
                   processes: int, shards_per_task: int | None = None,
                   gpus: list[str] | None = None) -> None:
    """`processes` spawned labelers (each with its own model, on the CPU or on one of
    `gpus`, round-robin) take runs of shards (`process_tasks`) and put every finished
    shard on a queue; this process writes each shard as it arrives."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from posemum_deploy.label.worker import init_process, label_in_process

    # Each labeler's runtimes get its share of the cores, unless the caller chose threads.
    spec = replace(spec, cpu_threads=max(1, usable_cpus() // processes))
    context = multiprocessing.get_context("spawn")
    finished = context.Queue()
    pool = ProcessPoolExecutor(processes, mp_context=context, initializer=init_process,
                               initargs=(spec, finished, gpu_slots(spec, processes, gpus,
                                                                    context)))

    def write(result: ShardResult) -> None:
        record_shard(result, store, summary, times, progress)

    try:
        futures = [pool.submit(label_in_process, [(j.index, j.files) for j in task])
                   for task in process_tasks(todo, processes, shards_per_task)]
        for _ in range(len(todo)):
            write(_next_shard(finished, futures))
    except BaseException:
        # Labelers still running put their shards on the queue; a queue nobody reads
        # blocks their exit (and so this shutdown). Keep writing what arrives: finished
        # shards are never thrown away, and queued runs do not start.
        _drain_while(lambda: pool.shutdown(wait=True, cancel_futures=True), finished, write)
        raise
    pool.shutdown(wait=True)


def gpu_slots(spec: WorkerSpec, processes: int, gpus: list[str] | None, context: Any) -> Any:
    """A queue with one CUDA_VISIBLE_DEVICES entry per labeler, round-robin over `gpus`
    (default: every visible GPU), or None: no GPU here, or the backend options already
    name one device (e.g. cuda:1), which a narrowed view would hide."""
    devices = visible_gpus() if gpus is None else list(gpus)
    if not devices or ":" in str(spec.backend_options.get("device", "")):
        return None
    slots = context.Queue()
    for k in range(processes):
        slots.put(devices[k % len(devices)])
    return slots


def _next_shard(finished: Any, futures: list[Any], patience_s: float = 30.0) -> ShardResult:
    """The next shard from the labelers' queue; a labeler that failed or died raises its
    error here, and so does a queue that stays empty after every labeler has returned."""
    import queue

    idle_since = None
    while True:
        try:
            return finished.get(timeout=0.5)
        except queue.Empty:
            for future in futures:
                if future.done() and future.exception() is not None:
                    raise future.exception()  # type: ignore[misc]
            if all(future.done() for future in futures):
                idle_since = idle_since or time.perf_counter()
                if time.perf_counter() - idle_since > patience_s:
                    raise RuntimeError("every labeling process returned, but some shards "
                                       "never arrived; rerun with --resume to label them")


def _drain_while(shutdown: Any, finished: Any, write: Any) -> None:
    """Run `shutdown()` while a thread writes whatever still arrives on `finished`."""
    import queue
    import threading

    done = threading.Event()

    def drain() -> None:
        while not done.is_set():
            try:
                write(finished.get(timeout=0.2))
            except queue.Empty:
                continue
            except Exception as e:  # the run is already failing: report, keep draining
                log.warning("could not write a shard while stopping: %s", e)

    thread = threading.Thread(target=drain, name="label-drain", daemon=True)
    thread.start()
    try:
        shutdown()
    finally:
        done.set()
        thread.join()


def summary_json(summary: LabelSummary) -> str:
    """The summary as one json object (benchmarks and logs)."""
    data = asdict(summary)
    data.pop("shard_marks")
    data.pop("labelers")
    data.update(images_per_s=summary.images_per_s, crops_per_s=summary.crops_per_s,
                steady_crops_per_s=summary.steady_crops_per_s())
    return json.dumps(data)
