"""`posemum rounds`: label → filter → retrain → evaluate, several rounds."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer

from posemum_deploy.cli.options import parse_hw

if TYPE_CHECKING:  # imported when a command runs: `posemum --help` stays fast
    from posemum_deploy.demo import DemoConfig, DemoResult
    from posemum_deploy.rounds import RoundRecord

T = TypeVar("T")


def rounds(
    labeled: Path = typer.Option(..., "--labeled", help="COCO person-keypoints json"),
    images: Path = typer.Option(..., "--images", help="image folder of --labeled"),
    unlabeled: Path = typer.Option(..., "--unlabeled", help="folder of unlabeled images"),
    val_ann: Path = typer.Option(..., "--val-ann"),
    val_images: Path = typer.Option(..., "--val-images"),
    out: Path = typer.Option(Path("runs/rounds"), "--out"),
    n_rounds: int = typer.Option(1, "--rounds", help="pseudo-label rounds after round 0"),
    preset: str = typer.Option("supervised", "--preset",
                               help="every training's preset (pose-mum-plus: pseudo-labels "
                                    "as extra labeled data plus the unlabeled loss)"),
    boxes: str = typer.Option("full", "--boxes", help="full | hog | gt:ANN.json | det:DET.json"),
    backend: str = typer.Option("auto", "--backend", help="labeling backend"),
    init: str | None = typer.Option(
        None, "--init", help="scratch | pretrained | previous: how each retraining starts "
        "(default: previous, the last round's model; a student of another backbone starts "
        "from the initial weights)"),
    labeled_ratio: float = typer.Option(0.5, "--labeled-ratio",
                                        help="labeled share of every retraining batch (exact)"),
    mixed: bool = typer.Option(True, "--mixed/--union",
                               help="mixed batches, or one union list with labeled repeats"),
    pseudo_noise: str = typer.Option(
        "randaugment,cutout", "--pseudo-noise",
        help="strong view of pseudo-labeled crops: comma list of affine, randaugment, "
             "cutout, mum; or none"),
    pseudo_weight: str = typer.Option("none", "--pseudo-weight",
                                      help="none | score | agreement: per-joint loss weight"),
    pseudo_loss_weight: float = typer.Option(
        0.3, "--pseudo-loss-weight",
        help="scale of the pseudo-labeled crops' loss in each batch (0.3: they pull less "
             "than the clean labels; 1: as much)"),
    teacher_backbone: str | None = typer.Option(None, "--teacher-backbone",
                                                help="round 0's backbone (default --backbone)"),
    student_backbone: str | None = typer.Option(
        None, "--student-backbone", help="the retrained students' backbone (default --backbone)"),
    label_members: list[Path] | None = typer.Option(
        None, "--label-member", help="a further teacher checkpoint averaged with each round's "
        "teacher when it labels (an ensemble; repeat the option for more)"),
    initial_checkpoint: Path | None = typer.Option(None, "--initial-checkpoint",
                                                   help="round-0 teacher (else trained)"),
    min_joint_score: float = typer.Option(0.5, "--min-joint-score"),
    min_instance_score: float = typer.Option(0.3, "--min-instance-score"),
    min_joints: int = typer.Option(6, "--min-joints"),
    label_flip: bool = typer.Option(True, "--label-flip/--no-label-flip",
                                    help="the teacher labels with flip test"),
    tta: str = typer.Option("flip,scales=0.8,1.0,1.2", "--tta",
                            help="labeling views averaged before decoding ('none': one pass)"),
    thresholds: Path | None = typer.Option(
        None, "--thresholds", help="per-joint thresholds json (posemum calibrate) for every round"),
    calibrate: bool = typer.Option(
        True, "--calibrate/--no-calibrate",
        help="calibrate per-joint thresholds on the val set each round (else --min-joint-score)"),
    calibrate_precision: float = typer.Option(
        0.9, "--calibrate-precision", help="share of kept val joints within OKS 0.5"),
    calibrate_search: str = typer.Option(
        "each", "--calibrate-search",
        help="each: score and agreement thresholds each reach the precision; pair: the pair "
             "keeping the most joints (see posemum calibrate --search)"),
    calibrate_z: float = typer.Option(
        0.0, "--calibrate-z", help="> 0: the precision's lower bound (z std errors) must reach it"),
    labeled_repeat: int | None = typer.Option(
        None, "--labeled-repeat", help="--union: list each labeled person N times "
        "(default: as often as makes labeled ≈ pseudo-labeled)"),
    retrain_max_steps: int | None = typer.Option(
        None, "--retrain-max-steps",
        help="steps of each retraining (default: round 0's; the schedule spans them)"),
    schedule: str = typer.Option(
        "auto", "--schedule",
        help="continue: the run is one schedule (--epochs, --max-steps): round 0 trains to "
             "its first milestone, the rounds share the decayed epochs after it (equal "
             "compute to one labeled-only run); restart: each retraining runs the whole LR "
             "schedule; auto: continue unless a given teacher, --init, --retrain-max-steps "
             "or the LR schedule rule it out (a student of another backbone continues its "
             "own round 0; the teacher trains the whole schedule)"),
    backbone: str = typer.Option("resnet18", "--backbone"),
    input_size: str = typer.Option("256x192", "--input-size"),
    epochs: int = typer.Option(30, "--epochs"),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr"),
    deconv_channels: int = typer.Option(256, "--deconv-channels",
                                        help="head width (the demo's recipe uses 128)"),
    max_steps: int | None = typer.Option(None, "--max-steps"),
    warmup_steps: int = typer.Option(
        0, "--warmup-steps", min=0,
        help="linear lr warmup from 0.001x over N steps (mmpose: 500); --schedule continue "
             "warms up once, in round 0"),
    clamp_targets: bool | None = typer.Option(
        None, "--clamp-targets/--no-clamp-targets", show_default="the preset's (pose-mum-plus: on)",
        help="semi-supervised presets: clamp the teacher's heatmaps to [0, 1] before the "
             "unlabeled loss (train --clamp-targets)"),
    workers: int = typer.Option(1, "--workers"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Pseudo-label retraining rounds; resumable at round and stage granularity."""
    from posemum_deploy.rounds import RoundsConfig, run_rounds
    from posemum_deploy.training.config import TrainConfig
    from posemum_deploy.training.presets import apply_preset

    tcfg = apply_preset(TrainConfig(), preset)
    tcfg.data.val_ann, tcfg.data.val_images = str(val_ann), str(val_images)
    tcfg.data.labeled, tcfg.data.images = str(labeled), str(images)
    tcfg.data.input_hw, tcfg.data.workers = parse_hw(input_size), workers
    tcfg.model.backbone, tcfg.model.deconv_channels = backbone, deconv_channels
    tcfg.optim.lr = lr
    tcfg.optim.epochs, tcfg.optim.batch_size, tcfg.optim.max_steps = epochs, batch_size, max_steps
    tcfg.optim.milestones = (int(epochs * 2 / 3), int(epochs * 5 / 6))
    tcfg.optim.warmup_steps = warmup_steps
    if clamp_targets is not None:  # else the preset's
        tcfg.ssl.clamp_targets = clamp_targets
    tcfg.runtime.seed = seed
    cfg = RoundsConfig(out=str(out), unlabeled=str(unlabeled), rounds=n_rounds, boxes=boxes,
                       backend=backend, init=init,
                       initial_checkpoint=str(initial_checkpoint) if initial_checkpoint else None,
                       min_joint_score=min_joint_score, min_instance_score=min_instance_score,
                       min_joints=min_joints, label_flip=label_flip, label_tta=tta,
                       thresholds=str(thresholds) if thresholds else None, calibrate=calibrate,
                       calibrate_precision=calibrate_precision,
                       calibrate_search=calibrate_search, calibrate_z=calibrate_z,
                       labeled_repeat=labeled_repeat, retrain_max_steps=retrain_max_steps,
                       schedule=schedule,
                       mixed=mixed, labeled_ratio=labeled_ratio, pseudo_noise=pseudo_noise,
                       pseudo_weight=pseudo_weight, pseudo_loss_weight=pseudo_loss_weight,
                       teacher_backbone=teacher_backbone,
                       label_members=[str(m) for m in label_members or []],
                       student_backbone=student_backbone, train=tcfg)
    show_rounds(_shown(lambda **display: run_rounds(cfg, on_round=_announce, **display)), out)


