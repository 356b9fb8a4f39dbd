"""`--processes N`: the local engine's pool of spawned labelers, each holding its own model.

A GPU labels faster than one Python process can decode, crop and encode for it, so N
spawned processes (each a `ShardWorker` built by `init_process`) take consecutive runs
of shards and put every finished shard on a queue; the calling process hands each one to
`write` as it arrives. The contract with the runner is only that callback: this module
knows nothing of stores, summaries or progress, as `ray_engine` does not either.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from posemum_deploy.label.worker import ShardResult, WorkerSpec
from posemum_deploy.system import usable_cpus, visible_gpus

if TYPE_CHECKING:
    from posemum_deploy.label.runner import ShardJob

log = logging.getLogger(__name__)


def process_tasks(todo: list[ShardJob], processes: int, max_shards: int | None = None
                  ) -> list[list[ShardJob]]:
    """Consecutive runs of shards, one task each. A task is one decode stream (a stream
    stalls as it starts), so tasks are long: about four per labeler, which still evens
    out the end of the run, and at most `max_shards` shards (default 64)."""
    size = max(1, min(max_shards or 64, -(-len(todo) // (4 * processes))))
    return [todo[i:i + size] for i in range(0, len(todo), size)]


def run_processes(spec: WorkerSpec, todo: list[ShardJob], write: Callable[[ShardResult], None],
                  processes: int, max_shards: int | None = None,
                  gpus: list[str] | None = None) -> None:
    """`processes` spawned labelers (each with its own model, on the CPU or on one of
    `gpus`, round-robin) take runs of shards (`process_tasks`) and put every finished
    shard on a queue; this process calls `write` on each shard as it arrives."""
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
    try:
        futures = [pool.submit(label_in_process, [(j.index, j.files) for j in task])
                   for task in process_tasks(todo, processes, max_shards)]
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
                    raise future.exception() from None
            if all(future.done() for future in futures):
                idle_since = idle_since or time.perf_counter()
                if time.perf_counter() - idle_since > patience_s:
                    raise RuntimeError("every labeling process returned, but some shards "
                                       "never arrived; rerun with --resume to label them") from None


def _drain_while(shutdown: Callable[[], Any], finished: Any,
                 write: Callable[[ShardResult], None]) -> None:
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
