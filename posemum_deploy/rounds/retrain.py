"""The retraining stage of a round: its TrainConfig (mixed pseudo-labeled batches, init,
student backbone, preset), its step budget, the union-list ablation, and evaluation."""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from posemum_deploy.data.coco import load_coco_keypoints, person_category, save_json
from posemum_deploy.errors import ConfigError
from posemum_deploy.rounds.config import INIT_MODES, RoundsConfig, val_set
from posemum_deploy.rounds.schedule import (
    AUTO,
    SCHEDULES,
    continued_schedule,
    fit_schedule,
    round_bounds,
)
from posemum_deploy.training.config import TrainConfig

log = logging.getLogger(__name__)


def combine_labeled_and_pseudo(labeled: str | Path, labeled_images: str | Path,
                               pseudo: str | Path, pseudo_images: str | Path,
                               out: str | Path, labeled_repeat: int | None = 1) -> Path:
    """One training json holding both sets; file_names become absolute paths so each
    set keeps its own image folder (the dataset joins folder / file_name).

    A small labeled split drowns in a large pseudo-labeled one: each labeled person is
    listed `labeled_repeat` times (None: as often as makes the two sets about equal,
    the 1:1 mix the semi-supervised trainer draws per step), so clean labels keep
    their weight in every epoch.
    """
    parts = [(load_coco_keypoints(labeled), Path(labeled_images)),
             (load_coco_keypoints(pseudo, require_persons=False), Path(pseudo_images))]
    if labeled_repeat is None:
        n_labeled = max(1, len(parts[0][0]["annotations"]))
        labeled_repeat = max(1, round(len(parts[1][0]["annotations"]) / n_labeled))
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for (coco, folder), repeat in zip(parts, (labeled_repeat, 1), strict=True):
        id_map = {}
        for im in coco["images"]:
            id_map[im["id"]] = len(images) + 1
            images.append({**im, "id": id_map[im["id"]],
                           "file_name": str((folder / im["file_name"]).resolve())})
        for _ in range(repeat):
            for ann in coco["annotations"]:
                anns.append({**ann, "id": len(anns) + 1, "image_id": id_map[ann["image_id"]]})
    return save_json({"images": images, "annotations": anns,
                      "categories": [person_category()]}, out)


def resolve_schedule(cfg: RoundsConfig) -> str:
    """The schedule the run uses: the asked one, or for `auto` `continue` wherever the run
    can be one LR schedule and `restart` where it cannot, with the reason logged as a
    warning (it changes what --epochs counts, so the CLI shows it).

    `continue` is preferred because it is the recipe that beat the labeled-only control
    at equal compute (schedule.py). It needs round 0 trained here (a given teacher has no
    schedule to continue), a student fine-tuned from the last round's model (a student of
    another backbone continues its own round 0, which the run trains beside the teacher),
    the step LR schedule with a milestone and a decayed epoch per round, and no per-round
    step budget."""
    if cfg.schedule != AUTO:
        return cfg.schedule
    reason = _why_not_continue(cfg)
    if reason:
        log.warning("--schedule auto: restart (each round trains the whole schedule), "
                    "because of %s", reason)
        return "restart"
    log.info("--schedule auto: continue (round 0 trains to the first LR milestone)")
    return "continue"


def _why_not_continue(cfg: RoundsConfig) -> str | None:
    """What keeps the run from being one continued schedule (None: nothing)."""
    if cfg.initial_checkpoint:  # before backbones(), which would read the checkpoint
        return "a given round-0 teacher (--initial-checkpoint)"
    if cfg.init not in (None, "previous"):
        return f"--init {cfg.init}"
    if cfg.retrain_max_steps:
        return "--retrain-max-steps"
    try:
        round_bounds(cfg.train.optim, cfg.rounds)
    except ConfigError:
        return (f"the {cfg.train.optim.schedule} LR schedule, which has no milestone with a "
                f"decayed epoch for each of {cfg.rounds} round(s)")
    return None


