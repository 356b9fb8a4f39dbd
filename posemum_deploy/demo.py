"""`posemum demo`: the main job end to end on embedded synthetic data, on a CPU.

Synthesises people, scores an untrained network, trains a small supervised
SimpleBaseline-ResNet-18 and scores it again, so a fresh clone shows the whole
train → evaluate path working in about ten minutes on two cores.
"""
from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from posemum_deploy.data.synthetic import generate_dataset
from posemum_deploy.evaluation.coco_eval import evaluate_results
from posemum_deploy.inference.predict import predict_coco
from posemum_deploy.inference.torch_backend import TorchBackend
from posemum_deploy.models.simple_baseline import build_model
from posemum_deploy.training.config import DataConfig, ModelConfig, OptimConfig, RuntimeConfig, TrainConfig
from posemum_deploy.training.trainer import TrainCallbacks, model_metadata, train

if TYPE_CHECKING:  # the rounds load only for `demo --rounds`
    from posemum_deploy.label.summary import LabelProgress
    from posemum_deploy.rounds import RoundRecord

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """Sizes chosen so the demo trains to a useful AP in minutes on a 2-core CPU."""

    out: str = "runs/demo"
    train_images: int = 800
    val_images: int = 100
    seed: int = 0
    input_hw: tuple[int, int] = (128, 96)
    backbone: str = "resnet18"
    deconv_channels: int = 128
    max_people: int = 3
    schedule: str = "cosine"
    rotation_factor: float = 10.0     # lighter than the paper's 30: a short run underfits, not overfits
    scale_factor: float = 0.25
    epochs: int = 20
    milestones: tuple[int, ...] = (14, 18)   # used when schedule == "step"
    batch_size: int = 16
    lr: float = 2e-3
    extra: dict = field(default_factory=dict)


@dataclass
class DemoResult:
    run_dir: Path
    untrained_ap: float
    trained_ap: float
    metrics: dict[str, float]
    seconds: float


def images_of(ann: Path) -> Path:
    """The image folder of a set `generate_dataset` wrote (beside its annotations.json)."""
    return ann.parent / "images"


