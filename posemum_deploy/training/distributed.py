"""Data-parallel training under torchrun: process group, samplers, DDP, buffer sync.

`torchrun --nproc_per_node N -m posemum_deploy.cli train ...` sets RANK, WORLD_SIZE and
LOCAL_RANK; `init_distributed` joins the group (NCCL on GPUs, gloo on CPU). Without those
variables everything here is a no-op and training runs in one process.

Teachers must stay identical across ranks. Parameters are (DDP all-reduces gradients and
every rank takes the same Adam step), but BN running statistics are updated from each
rank's own batch, so `sync_buffers` broadcasts rank 0's buffers — the same thing DDP does
at the start of every forward — before the teacher averages them (EMAN, Single).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler, RandomSampler, Sampler

if TYPE_CHECKING:
    from posemum_deploy.data.datasets import TopDownDataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job; rank 0 alone writes checkpoints and logs."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # True when init_distributed created the process group

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> DistEnv:
    """The running job's DistEnv (single process when no group is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size(),
                       int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return DistEnv()


def init_distributed(device: torch.device) -> DistEnv:
    """Join the torchrun process group if WORLD_SIZE > 1 (NCCL for CUDA, gloo for CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return DistEnv()
    if dist.is_initialized():
        return current()
    backend = "nccl" if device.type == "cuda" else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":  # NCCL binds each rank to the current GPU: choose it first
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend)
    env = DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)
    log.info("rank %d/%d joined (%s)", env.rank, env.world_size, backend)
    return env


def local_device(device: torch.device, env: DistEnv) -> torch.device:
    """One GPU per process: cuda → cuda:LOCAL_RANK under torchrun."""
    if env.enabled and device.type == "cuda":
        torch.cuda.set_device(env.local_rank)
        return torch.device("cuda", env.local_rank)
    return device


def make_sampler(dataset: TopDownDataset, env: DistEnv, seed: int) -> Sampler[int]:
    """Shuffling sampler: each rank gets its own shard (DistributedSampler) under DDP."""
    if env.enabled:
        return DistributedSampler(dataset, env.world_size, env.rank, shuffle=True, seed=seed,
                                  drop_last=True)
    return RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))


def set_sampler_epoch(sampler: Iterable[Any], seed: int, epoch: int) -> None:
    """Reshuffle deterministically per (seed, epoch), so a resumed run sees the same order
    (a loader's sampler of any other kind is left as it is)."""
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    elif isinstance(sampler, RandomSampler) and sampler.generator is not None:
        sampler.generator.manual_seed(seed * 1000 + epoch)


def wrap_model(model: nn.Module, env: DistEnv, device: torch.device) -> nn.Module:
    """DistributedDataParallel around the student when running under torchrun."""
    if not env.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def sync_buffers(module: nn.Module, env: DistEnv, src: int = 0) -> None:
    """Broadcast rank `src`'s buffers (BN running stats) so every rank holds the same."""
    if not env.enabled:
        return
    bufs = [b for b in module.buffers() if b.is_floating_point()]  # counters agree already
    if not bufs:
        return
    flat = torch.cat([b.reshape(-1) for b in bufs])  # one broadcast instead of hundreds
    dist.broadcast(flat, src)
    torch._foreach_copy_(bufs, [v.view_as(b) for v, b in
                                zip(flat.split([b.numel() for b in bufs]), bufs, strict=True)])


def union_across_ranks(values: set[str], env: DistEnv) -> set[str]:
    """Every rank's `values` together (a collective: all ranks must call it)."""
    if not env.enabled:
        return set(values)
    gathered: list[set[str] | None] = [None] * env.world_size
    dist.all_gather_object(gathered, values)
    return set().union(*(g or set() for g in gathered))


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def shutdown(env: DistEnv) -> None:
    """Leave the process group if this run created it."""
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()
