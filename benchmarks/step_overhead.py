"""Time per training step: pose-mum-plus vs affine-s at the same batch sizes, one run.

Both presets run the real SemiSupervisedStep (teacher forward on the weak view, strong
view, one student forward/backward over labeled + unlabeled, Adam, teacher update) on
in-memory random crops, so data loading is out of the picture. Steps alternate between
the two presets, so a busy machine slows both alike; the median of each is reported.

    python benchmarks/step_overhead.py                      # CPU-sized default
    python benchmarks/step_overhead.py --device cuda --input 256x192 --batch 32
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import cast

import torch

from posemum_deploy.models.simple_baseline import build_model
from posemum_deploy.training import distributed as ddp
from posemum_deploy.training.batch_streams import UnlabeledStream
from posemum_deploy.training.config import TrainConfig
from posemum_deploy.training.optimizer import make_adam
from posemum_deploy.training.presets import apply_preset
from posemum_deploy.training.ssl_step import SemiSupervisedStep, resolve_decay
from posemum_deploy.training.teachers import Teacher, build_teacher
from posemum_deploy.training.trainer import autocast_dtype


class RandomStream:
    """Stands in for the unlabeled loader: the same uint8 batch every time."""

    def __init__(self, batch: int, hw: tuple[int, int]) -> None:
        g = torch.Generator().manual_seed(1)
        self.batch = {"image": torch.randint(0, 256, (batch, 3, *hw), generator=g,
                                             dtype=torch.uint8)}

    def __len__(self) -> int:
        return 1

    def set_epoch(self, epoch: int) -> None:
        pass

    def next(self) -> dict[str, torch.Tensor]:
        return self.batch


def make_step(preset: str, args: argparse.Namespace, device: torch.device) -> SemiSupervisedStep:
    cfg = apply_preset(TrainConfig(), preset)
    cfg.data.input_hw = args.input
    cfg.ssl.unlabeled_batch_size = args.batch
    cfg.ssl.tiles = args.tiles
    # channels_last stays at the config's default (on), on the CPU too: as `train` runs
    if device.type == "cuda":  # as the trainer does
        torch.backends.cudnn.benchmark = cfg.runtime.cudnn_benchmark
    torch.manual_seed(0)
    model = build_model(args.backbone).to(device)
    if cfg.runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_adam(model.parameters(), 1e-3, device)
    teacher = build_teacher(cfg.ssl.teacher, model, resolve_decay(cfg))
    assert isinstance(teacher, Teacher)  # no partner given: a dual teacher raises ConfigError
    teacher.to(device)
    amp = autocast_dtype(args.precision, device)
    # RandomStream is a duck-typed stand-in: the step uses only len/set_epoch/next of its stream
    stream = cast(UnlabeledStream, RandomStream(args.batch, args.input))
    return SemiSupervisedStep(cfg, model, optimizer, device, amp, teacher, stream, ddp.DistEnv())


def labeled_batch(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    h, w = args.input[0] // 4, args.input[1] // 4
    return {"image": torch.randint(0, 256, (args.batch, 3, *args.input), generator=g,
                                   dtype=torch.uint8),
            "target": torch.rand(args.batch, 17, h, w, generator=g),
            "target_weight": torch.ones(args.batch, 17)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--input", default="128x96", type=lambda s: tuple(int(v) for v in s.split("x")))
    p.add_argument("--tiles", default="4x3", type=lambda s: tuple(int(v) for v in s.split("x")))
    p.add_argument("--batch", type=int, default=8, help="labeled and unlabeled batch size each")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()
    device = torch.device(args.device)
    steps = {name: make_step(name, args, device) for name in ("affine-s", "pose-mum-plus")}
    batch = labeled_batch(args)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(args.warmup + args.steps):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            step(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["affine-s"])
    print(f"device {device}, input {args.input[0]}x{args.input[1]}, batch {args.batch}+"
          f"{args.batch}, {args.backbone}, {args.precision}, {args.steps} steps each (median)")
    print(f"{'preset':<15}{'s/step':>10}{'ratio':>8}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:<15}{med:>10.3f}{med / base:>8.3f}")


if __name__ == "__main__":
    main()
