"""`--engine ray`: shards labeled by Ray Data actors that each hold the model.

Items are whole shards (`ray.data.from_items`, one row per unfinished shard) and
`map_batches` runs `ShardActor` with `concurrency=N` (one GPU per actor when the cluster
has GPUs, one CPU otherwise). Each actor labels a shard with the same `ShardLabeler`
and decode threads as the local engine, so batches, and therefore numbers, match the
local engine exactly; the driver writes the shards through the same `ShardStore`, so
local, cluster and resumed runs mix. `ray.init()` picks up `RAY_ADDRESS` for a cluster;
the model file and the image folder must be visible at the same paths on every node.
Ray is imported only here, and only when this engine runs.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from posemum_deploy.errors import BackendUnavailableError
from posemum_deploy.inference.backends import load_backend
from posemum_deploy.inference.pipeline import PoseEstimator
from posemum_deploy.label.boxes import BoxSource
from posemum_deploy.label.shard import ShardLabeler, StageTimes, prefetch, prepare_image

if TYPE_CHECKING:
    from posemum_deploy.label.runner import (LabelProgress, LabelSettings, LabelSummary,
                                             ShardJob)
    from posemum_deploy.label.writer import ShardStore

log = logging.getLogger(__name__)


class ShardActor:
    """Holds one backend; labels whole shards (`batch_size=1` rows of map_batches)."""

    def __init__(self, model: str, root: str, boxes: BoxSource, flip: bool, dark: bool,
                 oks_nms: float | None, backend: str, batch_size: int, workers: int,
                 backend_options: dict[str, Any]) -> None:
        be = load_backend(model, backend, **backend_options)
        self.estimator = PoseEstimator(be, batch_size=batch_size, flip=flip, dark=dark)
        self.root, self.boxes, self.nms, self.workers = Path(root), boxes, oks_nms, workers

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        payloads, timings, crops = [], [], []
        input_hw = tuple(self.estimator.meta.input_hw)
        for files_json in batch["files"]:
            times = StageTimes()
            labeler = ShardLabeler(self.estimator, self.nms, times)
            counted = [0]
            stream = prefetch(lambda rel: prepare_image(self.root, rel, self.boxes, input_hw, times),
                              json.loads(files_json), self.workers,
                              max(4 * self.workers, 2 * self.estimator.batch_size), times)
            records = labeler.label(stream, lambda n, _: counted.__setitem__(0, counted[0] + n))
            payloads.append(json.dumps(records))
            timings.append(json.dumps(times.seconds))
            crops.append(counted[0])
        return {"shard": np.asarray(batch["shard"]), "records": np.array(payloads, dtype=object),
                "times": np.array(timings, dtype=object), "crops": np.asarray(crops)}


def _init_ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError as e:
        raise BackendUnavailableError("--engine ray needs Ray Data: pip install 'posemum[ray]' "
                                      "(or 'ray[data]')") from e
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)  # RAY_ADDRESS → that cluster
    return ray


def run_ray(model: Path, root: Path, todo: list["ShardJob"], settings: "LabelSettings",
            boxes: BoxSource, store: "ShardStore", summary: "LabelSummary", times: StageTimes,
            progress: "LabelProgress | None", backend: str = "auto", batch_size: int = 64,
            actors: int | None = None, backend_options: dict[str, Any] | None = None,
            workers: int = 2) -> None:
    """Label `todo` shards on Ray actors; the driver writes each shard as it arrives."""
    if not todo:
        return
    ray = _init_ray()
    gpus = int(ray.cluster_resources().get("GPU", 0))
    cpus = int(ray.cluster_resources().get("CPU", 1))
    n = min(len(todo), actors or (gpus or max(1, cpus // 2)))
    # A GPU actor also reserves CPUs for its decode threads, so decode keeps up with it.
    per_actor = {"num_gpus": 1, "num_cpus": workers} if gpus else {"num_cpus": 1}
    log.info("ray: %d %s actor(s) for %d shard(s)", n, "GPU" if gpus else "CPU", len(todo))
    ds = ray.data.from_items([{"shard": job.index, "files": json.dumps(job.files)} for job in todo])
    ds = ds.map_batches(
        ShardActor, batch_size=1, batch_format="numpy", concurrency=n, **per_actor,
        fn_constructor_kwargs=dict(
            model=str(model.resolve()), root=str(root.resolve()), boxes=boxes,
            flip=settings.flip, dark=settings.dark, oks_nms=settings.oks_nms, backend=backend,
            batch_size=batch_size, workers=workers, backend_options=backend_options or {}))
    for row in ds.iter_rows():
        records = json.loads(row["records"])
        entry = store.write_shard(int(row["shard"]), records)
        times.merge(json.loads(row["times"]))
        crops = int(row["crops"])
        summary.images += entry["images"]
        summary.persons += entry["persons"]
        summary.skipped += entry["errors"]
        summary.crops += crops
        summary.shards_written += 1
        if progress:
            progress.advance(entry["images"], crops, entry["errors"])
