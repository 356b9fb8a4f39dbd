"""Retraining rounds: export → label → filter → retrain → evaluate, N times.

Every stage of every round writes its outputs under RUN_DIR/round_k/ and records itself
in RUN_DIR/round_k/stages.json when it finishes, so a killed run continues at the first
unfinished stage (and the label stage itself resumes shard by shard). A rerun into the
same RUN_DIR with other settings, or with an input file edited at the same path, is refused
(config.check_same_run, inputs.py): its stages would be reused for inputs they were not
made from.

The retraining stage follows Data Distillation and Noisy Student (issue 21): every batch
mixes labeled and pseudo-labeled persons at `labeled_ratio` (training/pseudo_mix.py), the
pseudo-labeled crops are noised, and the student fine-tunes the previous round's model
(or starts from the initial weights, `init`) with round 0's full step budget, or, with
`schedule="continue"`, the run is one LR schedule: round 0 trains it to its first
milestone and the rounds continue it at the decayed LR (schedule.py; the default
`schedule="auto"` continues wherever the run can be one schedule). A student
backbone may differ from the teacher's (distillation across sizes: continued, the
student continues its own round 0, `_round0`), and any preset may retrain (SSL on top
of pseudo-labels).
The package: config.py (RoundsConfig, RoundRecord, StageLog), inputs.py (the input
files' fingerprints), label_stage.py (export → calibrate → label → merge), retrain.py (the
retraining TrainConfig and stages), schedule.py (restarted or continued LR schedules);
here the loop itself.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

from posemum_deploy.data.coco import save_json
from posemum_deploy.data.images import IMAGE_SUFFIXES
from posemum_deploy.errors import ConfigError
from posemum_deploy.rounds.config import (
    CHECKPOINT_BACKENDS,
    INIT_MODES,
    STAGES,
    RoundRecord,
    RoundsConfig,
    StageLog,
    check_same_run,
    val_set,
)
from posemum_deploy.rounds.inputs import check_same_inputs, save_inputs
from posemum_deploy.rounds.label_stage import (
    _label_stages,
    _thresholds_stage,
    attach_joint_reliability,
    check_label_members,
)
from posemum_deploy.rounds.retrain import (
    backbones,
    check_retrain_options,
    combine_labeled_and_pseudo,
    evaluate_stage,
    resolve_init,
    resolve_schedule,
    retrain_config,
    train_stage,
)
from posemum_deploy.rounds.schedule import SCHEDULES, continued_schedule, fit_schedule

if TYPE_CHECKING:
    from posemum_deploy.label.runner import LabelProgress
    from posemum_deploy.training.config import OptimConfig
    from posemum_deploy.training.trainer import TrainCallbacks

__all__ = ["CHECKPOINT_BACKENDS", "INIT_MODES", "SCHEDULES", "STAGES", "RoundRecord",
           "RoundsConfig", "StageLog", "_label_stages", "_thresholds_stage",
           "attach_joint_reliability", "backbones", "check_label_members", "check_retrain_options",
           "check_round_inputs", "check_same_run", "combine_labeled_and_pseudo", "continued_schedule",
           "evaluate_stage", "fit_schedule", "resolve_init", "resolve_schedule",
           "retrain_config", "run_rounds", "train_stage", "write_summary"]
log = logging.getLogger(__name__)
STUDENT_ROUND0 = "round_0_student"  # a student of another backbone: its own round 0


def check_round_inputs(cfg: RoundsConfig) -> None:
    """Every input path exists, and the unlabeled folder holds an image, before RUN_DIR
    is made: otherwise a typo surfaces only when round 1 reaches its label stage, after
    round 0's training."""
    data = cfg.train.data
    files = {"--labeled": data.labeled, "--val-ann": data.val_ann,
             "--initial-checkpoint": cfg.initial_checkpoint}
    folders = {"--images": data.images, "--val-images": data.val_images,
               "--unlabeled": cfg.unlabeled}
    for option, path in files.items():
        if path and not Path(path).is_file():
            raise ConfigError(f"{path}: file not found (given as {option})")
    for option, path in folders.items():
        if path and not Path(path).is_dir():
            raise ConfigError(f"{path}: not a folder (given as {option})")
    check_label_members(cfg)
    if cfg.calibrate and not cfg.thresholds:
        from posemum_deploy.label.calibrate import check_search

        check_search(cfg.calibrate_precision, cfg.calibrate_search, cfg.calibrate_z,
                     ("--calibrate-precision", "--calibrate-search", "--calibrate-z"))
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in Path(cfg.unlabeled).rglob("*")):
        raise ConfigError(f"{cfg.unlabeled}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                          "under this folder (given as --unlabeled); nothing to pseudo-label")


def run_rounds(cfg: RoundsConfig, on_round: Callable[[RoundRecord], None] | None = None,
               train_callbacks: TrainCallbacks | None = None,
               label_progress: LabelProgress | None = None) -> list[RoundRecord]:
    """Round 0 (teacher on labeled data, or the given checkpoint) then cfg.rounds rounds of
    pseudo-label retraining; returns one record per round and writes a table and a plot.
    `train_callbacks` and `label_progress` see every training and labeling stage."""
    cfg = replace(cfg, schedule=resolve_schedule(cfg))  # rounds.yaml records the one used
    init = resolve_init(cfg)
    check_retrain_options(cfg)
    val_set(cfg)  # refuses a run without a val set
    check_round_inputs(cfg)
    out = Path(cfg.out)
    check_same_run(cfg, out / "rounds.yaml")
    inputs = check_same_inputs(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "rounds.yaml")
    save_inputs(inputs, out)
    continued = cfg.schedule == "continue"
    record0, start, steps0 = _round0(cfg, out, train_callbacks)
    teacher, records = record0.checkpoint, [record0]
    budget = None if continued else cfg.retrain_max_steps or steps0
    segments = continued_schedule(cfg.train.optim, cfg.rounds, steps0) if continued else []
    if on_round:
        on_round(records[-1])
    for k in range(1, cfg.rounds + 1):
        optim = segments[k] if continued else None
        records.append(_retrain_round(cfg, k, teacher, start, init, budget, optim,
                                      train_callbacks, label_progress))
        teacher = start = records[-1].checkpoint
        if on_round:
            on_round(records[-1])
    write_summary(records, out)
    return records


def _round0(cfg: RoundsConfig, out: Path,
            callbacks: TrainCallbacks | None) -> tuple[RoundRecord, str, int | None]:
    """Round 0: (the record of the teacher that labels round 1, the model round 1's
    student starts from with --init previous, the steps that measured an epoch of the
    labeled set).

    Continued with one backbone, round 0 trains to the first LR milestone and is both.
    A student of another backbone cannot continue the teacher, so a teacher trained here
    runs the whole schedule (Data Distillation labels with a converged model; a given
    one labels as it is), and the student's own round 0 trains to the milestone in
    round_0_student/: the student's steps stay one schedule, the teacher's come on top.
    Later rounds relabel with the last student, as with one backbone."""
    data = cfg.train.data
    teacher_backbone, student_backbone = backbones(cfg)
    continued = cfg.schedule == "continue"
    distil = continued and teacher_backbone != student_backbone
    log0 = StageLog(out / "round_0")
    if cfg.initial_checkpoint:
        teacher = cfg.initial_checkpoint
    else:
        r0 = retrain_config(cfg, None, teacher_backbone, "pretrained")
        if continued and not distil:  # up to the schedule's first LR milestone
            r0.optim = continued_schedule(cfg.train.optim, cfg.rounds)[0]
        elif distil and r0.optim.max_steps:  # the whole schedule, epochs as the student's
            r0.optim = fit_schedule(r0.optim, r0.optim.max_steps)
        teacher = log0.run("train", lambda: train_stage(
            cfg, out / "round_0", data.labeled, data.images, None,
            callbacks=callbacks, tcfg=r0))["checkpoint"]
    m0 = log0.run("evaluate", lambda: evaluate_stage(cfg, teacher, out / "round_0"))
    record0 = RoundRecord(0, teacher, m0["metrics"])
    if not distil:
        return record0, teacher, log0.done.get("train", {}).get("steps")
    s0 = retrain_config(cfg, None, student_backbone, "pretrained")
    s0.optim = continued_schedule(cfg.train.optim, cfg.rounds)[0]
    folder = out / STUDENT_ROUND0
    slog = StageLog(folder)
    start = slog.run("train", lambda: train_stage(
        cfg, folder, data.labeled, data.images, None, callbacks=callbacks,
        tcfg=s0))["checkpoint"]
    ms = slog.run("evaluate", lambda: evaluate_stage(cfg, start, folder))
    log.info("%s: the %s student's round 0 (to the first LR milestone): val AP %.4f",
             folder, student_backbone, ms["metrics"]["AP"])
    record0 = replace(record0, student_checkpoint=start, student_metrics=ms["metrics"])
    return record0, start, slog.done["train"]["steps"]


def _retrain_round(cfg: RoundsConfig, k: int, teacher: str, start: str, init: str,
                   budget: int | None, optim: OptimConfig | None,
                   train_callbacks: TrainCallbacks | None,
                   label_progress: LabelProgress | None) -> RoundRecord:
    """Round k: label the folder with `teacher`, merge, retrain (its `optim` part of a
    continued schedule, else `budget` steps of the whole schedule; from `start` with
    --init previous), evaluate."""
    round_dir = Path(cfg.out) / f"round_{k}"
    stages = StageLog(round_dir)
    data = cfg.train.data
    merged = _label_stages(cfg, stages, round_dir, teacher, label_progress,
                           members=cfg.label_members)
    pseudo: str | None = str(round_dir / "pseudo.json")
    if not merged["annotations"]:
        log.warning("%s: no pseudo-labeled person passed the filter (lower "
                    "--calibrate-precision or --min-joint-score, or pass --thresholds); "
                    "round %d trains on the labeled set only", pseudo, k)
        pseudo = None
    tcfg = retrain_config(cfg, pseudo, backbones(cfg)[1], init)
    if optim is not None:  # this round's epochs of the one schedule, at their decayed LR
        tcfg.optim = optim
    labeled, images = data.labeled, data.images
    if pseudo and not cfg.mixed:  # the ablation: one union list, labeled repeated
        labeled, images = str(combine_labeled_and_pseudo(
            data.labeled, data.images, pseudo, cfg.unlabeled,
            round_dir / "train_combined.json", cfg.labeled_repeat)), "/"
    init_from = start if init == "previous" else None
    student = stages.run("train", lambda: train_stage(
        cfg, round_dir, labeled, images, init_from, budget, train_callbacks,
        tcfg))["checkpoint"]
    mk = stages.run("evaluate", lambda: evaluate_stage(cfg, student, round_dir))
    return RoundRecord(k, student, mk["metrics"], merged["annotations"], merged["images"])


def write_summary(records: list[RoundRecord], out: Path) -> None:
    """rounds.json (one row per round) and rounds.png (AP per round)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    save_json([asdict(r) for r in records], out / "rounds.json")
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    ax.plot([r.round for r in records], [r.metrics["AP"] for r in records], marker="o")
    if records[0].student_metrics:  # distillation: the student's own round 0, then its rounds
        ax.plot([0, *(r.round for r in records[1:])],
                [records[0].student_metrics["AP"], *(r.metrics["AP"] for r in records[1:])],
                marker="s", linestyle="--", label="student")
        ax.legend()
    ax.set_xlabel("round")
    ax.set_ylabel("val AP")
    ax.set_xticks([r.round for r in records])
    ax.set_title("pseudo-label retraining")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "rounds.png")
    plt.close(fig)