def resolve_init(cfg: RoundsConfig) -> str:
    """How retraining starts: the asked mode; by default fine-tuned from the previous
    round's model when teacher and student share a backbone, else the initial weights
    (ImageNet when --pretrained is given, else random); with the continued schedule a
    student of another backbone continues its own round 0. Fine-tuning is the default
    because at an equal step budget a fresh student trains only round 1's steps: on
    the synthetic rounds benchmark (800 steps per stage) it ended 7.6 AP below the
    fine-tuned one (docs/experiments/rounds-recipe.md). Fine-tuning a smaller student
    from a bigger teacher is impossible, which is said here rather than at round 1's
    train stage."""
    teacher, student = backbones(cfg)
    initial = "pretrained" if cfg.train.model.pretrained else "scratch"
    continued = cfg.schedule == "continue"
    init = cfg.init or ("previous" if teacher == student or continued else initial)
    if continued and init != "previous":
        raise ConfigError(f"--schedule continue trains each round on from the last round's "
                          f"model, so --init {init} does not apply; use --schedule restart")
    if init not in INIT_MODES:
        raise ConfigError(f"--init must be one of {', '.join(INIT_MODES)}, got {init!r}")
    if init == "pretrained" and not cfg.train.model.pretrained:
        raise ConfigError("--init pretrained needs --pretrained (an ImageNet state_dict); "
                          "or use --init scratch")
    if init == "previous" and teacher != student and not continued:
        raise ConfigError(f"--init previous cannot start a {student} student from a {teacher} "
                          "teacher; use --init scratch or pretrained, or --schedule continue "
                          "(the student continues its own round 0)")
    return init


def check_retrain_options(cfg: RoundsConfig) -> None:
    """The schedule and mixed-batch options parse, before round 0 spends its training."""
    from posemum_deploy.training.pseudo_mix import (
        WEIGHTS,
        check_loss_weight,
        parse_noise,
        split_batch,
    )

    if cfg.schedule not in (AUTO, *SCHEDULES):
        raise ConfigError(f"--schedule must be one of {', '.join((AUTO, *SCHEDULES))}, "
                          f"got {cfg.schedule!r}")
    if cfg.schedule == "continue":
        if cfg.retrain_max_steps:
            raise ConfigError("--retrain-max-steps does not apply with --schedule continue "
                              "(the rounds share the epochs after the first LR milestone); "
                              "set the whole run's steps with --max-steps")
        optim = cfg.train.optim
        given = cfg.initial_checkpoint and len(set(backbones(cfg))) == 1  # no round 0 here
        if given and not (optim.max_steps or optim.steps_per_epoch):
            raise ConfigError("--schedule continue with --initial-checkpoint needs --max-steps "
                              "(the whole schedule's steps; no round 0 measures an epoch)")
        continued_schedule(optim, cfg.rounds)  # the schedule can be split: else its error
    if cfg.mixed:
        split_batch(cfg.train.optim.batch_size, cfg.labeled_ratio)
        parse_noise(cfg.pseudo_noise)
        check_loss_weight(cfg.pseudo_loss_weight)
    else:  # the union list is plain training: these would be silently ignored
        defaults = RoundsConfig(out="", unlabeled="")
        for name in ("labeled_ratio", "pseudo_noise", "pseudo_weight", "pseudo_loss_weight"):
            if getattr(cfg, name) != getattr(defaults, name):
                option = "--" + name.replace("_", "-")
                raise ConfigError(f"{option} applies to mixed batches, and --union trains one "
                                  f"list; drop {option} or --union")
    if cfg.pseudo_weight not in WEIGHTS:
        raise ConfigError(f"--pseudo-weight must be one of {', '.join(WEIGHTS)}, "
                          f"got {cfg.pseudo_weight!r}")