def _shown(run: Callable[..., T]) -> T:
    """`run(train_callbacks=..., label_progress=...)` inside one rich display, so every
    training and labeling stage of the rounds gets its bar; returns what `run` returns."""
    from posemum_deploy.cli.progress import RichLabelProgress, RichTrainCallbacks

    with RichTrainCallbacks() as callbacks:
        return run(train_callbacks=callbacks, label_progress=RichLabelProgress(callbacks.progress))


def _announce(record: RoundRecord) -> None:
    from posemum_deploy.cli.progress import console

    console.print(f"round {record.round}: val AP {record.metrics['AP']:.4f} "
                  f"({record.pseudo_annotations} pseudo-labeled persons)")
    if record.student_metrics:
        console.print(f"round {record.round}, the student's own: val AP "
                      f"{record.student_metrics['AP']:.4f}")


def show_rounds(records: Sequence[RoundRecord], out: Path) -> None:
    from rich.table import Table

    from posemum_deploy.cli.progress import console

    table = Table(title="pseudo-label retraining rounds (val set)")
    for col in ("round", "AP", "AP50", "AR", "pseudo persons", "checkpoint"):
        table.add_column(col)
    for r in records:
        table.add_row(str(r.round), f"{r.metrics['AP']:.4f}", f"{r.metrics['AP50']:.4f}",
                      f"{r.metrics['AR']:.4f}", str(r.pseudo_annotations), r.checkpoint)
        if r.student_metrics:  # distillation: what round 1's student continues
            m = r.student_metrics
            table.add_row(f"{r.round} (student)", f"{m['AP']:.4f}", f"{m['AP50']:.4f}",
                          f"{m['AR']:.4f}", "0", r.student_checkpoint)
    console.print(table)
    console.print(f"plot: {out / 'rounds.png'}  table: {out / 'rounds.json'}")


