"""Semi-supervised benchmark on synthetic people: does Pose-MUM+ beat supervised here?

Data (posemum_deploy.data.synthetic.generate_dataset): a train set whose first
`--labeled` person instances are the labeled split (the paper's "first N" protocol) and
whose every instance is unlabeled data (labels ignored), plus a separate val set.
Per seed, one supervised warm-up gives every preset the same starting student (a random
teacher labels nothing useful, and this budget is far from the paper's 30 epochs); then
each preset trains `--steps` more steps with one shared config (the paper's lr drops at
2/3 and 5/6 of them) and is evaluated (COCO keypoint AP, GT boxes; the teacher where the
preset has one). AP = mean over seeds.

The val set is large (1000 images, ~2,400 people) because its sampling noise is
paired-difference noise here: rescoring six seeds' checkpoints on 1000 instead of 100
images cut the per-seed spread of the pose-mum-plus - supervised gap from 1.9 to 1.0 AP.

The shared config is the demo's recipe (ResNet-18, 128x96, narrow head, bf16 autocast
on CPUs that have it, decoded images cached in memory), so the warm-up already scores
a useful AP and the teacher's pseudo-labels carry signal.

    python benchmarks/ssl_synthetic.py                 # sized for ≤45 min on 2 free cores
                                                       # (2 seeds side by side, 1 thread each)
    python benchmarks/ssl_synthetic.py --steps 4 --warmup-steps 4 --seeds 1 \
        --train-images 20 --val-images 10              # smoke run
    python benchmarks/ssl_synthetic.py --presets supervised pose-mum-plus --clamp-targets
                                                       # + pose-mum-plus+raw, paired gaps

`--clamp-targets` adds a twin of each semi-supervised preset trained with the other setting
of `ssl.clamp_targets` (the teacher's heatmaps clamped to [0, 1] before the unlabeled
loss) from the same warm-up: row and folder `PRESET+clamp` for a preset that trains raw
heatmaps, `PRESET+raw` for one that clamps (pose-mum-plus). Clamping stopped pose-mum-plus
blowing up from scratch in the 64×64 rounds benchmark (docs/training.md); this measures
what it costs or gives where the training is stable.
"""
from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from posemum_deploy.data.synthetic import generate_dataset
from posemum_deploy.system import usable_cpus
from posemum_deploy.training.config import SSLConfig, TrainConfig
from posemum_deploy.training.presets import PRESETS, apply_preset
from posemum_deploy.training.trainer import train

COMPARED = ("supervised", "affine-s", "mum", "pose-mum", "pose-mum-plus")
# The targets (>= 3 and >= 0 points) and the gaps that explain them.
GAPS = (("pose-mum-plus", "supervised"), ("pose-mum", "mum"),
        ("pose-mum-plus", "pose-mum"), ("mum", "supervised"))
TWINS = {"+clamp": True, "+raw": False}  # row suffix → ssl.clamp_targets of the twin


def rows(args: argparse.Namespace) -> list[str]:
    """The rows a seed trains: the presets, then (--clamp-targets) the twin of each one
    that has a teacher, with the other clamping."""
    twins = []
    for preset in args.presets if getattr(args, "clamp_targets", False) else ():
        ssl = apply_preset(TrainConfig(), preset).ssl
        if ssl.teacher != "none":
            twins.append(preset + ("+raw" if ssl.clamp_targets else "+clamp"))
    return list(args.presets) + twins


def preset_of(row: str) -> tuple[str, bool | None]:
    """A row's preset and its twin's clamp (None: the preset's own)."""
    preset, plus, variant = row.partition("+")
    return preset, TWINS[plus + variant] if plus else None


def gaps(results: dict[str, list[float]]) -> list[tuple[str, str]]:
    """The paired gaps to print: the targets' where both rows ran, then each twin against
    its preset and against supervised."""
    pairs = [(a, b) for a, b in GAPS if a in results and b in results]
    for row in (r for r in results if preset_of(r)[1] is not None):
        pairs += [(row, b) for b in (preset_of(row)[0], "supervised") if b in results]
    return pairs


def synthetic_set(folder: Path, images: int, seed: int) -> Path:
    """FOLDER/annotations.json of `images` synthetic images, generated once."""
    ann = folder / "annotations.json"
    if not ann.is_file():
        generate_dataset(folder, images, seed=seed, max_people=4)
    return ann


