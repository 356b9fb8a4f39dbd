"""gpu_bench's training section: the pose-mum-plus step against a plain semi-supervised
one (latency, back-to-back rate, GPU kernel time) and the crop rate of the training loader."""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

Step = Callable[[dict[str, torch.Tensor]], object]  # a training step called on a labeled batch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def kernel_time_per_step(step: Step, batch: dict[str, torch.Tensor], device: torch.device,
                         n: int = 5) -> tuple[float, float]:
    """(GPU kernel ms, kernels launched) per step, from the profiler's CUDA activity.

    Set against the step's wall time this says whether the GPU or the host (Python
    launching kernels) bounds the step. NaN where no CUDA activity is recorded.
    """
    if device.type != "cuda":
        return float("nan"), float("nan")
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    sync(device)
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(n):
                step(batch)
            sync(device)
        kernels = [e for e in prof.key_averages() if e.device_type == DeviceType.CUDA]
    except (RuntimeError, AttributeError) as e:  # a profiler that cannot trace: keep the timings
        print(f"profiler unavailable ({e}); kernel time not measured", file=sys.stderr)
        return float("nan"), float("nan")
    busy_us = sum(e.self_device_time_total for e in kernels)
    return busy_us / n / 1e3, sum(e.count for e in kernels) / n


def time_steps(steps: Mapping[str, Step], batch: dict[str, torch.Tensor], device: torch.device,
               n: int) -> dict[str, tuple[float, float]]:
    """Per preset: (median ms of one step with a sync on each side, ms per step of `n`
    steps run back to back with one sync at the end). The first is the step's latency;
    the second is what training runs at, where the host queues the next step's kernels
    while the GPU still runs the last one's. Presets alternate so drift hits all alike."""
    latency: dict[str, list[float]] = {p: [] for p in steps}
    for i in range(n + 3):
        for preset, step in steps.items():
            sync(device)
            t0 = time.perf_counter()
            step(batch)
            sync(device)
            if i >= 3:
                latency[preset].append(time.perf_counter() - t0)
    pipelined: dict[str, list[float]] = {p: [] for p in steps}
    for _ in range(3):  # median of three windows: one GC pause or allocator growth is not the rate
        for preset, step in steps.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(n):
                step(batch)
            sync(device)
            pipelined[preset].append((time.perf_counter() - t0) / n)
    return {p: (statistics.median(latency[p]) * 1e3, statistics.median(pipelined[p]) * 1e3)
            for p in steps}


def loader_crops_per_s(ann: Path, batches: int, decode: str = "host",
                       device: torch.device | None = None) -> float:
    """Crops/s the labeled training loader delivers: `host`, workers decode and crop
    (cv2 decode + affine + heatmaps); `device`, workers read bytes and make targets and
    the GPU decodes and crops each batch (`data.decode: device`), synced at the end."""
    from torch.utils.data import DataLoader

    from posemum_deploy.data.codec import HeatmapCodec
    from posemum_deploy.data.datasets import TopDownDataset, load_instances
    from posemum_deploy.data.transforms import AffineAugment
    from posemum_deploy.training.device_batches import (
        batch_crops,
        encoded_items,
        loader_collate,
    )

    ds = TopDownDataset(load_instances(ann, ann.parent / "images"),
                        HeatmapCodec((256, 192), (64, 48)), AffineAugment(),
                        encoded=encoded_items(decode))
    loader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=os.cpu_count() or 1,
                        drop_last=True, persistent_workers=True, collate_fn=loader_collate(decode))
    crops = batch_crops(decode, device or torch.device("cpu"), (256, 192))
    it = iter(loader)
    next(it)
    t0, n = time.perf_counter(), 0
    for _ in range(batches):
        try:
            batch = next(it)
        except StopIteration:  # small sets: start another epoch
            it = iter(loader)
            batch = next(it)
        if crops is not None:
            batch = crops(batch)
        n += len(batch["image"])
    if device is not None:
        sync(device)
    return n / (time.perf_counter() - t0)


def training_rows(ann: Path, device: torch.device, args: argparse.Namespace) -> list[dict]:
    """pose-mum-plus step vs a plain semi-supervised step (fused Adam, teacher forward
    from a CUDA graph), the plain step once with PyTorch's default multi-tensor Adam and
    once with an eager teacher, GPU kernel time per step, and the loader's crop rate."""
    from step_overhead import labeled_batch, make_step

    ns = argparse.Namespace(input=(256, 192), tiles=(4, 3), batch=32, backbone="resnet18",
                            precision="bf16")
    steps = {p: make_step(p, ns, device) for p in ("eman", "pose-mum-plus")}
    steps["eman, default Adam"] = make_step("eman", ns, device)
    plain = steps["eman, default Adam"]
    plain.optimizer = torch.optim.Adam(plain.model.parameters(), lr=1e-3)
    steps["eman, eager teacher"] = make_step("eman", ns, device)
    steps["eman, eager teacher"]._teacher_graph = None
    lab = labeled_batch(ns)
    if device.type == "cuda":  # as the loader hands batches over (pin_memory=True)
        lab = {k: v.pin_memory() for k, v in lab.items()}
    timed = time_steps(steps, lab, device, args.train_steps)
    rows = []
    for preset, (latency, pipelined) in timed.items():
        gpu_ms, kernels = kernel_time_per_step(steps[preset], lab, device)
        rows += [{"what": f"{preset} step, ms (synced)", "value": latency},
                 {"what": f"{preset} step, ms (back to back)", "value": pipelined},
                 {"what": f"{preset} GPU kernel ms / step", "value": gpu_ms},
                 {"what": f"{preset} kernels / step", "value": kernels}]
    plus, plain_ms = timed["pose-mum-plus"][1], timed["eman"][1]
    loader_rate = loader_crops_per_s(ann, args.loader_batches)
    device_rate = loader_crops_per_s(ann, args.loader_batches, "device", device) \
        if device.type == "cuda" else None
    need = 64 / (plus / 1e3)  # labeled + unlabeled crops per step
    rows += [{"what": "pose-mum-plus / plain (back to back)", "value": plus / plain_ms},
             {"what": "crops a pose-mum-plus step consumes /s", "value": need},
             {"what": f"loader crops/s ({os.cpu_count()} workers)", "value": loader_rate},
             {"what": "loader / step need", "value": loader_rate / need}]
    if device_rate is not None:
        rows += [{"what": f"loader crops/s, --decode device ({os.cpu_count()} workers)",
                  "value": device_rate},
                 {"what": "loader (--decode device) / step need", "value": device_rate / need}]
    return rows
