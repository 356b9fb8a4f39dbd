"""Score finished `ssl_synthetic.py` runs again on another (larger) synthetic val set.

Why: with one warm-up per seed, the presets of a seed differ by a point or two, the same
size as the sampling noise of a small val set. Rescoring the saved models on a larger,
independent val set shows how much of a gap was the val set and how much the training.
Each model is scored exactly as the trainer's end-of-run validation scored it (the run's
own config, the teacher where the preset has one); only the val set changes.

    python benchmarks/ssl_rescore.py runs/bench_ssl_synthetic --val-images 1000 --val-seed 13
"""
from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from ssl_synthetic import COMPARED, print_table, synthetic_set  # benchmarks/ is on sys.path when run

from posemum_deploy.models.checkpoint import load_model
from posemum_deploy.system import resolve_device
from posemum_deploy.training.config import TrainConfig
from posemum_deploy.training.trainer import validate

RUN_NAME = re.compile(r"^(?P<preset>.+)-s(?P<seed>\d+)$")


def finished_runs(roots: list[Path], presets: tuple[str, ...]) -> dict[str, dict[int, Path]]:
    """{preset: {seed: run folder}} for every `<preset>-s<seed>` run with a last.pt."""
    found: dict[str, dict[int, Path]] = {p: {} for p in presets}
    for root in roots:
        for run in sorted(root.iterdir()):
            m = RUN_NAME.match(run.name)
            if m and m["preset"] in found and (run / "checkpoints" / "last.pt").is_file():
                found[m["preset"]][int(m["seed"])] = run
    return found


def rescore(run: Path, val_ann: Path) -> float:
    """AP (points) of the run's final model on `val_ann`, by the trainer's validation."""
    cfg = TrainConfig.load(run / "config.yaml")
    cfg.data.val_ann, cfg.data.val_images = str(val_ann), str(val_ann.parent / "images")
    model, _ = load_model(run / "checkpoints" / "last.pt", weights="teacher")
    device = resolve_device(cfg.runtime.device)
    return 100 * validate(model.to(device), cfg, device)["AP"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="--out folders of ssl_synthetic.py")
    p.add_argument("--presets", nargs="+", default=list(COMPARED))
    p.add_argument("--val-images", type=int, default=1000)
    p.add_argument("--val-seed", type=int, default=13,
                   help="the benchmark's own val set is seed 12: 13 is an independent set")
    p.add_argument("--data", type=Path, default=Path("runs/ssl_rescore_data"))
    args = p.parse_args()
    val_ann = synthetic_set(args.data / f"val{args.val_images}_s{args.val_seed}",
                            args.val_images, args.val_seed)
    runs = finished_runs(args.runs, tuple(args.presets))
    seeds = sorted(set.intersection(*(set(r) for r in runs.values())))
    if not seeds:
        raise SystemExit(f"no seed has a finished run of every preset in {args.runs}")
    t0 = time.perf_counter()
    results: dict[str, list[float]] = {preset: [] for preset in args.presets}
    for seed in seeds:
        for preset in args.presets:
            ap = rescore(runs[preset][seed], val_ann)
            results[preset].append(ap)
            print(f"seed {seed}: {preset:<14} AP {ap:6.2f}  ({runs[preset][seed]})", flush=True)
    print(f"\nrescored on {args.val_images} val images (seed {args.val_seed}), seeds "
          f"{' '.join(map(str, seeds))}, {time.perf_counter() - t0:.0f}s")
    print_table(results)


if __name__ == "__main__":
    main()