def make_data(root: Path, train_images: int, val_images: int) -> tuple[Path, Path]:
    """The train and val sets, made once per size (a folder per size: a run with another
    --val-images never scores on a set left by an earlier run)."""
    return (synthetic_set(root / f"train{train_images}", train_images, seed=11),
            synthetic_set(root / f"val{val_images}", val_images, seed=12))


def shared_config(args: argparse.Namespace, preset: str, seed: int, out: Path,
                  train_json: Path, val_json: Path) -> TrainConfig:
    """One small config for every preset; only the preset's SSL switches differ."""
    cfg = apply_preset(TrainConfig(), preset)
    cfg.out = str(out)
    cfg.data.labeled, cfg.data.images = str(train_json), str(train_json.parent / "images")
    cfg.data.labeled_count = args.labeled
    cfg.data.val_ann, cfg.data.val_images = str(val_json), str(val_json.parent / "images")
    cfg.data.input_hw, cfg.data.workers, cfg.data.cache_images = args.input, args.workers, True
    cfg.data.rotation_factor = 15.0
    cfg.model.deconv_channels = args.deconv_channels
    cfg.ssl.unlabeled, cfg.ssl.unlabeled_images = cfg.data.labeled, cfg.data.images
    cfg.ssl.unlabeled_batch_size, cfg.ssl.tiles = args.batch, args.tiles
    cfg.ssl.mix_stages = tuple(args.mix_stages)
    cfg.optim.batch_size, cfg.optim.lr = args.batch, args.lr
    set_schedule(cfg, args.schedule, args.steps)
    cfg.runtime.seed, cfg.runtime.device, cfg.runtime.log_every = seed, args.device, 10
    return cfg