def demo_train_config(cfg: DemoConfig, train_ann: Path, val_ann: Path) -> TrainConfig:
    return TrainConfig(
        preset="supervised", out=str(Path(cfg.out) / "run"),
        data=DataConfig(labeled=str(train_ann), images=str(images_of(train_ann)),
                        val_ann=str(val_ann), val_images=str(images_of(val_ann)),
                        input_hw=cfg.input_hw, workers=0, cache_images=True,
                        rotation_factor=cfg.rotation_factor, scale_factor=cfg.scale_factor),
        model=ModelConfig(backbone=cfg.backbone, deconv_channels=cfg.deconv_channels),
        optim=OptimConfig(lr=cfg.lr, epochs=cfg.epochs, milestones=cfg.milestones,
                          schedule=cfg.schedule,
                          batch_size=cfg.batch_size),
        runtime=RuntimeConfig(seed=cfg.seed, val_every=max(1, cfg.epochs // 3)),
    )


def synth_sets(cfg: DemoConfig) -> tuple[Path, Path]:
    """Train and val sets under OUT/data (reused when already there)."""
    root = Path(cfg.out) / "data"
    made = []
    for name, n, seed in (("train", cfg.train_images, cfg.seed),
                          ("val", cfg.val_images, cfg.seed + 10_000)):
        ann = root / name / "annotations.json"
        if not ann.is_file():
            generate_dataset(root / name, n, seed=seed, max_people=cfg.max_people)
        made.append(ann)
    return made[0], made[1]


def untrained_ap(tcfg: TrainConfig, val_ann: Path) -> float:
    """AP of a freshly initialised network: the floor the trained one is compared with."""
    torch.manual_seed(tcfg.runtime.seed)
    model = build_model(tcfg.model.backbone, deconv_channels=tcfg.model.deconv_channels)
    backend = TorchBackend(model, model_metadata(tcfg), device="cpu")
    results = predict_coco(backend, val_ann, images_of(val_ann), flip=True, dark=True)
    return evaluate_results(val_ann, results)["AP"]


def run_demo(cfg: DemoConfig, callbacks: TrainCallbacks | None = None) -> DemoResult:
    """Synthesise → untrained AP → train → trained AP; returns both and the run dir."""
    start = time.perf_counter()
    train_ann, val_ann = synth_sets(cfg)
    tcfg = demo_train_config(cfg, train_ann, val_ann)
    floor = untrained_ap(tcfg, val_ann)
    train(tcfg, callbacks)
    best = Path(tcfg.out) / "checkpoints" / "best.pt"
    # SimpleBaseline test protocol: flip-test averaging; DARK decoding matters at 32×24 maps.
    metrics = evaluate_results(val_ann, predict_coco(best, val_ann, images_of(val_ann),
                                                     backend="torch", flip=True, dark=True))
    return DemoResult(Path(tcfg.out), floor, metrics["AP"], metrics,
                      time.perf_counter() - start)


@dataclass
class DemoRounds:
    """`posemum demo --rounds N`: the round records and the equal-steps control."""

    records: list            # rounds.RoundRecord per round, round 0 first
    control_ap: float        # round 0 trained N × its steps more on the labeled set only
    control_steps: int
    round_steps: int         # steps of round 0, and of each retraining


def run_demo_rounds(cfg: DemoConfig, result: DemoResult, n_rounds: int,
                    on_round: Callable[[RoundRecord], None] | None = None,
                    train_callbacks: TrainCallbacks | None = None,
                    label_progress: LabelProgress | None = None) -> DemoRounds:
    """Pseudo-label a fresh synthetic folder (boxes from its json, labels ignored) with the
    demo's model and retrain for `n_rounds` rounds (the rounds' default recipe: TTA labels,
    per-joint thresholds calibrated on the val set, the student fine-tuned on mixed, noised
    batches with round 0's step budget); then the control: round 0 trained as many steps
    more on the labeled set alone. All rows are scored alike (rounds' evaluate stage)."""
    from posemum_deploy.models.checkpoint import read_checkpoint
    from posemum_deploy.rounds import RoundsConfig, evaluate_stage, retrain_config, run_rounds, train_stage

    unlabeled_ann = Path(cfg.out) / "data" / "unlabeled" / "annotations.json"
    if not unlabeled_ann.is_file():
        generate_dataset(unlabeled_ann.parent, cfg.train_images, seed=cfg.seed + 20_000,
                         max_people=cfg.max_people)
    tcfg = TrainConfig.load(result.run_dir / "config.yaml")
    steps = int(read_checkpoint(result.run_dir / "checkpoints" / "last.pt", mmap=True)["step"])
    teacher = str(result.run_dir / "checkpoints" / "best.pt")
    rounds_dir = Path(cfg.out) / "rounds"
    if rounds_dir.is_dir():  # the demo has just retrained its teacher: old rounds are stale
        shutil.rmtree(rounds_dir)
    rcfg = RoundsConfig(out=str(rounds_dir),
                        unlabeled=str(images_of(unlabeled_ann)), rounds=n_rounds,
                        boxes=f"gt:{unlabeled_ann}", backend="torch",
                        initial_checkpoint=teacher, retrain_max_steps=steps,
                        schedule="restart", train=tcfg)
    records = run_rounds(rcfg, on_round=on_round, train_callbacks=train_callbacks,
                         label_progress=label_progress)
    control_dir = Path(rcfg.out) / "control_labeled_only"
    ckpt = train_stage(rcfg, control_dir, tcfg.data.labeled, tcfg.data.images, teacher,
                       n_rounds * steps, train_callbacks, retrain_config(rcfg, None))["checkpoint"]
    control = evaluate_stage(rcfg, ckpt, control_dir)["metrics"]["AP"]
    return DemoRounds(records, control, n_rounds * steps, steps)
