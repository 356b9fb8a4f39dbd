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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from posemum_deploy.errors import BackendUnavailableError
from posemum_deploy.label.worker import LabelerInfo, ShardResult, ShardWorker, WorkerSpec
from posemum_deploy.label.writer import EncodedShard

if TYPE_CHECKING:
    from posemum_deploy.label.runner import ShardJob

log = logging.getLogger(__name__)


class ShardActor:
    """Holds one ShardWorker; labels whole shards (`batch_size=1` rows of map_batches)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.worker = ShardWorker(spec)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = [self.worker.label(int(index), json.loads(files))
                   for index, files in zip(batch["shard"], batch["files"], strict=True)]
        return {"shard": np.asarray([r.index for r in results]),
                "text": np.array([r.shard.text for r in results], dtype=object),
                "counts": np.asarray([(r.shard.images, r.shard.errors, r.shard.persons)
                                      for r in results]),
                "times": np.array([json.dumps(r.seconds) for r in results], dtype=object),
                "crops": np.asarray([r.crops for r in results]),
                # where and when each was labeled: per-labeler timings and steady rates
                "finished_at": np.asarray([r.finished_at for r in results], dtype=np.float64),
                "labeler": np.array([json.dumps(r.labeler) for r in results], dtype=object),
                "cpu_s": np.asarray([r.cpu_s for r in results], dtype=np.float64)}


def _init_ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError as e:
        raise BackendUnavailableError("--engine ray needs Ray Data: pip install 'posemum[ray]' "
                                      "(or 'ray[data]')") from e
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)  # RAY_ADDRESS → that cluster
    return ray


def run_ray(spec: WorkerSpec, todo: list[ShardJob], write: Callable[[ShardResult], None],
            actors: int | None = None) -> None:
    """Label `todo` shards on Ray actors; the driver calls `write` on each shard as it
    arrives (the runner's `record_shard`: store, summary, progress)."""
    if not todo:
        return
    ray = _init_ray()
    gpus = int(ray.cluster_resources().get("GPU", 0))
    cpus = int(ray.cluster_resources().get("CPU", 1))
    n = min(len(todo), actors or (gpus or max(1, cpus // 2)))
    # A GPU actor also reserves CPUs for its decode threads, so decode keeps up with it.
    per_actor = {"num_gpus": 1, "num_cpus": spec.workers} if gpus else {"num_cpus": 1}
    log.info("ray: %d %s actor(s) for %d shard(s)", n, "GPU" if gpus else "CPU", len(todo))
    ds = ray.data.from_items([{"shard": job.index, "files": json.dumps(job.files)} for job in todo])
    ds = ds.map_batches(ShardActor, batch_size=1, batch_format="numpy", concurrency=n,
                        fn_constructor_kwargs={"spec": spec}, **per_actor)
    for row in ds.iter_rows():
        images, errors, persons = (int(v) for v in row["counts"])
        shard = EncodedShard(str(row["text"]), images, errors, persons)
        result = ShardResult(int(row["shard"]), shard, json.loads(row["times"]), int(row["crops"]),
                             float(row["finished_at"]), LabelerInfo(*json.loads(row["labeler"])),
                             float(row["cpu_s"]))
        write(result)