def set_schedule(cfg: TrainConfig, schedule: str, steps: int) -> None:
    """`steps` steps under `schedule`, scored once at the end.

    paper: the paper's step schedule compressed to `steps` (lr ×0.1 at 20/30 and again at
    25/30 of the steps; as 6 epochs with milestones 4 and 5). cosine: per-epoch cosine over
    3 epochs (lr 1, 0.75, 0.25 of the base; the older default, and the warm-up's).
    """
    epochs = {"paper": 6, "cosine": 3}[schedule]
    cfg.optim.schedule = "step" if schedule == "paper" else "cosine"
    cfg.optim.epochs, cfg.optim.steps_per_epoch = epochs, max(1, steps // epochs)
    cfg.optim.milestones, cfg.optim.gamma = (4, 5), 0.1
    cfg.runtime.val_every = epochs


def say(line: str) -> None:
    """One line in one write: lines from seeds trained side by side do not interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run_seed(args: argparse.Namespace, seed: int, train_json: Path,
             val_json: Path) -> dict[str, float]:
    """One seed: its supervised warm-up, then every preset from that start; AP per preset."""
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.out)
    warm = shared_config(args, "supervised", seed, root / f"warmup-s{seed}", train_json, val_json)
    set_schedule(warm, "cosine", args.warmup_steps)  # a start point, not a result
    warm.runtime.val_every = 0
    warm.optim.lr = 2 * args.lr
    t0 = time.perf_counter()
    train(warm)
    say(f"seed {seed}: warm-up {args.warmup_steps} steps in {time.perf_counter() - t0:.0f}s")
    aps: dict[str, float] = {}
    for row in rows(args):
        preset, clamp = preset_of(row)
        cfg = shared_config(args, preset, seed, root / f"{row}-s{seed}", train_json, val_json)
        if clamp is not None:
            cfg.ssl.clamp_targets = clamp
        cfg.ssl.init_from = str(root / f"warmup-s{seed}" / "checkpoints" / "last.pt")
        t0 = time.perf_counter()
        result = train(cfg)
        aps[row] = 100 * result.last_metrics.get("AP", float("nan"))
        say(f"seed {seed}: {row:<14} AP {aps[row]:6.2f}  ({time.perf_counter() - t0:.0f}s)")
    return aps


def run(args: argparse.Namespace) -> dict[str, list[float]]:
    """AP per preset, one value per seed, in seed order.

    With --jobs > 1 the seeds train side by side in spawned processes, --threads torch
    threads each. On this 2-core CPU two 1-thread processes do 1.27x the steps per second
    of one 2-thread process (a ResNet-18 step at batch 16+16 does not keep two threads
    busy), which is what buys the preset phase its steps within the 45 minutes."""
    root = Path(args.out)
    train_json, val_json = make_data(root / "data", args.train_images, args.val_images)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    jobs = max(1, min(args.jobs, len(seeds)))
    if jobs == 1:
        per_seed = [run_seed(args, seed, train_json, val_json) for seed in seeds]
    else:
        # spawn, not fork: a forked child inherits the parent's OpenMP pool state
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            per_seed = list(pool.map(run_seed, [args] * len(seeds), seeds,
                                     [train_json] * len(seeds), [val_json] * len(seeds)))
    return {row: [aps[row] for aps in per_seed] for row in rows(args)}


def print_table(results: dict[str, list[float]]) -> None:
    """AP per preset (mean and per seed), then each gap paired by seed (mean ± standard
    error): presets of one seed share the warm-up, so their differences are the signal."""
    print(f"{'preset':<20}{'AP (mean)':>10}  {'per seed':<24}paper AP (COCO 1K, R18)")
    for row, aps in results.items():
        seeds = " ".join(f"{a:.2f}" for a in aps)
        paper = PRESETS[preset_of(row)[0]].paper_ap
        print(f"{row:<20}{statistics.mean(aps):>10.2f}  {seeds:<24}{paper}")
    for a, b in gaps(results):
        diff = [x - y for x, y in zip(results[a], results[b], strict=True)]
        se = f" ± {statistics.stdev(diff) / len(diff) ** 0.5:.2f}" if len(diff) > 1 else ""
        print(f"{a} - {b}: {statistics.mean(diff):+.2f}{se}  "
              f"(per seed {' '.join(f'{g:+.2f}' for g in diff)})")


def main() -> None:
    hw = lambda s: tuple(int(v) for v in s.split("x"))  # noqa: E731
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench_ssl_synthetic")
    p.add_argument("--presets", nargs="+", default=list(COMPARED))
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--first-seed", type=int, default=0,
                   help="seeds first-seed .. first-seed+seeds-1 (more seeds for a closer look)")
    p.add_argument("--labeled", type=int, default=100, help="labeled person instances")
    p.add_argument("--train-images", type=int, default=600, help="every person is unlabeled data")
    p.add_argument("--val-images", type=int, default=1000,
                   help="~2.4 people each; 100 images left ±1.9 AP of per-seed noise on "
                        "the pose-mum-plus - supervised gap, 1000 ±1.0")
    p.add_argument("--input", type=hw, default=(128, 96))
    p.add_argument("--tiles", type=hw, default=(4, 3))
    p.add_argument("--mix-stages", nargs="+", default=list(SSLConfig.mix_stages),
                   help="stages after which Pose-MUM may mix features")
    p.add_argument("--deconv-channels", type=int, default=128)
    p.add_argument("--batch", type=int, default=16, help="labeled and unlabeled batch size each")
    p.add_argument("--lr", type=float, default=1e-3, help="preset phase; the warm-up uses 2x")
    p.add_argument("--warmup-steps", type=int, default=400)
    p.add_argument("--steps", type=int, default=600,
                   help="preset phase; 600 fits 45 min with the two seeds side by side on 2 "
                        "cores (500 did one seed after the other)")
    p.add_argument("--schedule", choices=("paper", "cosine"), default="paper",
                   help="preset phase lr schedule (paper: x0.1 at 2/3 and 5/6 of the steps)")
    p.add_argument("--clamp-targets", action="store_true",
                   help="also train each semi-supervised preset with the other setting of "
                        "clamped teacher heatmaps (rows PRESET+clamp / PRESET+raw, same warm-up)")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--jobs", type=int, default=0,
                   help="seeds trained side by side, each in its own process (0: one per "
                        "seed up to the usable CPUs on a CPU device, 1 on a GPU)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per job (0: usable CPUs / jobs)")
    args = p.parse_args()
    if not args.jobs:
        args.jobs = min(args.seeds, usable_cpus()) if args.device == "cpu" else 1
    if not args.threads:
        args.threads = max(1, usable_cpus() // min(args.jobs, args.seeds))
    t0 = time.perf_counter()
    results = run(args)
    print(f"\nsynthetic SSL, {args.labeled} labeled instances, {args.seeds} seed(s), "
          f"{args.steps} steps/preset after a {args.warmup_steps}-step supervised warm-up, "
          f"{time.perf_counter() - t0:.0f}s total")
    print_table(results)


if __name__ == "__main__":
    main()
