"""The stages benchmarks/rounds_synthetic.py builds its rows from: a seed's synthetic
data, the rounds config every row shares, one training, one labeling; each cached in its
folder by the rounds' StageLog, so a rerun with other rows reuses what is done."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from posemum_deploy.data.synthetic import generate_dataset
from posemum_deploy.rounds import (
    RoundsConfig,
    StageLog,
    _label_stages,
    evaluate_stage,
    retrain_config,
    train_stage,
)
from posemum_deploy.training.config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    RuntimeConfig,
    TrainConfig,
)
from posemum_deploy.training.presets import apply_preset


def say(line: str) -> None:
    """One line in one write: seeds trained side by side do not interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def seed_data(root: Path, args: argparse.Namespace, seed: int) -> dict[str, Path]:
    """The seed's labeled, unlabeled and val sets (generated once, reused)."""
    sets = {}
    for i, (name, n) in enumerate((("labeled", args.labeled_images),
                                   ("unlabeled", args.unlabeled_images),
                                   ("val", args.val_images))):
        ann = root / f"data-s{seed}" / f"{name}{n}" / "annotations.json"
        if not ann.is_file():
            generate_dataset(ann.parent, n, seed=1000 * seed + i + 1, max_people=4)
        sets[name] = ann
    return sets


def base_config(args: argparse.Namespace, seed: int, sets: dict[str, Path], out: Path,
                preset: str = "supervised") -> RoundsConfig:
    """The rounds config every row of one seed shares (the demo's small recipe)."""
    lab, unl, val = sets["labeled"], sets["unlabeled"], sets["val"]
    tcfg = TrainConfig(
        data=DataConfig(labeled=str(lab), images=str(lab.parent / "images"), val_ann=str(val),
                        val_images=str(val.parent / "images"), input_hw=args.input, workers=0,
                        cache_images=True, rotation_factor=15.0),
        model=ModelConfig(deconv_channels=128),
        optim=OptimConfig(lr=args.lr, epochs=6, milestones=(4, 5), batch_size=args.batch),
        runtime=RuntimeConfig(seed=seed, val_every=0, val_flip=True, device="cpu"))
    apply_preset(tcfg, preset)
    # raw teacher heatmaps unless --clamp-targets (in folders of their own), whatever the
    # preset's default: stages are reused by folder name, and the recorded rows trained raw
    tcfg.ssl.clamp_targets = getattr(args, "clamp_targets", False)
    tcfg.ssl.unlabeled_batch_size, tcfg.ssl.tiles = args.batch, args.tiles
    return RoundsConfig(out=str(out), unlabeled=str(unl.parent / "images"), rounds=1,
                        boxes=f"gt:{unl}", backend="torch", min_joint_score=args.min_joint_score,
                        min_instance_score=args.min_instance_score, min_joints=args.min_joints,
                        labeled_ratio=args.labeled_ratio, pseudo_noise=args.noise,
                        pseudo_loss_weight=args.pseudo_loss_weight,
                        label_tta=args.tta, calibrate=args.calibrate,
                        calibrate_precision=args.precision, train=tcfg,
                        calibrate_search=getattr(args, "threshold_search", "each"),
                        calibrate_z=getattr(args, "threshold_z", 0.0))


def trained(cfg: RoundsConfig, out: Path, steps: int | None, pseudo: str | None = None,
            backbone: str | None = None, init_from: str | None = None,
            optim: OptimConfig | None = None) -> tuple[str, float]:
    """(checkpoint, val AP ×100) of one training in `out`: `steps` steps over the whole
    schedule, or the given `optim` (a part of a continued schedule) as it is."""
    data = cfg.train.data
    if pseudo and not json.loads(Path(pseudo).read_text())["annotations"]:
        say(f"{out.name}: no pseudo-labeled person passed the filter; trains labeled-only")
        pseudo = None
    init = "previous" if init_from else "scratch"
    labeled, images = data.labeled, data.images
    if pseudo and not cfg.mixed:
        from posemum_deploy.rounds import combine_labeled_and_pseudo

        labeled, images = str(combine_labeled_and_pseudo(
            data.labeled, data.images, pseudo, cfg.unlabeled, out / "combined.json")), "/"
    tcfg = retrain_config(cfg, pseudo, backbone, init)
    if optim is not None:
        tcfg.optim = optim
    stages = StageLog(out)
    ckpt = stages.run("train", lambda: train_stage(cfg, out, labeled, images, init_from,
                                                   steps, tcfg=tcfg))["checkpoint"]
    ap = stages.run("evaluate", lambda: evaluate_stage(cfg, ckpt, out))["metrics"]["AP"]
    return ckpt, 100 * ap


UNLABELED_IMAGES = 600  # --unlabeled-images' default: its folders carry no suffix


def unlabeled_knob(args: argparse.Namespace) -> str:
    """The suffix of whatever depends on the unlabeled set ("-u1200" when not the default
    600): labels, students, the bound, pose-mum-plus runs. The labeled-only trainings
    keep their names, so a run with a larger folder reuses them."""
    n = args.unlabeled_images
    return f"-u{n}" if n != UNLABELED_IMAGES else ""


def clamp_knob(args: argparse.Namespace) -> str:
    """"-clamp" with --clamp-targets: clamped pose-mum-plus stages get folders of their
    own, so no unclamped cached stage is reused."""
    return "-clamp" if args.clamp_targets else ""


def ssl_knob(args: argparse.Namespace) -> str:
    """The suffix of row e's folders: the unlabeled set's (pose-mum-plus learns from it
    from step 0), then the clamp's."""
    return unlabeled_knob(args) + clamp_knob(args)


def label_knobs(args: argparse.Namespace) -> str:
    """The suffix of a labels folder: the calibration precision when not 0.9 ("-p0.8"),
    its search and confidence when not each / 0 ("-pairz1") and the unlabeled set's size
    when not the default."""
    precision = f"-p{args.precision:g}" if args.calibrate and args.precision != 0.9 else ""
    search, z = getattr(args, "threshold_search", "each"), getattr(args, "threshold_z", 0.0)
    if args.calibrate and (search, z) != ("each", 0.0):
        precision += f"-{search}" + (f"z{z:g}" if z else "")
    return precision + unlabeled_knob(args)


def student_knobs(args: argparse.Namespace) -> str:
    """The suffix of a student's folder: each knob away from its default ("-lw0.3"), and
    its labels' knobs, so runs with other knobs do not reuse its cached stages (reused by
    folder name)."""
    return "".join(f"-{k}{v:g}" for k, v, default in (
        ("ratio", args.labeled_ratio, 0.5), ("lw", args.pseudo_loss_weight, 1.0))
        if v != default) + label_knobs(args)


def pseudo_labels(cfg: RoundsConfig, out: Path, teacher: str, members: list[str] | None = None) -> str:
    """Label the unlabeled folder with `teacher` (averaged with the checkpoints `members`,
    an ensemble) and merge (resumable); the json path."""
    _label_stages(cfg, StageLog(out), out, teacher, members=members or ())
    return str(out / "pseudo.json")
