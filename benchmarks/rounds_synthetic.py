"""Pseudo-label retraining on synthetic people: does one round beat `supervised`?

A small labeled split, a large unlabeled folder (person boxes from its json, labels
ignored, as Xie et al. use COCO's person boxes) and a val set. Round 0 trains the
supervised teacher; each round exports it, labels the folder with flip test, keeps
joints scoring ≥ 0.5, retrains (warm start) on labeled + pseudo-labeled crops (labeled
persons repeated to a 1:1 mix) and evaluates.

    python benchmarks/rounds_synthetic.py --out runs/rounds_bench        # ~15 min on 2 cores
The same pipeline from the CLI (after `posemum synth`; the CLI keeps the default head
width 256, lr 1e-3 and rotation 30 where this script uses 128, 2e-3 and 15):
    posemum rounds --labeled L/annotations.json --images L/images --unlabeled U/images \
      --boxes gt:U/annotations.json --val-ann V/annotations.json --val-images V/images \
      --rounds 1 --input-size 128x96 --batch-size 16 --epochs 40 --retrain-max-steps 700 --out RUN
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from posemum_deploy.data.synthetic import generate_dataset
from posemum_deploy.rounds import RoundsConfig, evaluate_stage, run_rounds, train_stage
from posemum_deploy.training.config import (DataConfig, ModelConfig, OptimConfig, RuntimeConfig,
                                            TrainConfig)


def labeled_only_control(cfg: RoundsConfig, teacher: str, steps: int, out: Path) -> float:
    """Round 0 trained `steps` more on the labeled set alone, through the rounds' own train
    and evaluate stages (round 1's schedule): the AP that extra steps buy without
    pseudo-labels, i.e. what round 1 must beat to matter."""
    data = cfg.train.data
    ckpt = train_stage(cfg, out, data.labeled, data.images, teacher, steps)["checkpoint"]
    return evaluate_stage(cfg, ckpt, out)["metrics"]["AP"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/rounds_bench")
    p.add_argument("--labeled-images", type=int, default=120)
    p.add_argument("--unlabeled-images", type=int, default=1200)
    p.add_argument("--val-images", type=int, default=100)
    p.add_argument("--epochs", type=int, default=40, help="round-0 epochs over the labeled set")
    p.add_argument("--retrain-steps", type=int, default=700)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--backend", default="auto")
    p.add_argument("--min-joint-score", type=float, default=0.5)
    args = p.parse_args()
    out = Path(args.out)
    t0 = time.perf_counter()
    sets = {}
    for name, n, seed in (("labeled", args.labeled_images, 1), ("unlabeled", args.unlabeled_images, 2),
                          ("val", args.val_images, 3)):
        ann = out / "data" / name / "annotations.json"
        sets[name] = ann if ann.is_file() else generate_dataset(ann.parent, n, seed=seed)
    lab, unl, val = sets["labeled"], sets["unlabeled"], sets["val"]
    tcfg = TrainConfig(
        data=DataConfig(labeled=str(lab), images=str(lab.parent / "images"), val_ann=str(val),
                        val_images=str(val.parent / "images"), input_hw=(128, 96), workers=0,
                        cache_images=True, rotation_factor=15.0),
        model=ModelConfig(deconv_channels=128),
        optim=OptimConfig(lr=2e-3, epochs=args.epochs,
                          milestones=(int(args.epochs * 0.75), int(args.epochs * 0.92)),
                          batch_size=16),
        runtime=RuntimeConfig(val_every=0))
    cfg = RoundsConfig(out=str(out / "run"), unlabeled=str(unl.parent / "images"),
                       rounds=args.rounds, boxes=f"gt:{unl}", backend=args.backend, train=tcfg,
                       min_joint_score=args.min_joint_score)
    # Retraining passes see far more crops per epoch: bound them by steps instead.
    cfg.retrain_max_steps = args.retrain_steps
    records = run_rounds(cfg)
    control = labeled_only_control(cfg, records[0].checkpoint, args.retrain_steps,
                                   out / "control_labeled_only")
    print(f"\n# rounds_synthetic: {args.labeled_images} labeled / {args.unlabeled_images} "
          f"unlabeled / {args.val_images} val images, {time.perf_counter() - t0:.0f} s")
    print("| round | val AP | AP50 | pseudo-labeled persons |")
    print("|---|---|---|---|")
    for r in records:
        print(f"| {r.round} | {r.metrics['AP']:.4f} | {r.metrics['AP50']:.4f} | "
              f"{r.pseudo_annotations} |")
    print(f"control: round 0 + {args.retrain_steps} steps on the labeled set only: "
          f"val AP {control:.4f}")


if __name__ == "__main__":
    main()