def demo_rounds(demo_cfg: DemoConfig, demo_result: DemoResult, n_rounds: int) -> None:
    """`posemum demo --rounds N`: pseudo-label a fresh synthetic folder, retrain, and show
    round 0, each round and the equal-steps labeled-only control side by side."""
    from rich.table import Table

    from posemum_deploy.cli.progress import console
    from posemum_deploy.demo import run_demo_rounds

    result = _shown(lambda **display: run_demo_rounds(demo_cfg, demo_result, n_rounds,
                                                      on_round=_announce, **display))
    table = Table(title="pseudo-label rounds vs the equal-steps control (val set, GT boxes)")
    for col in ("model", "training steps", "AP", "pseudo persons"):
        table.add_column(col)
    for r in result.records:
        name = "round 0 (labeled only)" if r.round == 0 else f"round {r.round} (labeled + pseudo)"
        table.add_row(name, str(result.round_steps * (r.round + 1)), f"{r.metrics['AP']:.4f}",
                      str(r.pseudo_annotations))
    table.add_row("control: labeled only",
                  str(result.round_steps + result.control_steps), f"{result.control_ap:.4f}", "0")
    console.print(table)
    gap = result.records[-1].metrics["AP"] - result.control_ap
    console.print(f"round {n_rounds} - control: {gap:+.4f} AP; "
                  f"run dir: {Path(demo_cfg.out) / 'rounds'}")
