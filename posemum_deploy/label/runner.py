"""`label_folder`: pseudo-label every image under a folder into resumable JSONL shards.

The image list is `list_images` (recursive, sorted), cut into fixed shards; the local
engine streams the unfinished shards' images through decode threads into one batched
estimator, `processes.run_processes` (`--processes N`) and `ray_engine.run_ray` hand
whole shards to model-holding labelers and call back with each finished one. All write
through the same `ShardStore`, so a local run, a cluster run and a resumed run agree shard
for shard, and a run with other settings (`LabelSettings`) refuses to continue someone
else's output; `RunSettings` (backend, batch, engine, processes...) may change freely.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from posemum_deploy.artifacts import sha256_file
from posemum_deploy.data.images import IMAGE_SUFFIXES, list_images
from posemum_deploy.data.jpeg_decoders import check_jpeg_decoder
from posemum_deploy.errors import ArtifactError, ConfigError, ImageError
from posemum_deploy.inference.backends import Backend, check_backend_opens
from posemum_deploy.inference.tta import parse_tta
from posemum_deploy.label.boxes import BoxSource, TableBoxes, parse_box_source
from posemum_deploy.label.processes import run_processes
from posemum_deploy.label.shard import StageTimes
from posemum_deploy.label.summary import LabelProgress, LabelSummary
from posemum_deploy.label.worker import ShardResult, ShardWorker, WorkerSpec
from posemum_deploy.label.writer import ShardStore
from posemum_deploy.system import usable_cpus

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
    tta: str = "none"  # views of every person: "flip", "scales=0.8,1.0,1.2", ... (--tta)
    ensemble: list[str] = field(default_factory=list)  # further teachers (--model)


@dataclass
class RunSettings:
    """How a run computes its labels: none of these is recorded in the manifest, so a
    resume may change them (the shards do not depend on them)."""

    backend: str | Backend = "auto"  # a `load_backend` kind, or an open Backend for `model`
    backend_options: dict[str, Any] = field(default_factory=dict)  # load_backend keywords
    batch_size: int = 64  # crops per inference call
    workers: int | None = None  # decode threads (default min(4, CPUs))
    resume: bool = False  # continue a run in `out_dir` (its settings must match)
    engine: str = "local"  # "local" | "ray"
    processes: int = 1  # local engine: spawned labelers, each loading `backend` (a name)
    shards_per_task: int | None = None  # a labeler's run of shards (default: process_tasks)
    gpus: list[str] | None = None  # CUDA_VISIBLE_DEVICES entries for the labelers (default all)
    ray_actors: int | None = None  # --engine ray: model actors (default one per GPU, else CPUs/2)
    pipeline: bool = True  # ORT/OpenVINO: inference on its own thread; False: in turn (same shards)


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
    skip = ("boxes_ann", "shard_size", "tta", "ensemble")
    chosen = {k: v for k, v in asdict(settings).items() if k not in skip}
    chosen.update(boxes=boxes.identity())
    tta = parse_tta(settings.tta)
    if not tta.trivial:  # (absent when off: runs from before TTA resume as they were)
        chosen["tta"] = str(tta)
    model: dict[str, Any] = {"file": model_path.name, "sha256": sha256_file(model_path)}
    if settings.ensemble:
        model["ensemble"] = [{"file": Path(m).name, "sha256": sha256_file(Path(m))}
                             for m in settings.ensemble]
    return {"model": model,
            "settings": chosen,
            "images": {"count": len(files), "sha256": listing, "shard_size": settings.shard_size}}


def check_run_options(settings: LabelSettings, run: RunSettings) -> None:
    """Refuse option combinations that cannot work, before any file is read."""
    engine, processes, gpus = run.engine, run.processes, run.gpus
    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine!r}: choose {' or '.join(ENGINES)}")
    if settings.decode not in DECODERS:
        raise ConfigError(f"--decode {settings.decode!r}: choose {' or '.join(DECODERS)}")
    if processes < 1 or (processes > 1 and (engine != "local" or not isinstance(run.backend, str))):
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
    tta = parse_tta(settings.tta)
    if settings.decode == "device" and (settings.ensemble or not tta.trivial):
        raise ConfigError("--tta / --model ensembles crop every view on the host; use "
                          "--decode host (or --flip alone with --decode device)")
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
                 settings: LabelSettings | None = None, run: RunSettings | None = None,
                 progress: LabelProgress | None = None) -> LabelSummary:
    """Pseudo-label every image under `images_dir` into `out_dir` (see module docstring).

    `settings` decide the output (recorded in the manifest, checked on resume); `run`
    decides how it is computed: backend, batch, engine, processes, resume (see
    `RunSettings`). The shards do not depend on `run`.
    """
    settings = settings or LabelSettings()
    run = run or RunSettings()
    backend = run.backend
    check_run_options(settings, run)
    root, model = Path(images_dir), Path(model)
    files = checked_inputs(model, root, backend)
    for member in map(Path, settings.ensemble):
        if not member.is_file():
            raise ArtifactError(f"--model {member}: model file not found; pass an existing "
                                "checkpoint or exported model for each ensemble member")
        if isinstance(backend, str) and backend != "auto":
            check_backend_opens(backend, member)
    boxes = parse_box_source(settings.boxes, settings.box_score_threshold,
                             settings.max_people, settings.boxes_ann)
    if isinstance(boxes, TableBoxes):
        boxes.check_covers(files)
    # Checked before the model loads, so a refused resume fails in a second.
    store = ShardStore(out_dir, run_identity(model, files, settings, boxes), run.resume)
    spec = WorkerSpec(model=str(model.resolve()), root=str(root.resolve()), boxes=boxes,
                      backend=backend if isinstance(backend, str) else "auto",
                      backend_options=dict(run.backend_options or {}),
                      batch_size=run.batch_size, workers=run.workers or min(4, usable_cpus()),
                      flip=settings.flip, dark=settings.dark, oks_nms=settings.oks_nms,
                      decode=settings.decode, jpeg_decoder=settings.jpeg_decoder,
                      tta=str(parse_tta(settings.tta)),
                      ensemble=tuple(str(Path(m).resolve()) for m in settings.ensemble),
                      pipeline=run.pipeline)
    # One process loads its model here, before progress and the clock start (rates count
    # labeling only); spawned labelers and Ray actors load their own.
    worker = (ShardWorker(spec, None if isinstance(backend, str) else backend)
              if run.engine == "local" and run.processes == 1 else None)
    jobs = plan_shards(files, settings.shard_size)
    todo = [job for job in jobs if not store.is_done(job.index)]
    summary = LabelSummary(shards_total=len(jobs), shards_resumed=len(jobs) - len(todo))
    store.log.start(model=model.name, images=len(files), shards=len(jobs), todo=len(todo),
                    engine=run.engine, processes=run.processes, batch_size=run.batch_size,
                    backend=backend if isinstance(backend, str) else backend.name)
    if progress:
        progress.start(len(files), len(files) - sum(len(j.files) for j in todo))
    times = StageTimes()

    def write(result: ShardResult) -> None:
        record_shard(result, store, summary, times, progress)

    t0 = time.perf_counter()
    if run.engine == "ray":
        from posemum_deploy.label.ray_engine import run_ray

        run_ray(spec, todo, write, actors=run.ray_actors)
    elif worker is None:
        run_processes(spec, todo, write, run.processes, run.shards_per_task, run.gpus)
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