def backbones(cfg: RoundsConfig) -> tuple[str, str]:
    """(round-0 teacher, retrained student) backbones; a given initial checkpoint says
    its own (so `--initial-checkpoint BIG.pt --student-backbone resnet18` distils). The
    checkpoint is read mapped: several start-up checks ask, and each costs its pickle,
    not its weights."""
    base = cfg.train.model.backbone
    teacher = cfg.teacher_backbone or base
    if cfg.initial_checkpoint and Path(cfg.initial_checkpoint).is_file():
        from posemum_deploy.models.checkpoint import read_checkpoint

        teacher = read_checkpoint(cfg.initial_checkpoint, mmap=True).get("model_meta", {}).get(
            "backbone", teacher)
    return teacher, cfg.student_backbone or base


def retrain_config(cfg: RoundsConfig, pseudo: str | None, backbone: str | None = None,
                   init: str = "previous") -> TrainConfig:
    """The TrainConfig of a retraining stage: cfg.train with the pseudo-labels mixed into
    its batches (`pseudo` None: labeled data only), the given backbone and init; a
    semi-supervised preset reads the unlabeled folder's boxes as its unlabeled stream."""
    tcfg = copy.deepcopy(cfg.train)
    if backbone:
        tcfg.model.backbone = backbone
    if init == "scratch":
        tcfg.model.pretrained = None
    if pseudo and cfg.mixed:
        p = tcfg.pseudo
        p.labels, p.images = pseudo, cfg.unlabeled
        p.labeled_ratio, p.noise, p.weight = cfg.labeled_ratio, cfg.pseudo_noise, cfg.pseudo_weight
        p.loss_weight = cfg.pseudo_loss_weight
    if tcfg.ssl.teacher != "none" and not tcfg.ssl.unlabeled:
        kind, _, source = cfg.boxes.partition(":")
        if kind == "gt":
            tcfg.ssl.unlabeled, tcfg.ssl.unlabeled_images = source, cfg.unlabeled
        else:
            tcfg.ssl.unlabeled = cfg.unlabeled
            tcfg.ssl.unlabeled_boxes = source if kind == "det" else "whole"
    return tcfg


def train_stage(cfg: RoundsConfig, round_dir: Path, labeled: str, images: str,
                init_from: str | None, max_steps: int | None = None,
                callbacks: Any = None, tcfg: TrainConfig | None = None) -> dict[str, Any]:
    """Train `tcfg` (default cfg.train) on `labeled` into round_dir/train (resuming a
    killed run there), starting from `init_from`; `max_steps` bounds it and the schedule
    is fitted to it."""
    from posemum_deploy.training.trainer import train

    tcfg = copy.deepcopy(tcfg or retrain_config(cfg, None))
    if max_steps:
        tcfg.optim = fit_schedule(tcfg.optim, max_steps)
    tcfg.out = str(round_dir / "train")
    tcfg.data.labeled, tcfg.data.images = labeled, images
    tcfg.ssl.init_from = init_from
    resume = (Path(tcfg.out) / "checkpoints" / "last.pt").is_file()
    result = train(tcfg, callbacks, resume=resume)
    return {"checkpoint": str(result.out_dir / "checkpoints" / "best.pt"), "steps": result.steps}


def evaluate_stage(cfg: RoundsConfig, checkpoint: str, round_dir: Path) -> dict[str, Any]:
    """Val AP of `checkpoint` (GT boxes); results and metrics are saved in round_dir."""
    from posemum_deploy.evaluation.coco_eval import evaluate_results
    from posemum_deploy.inference.predict import predict_coco

    val_ann, val_images = val_set(cfg)
    results = predict_coco(checkpoint, val_ann, val_images, backend="torch",
                           flip=cfg.train.runtime.val_flip)
    save_json(results, round_dir / "val_results.json")
    metrics = evaluate_results(val_ann, results)
    save_json(metrics, round_dir / "metrics.json")
    return {"metrics": metrics}
