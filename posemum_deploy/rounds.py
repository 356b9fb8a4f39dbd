"""Retraining rounds: export → label → filter → retrain → evaluate, N times.

Every stage of every round writes its outputs under RUN_DIR/round_k/ and records itself
in RUN_DIR/round_k/stages.json when it finishes, so a killed run continues at the first
unfinished stage (and the label stage itself resumes shard by shard).

The retraining stage follows Data Distillation and Noisy Student (issue 21): every batch
mixes labeled and pseudo-labeled persons at `labeled_ratio` (training/pseudo_mix.py), the
pseudo-labeled crops are noised, and the student starts from the initial weights with
round 0's full step budget. A student backbone may differ from the teacher's
(distillation across sizes), and any preset may retrain (SSL on top of pseudo-labels).
Over 300 lines: the stages share RoundsConfig and StageLog, and splitting them would
only move the config plumbing between files.
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from posemum_deploy.data.coco import load_coco_keypoints, person_category, save_json
from posemum_deploy.data.images import IMAGE_SUFFIXES
from posemum_deploy.errors import ConfigError
from posemum_deploy.inference.backends import SUFFIX_BACKENDS
from posemum_deploy.training.config import OptimConfig, TrainConfig

if TYPE_CHECKING:
    from posemum_deploy.label.runner import LabelProgress
    from posemum_deploy.training.trainer import TrainCallbacks

log = logging.getLogger(__name__)
STAGES = ("export", "calibrate", "label", "merge", "train", "evaluate")
INIT_MODES = ("scratch", "pretrained", "previous")
CHECKPOINT_BACKENDS = SUFFIX_BACKENDS[".pt"]  # they label from the checkpoint: no export


@dataclass
class RoundsConfig:
    """What the rounds use; `train` is the template every retraining starts from."""

    out: str
    unlabeled: str                          # folder of unlabeled images
    rounds: int = 2
    boxes: str = "full"                     # label box source: full | hog | gt:ANN | det:DET
    backend: str = "auto"                   # labeling backend (ONNX export unless torch/torch-fast)
    init: str | None = None                 # scratch | pretrained | previous (None: the
                                            # initial weights, pretrained if given, else scratch)
    initial_checkpoint: str | None = None   # round 0 teacher; None trains one on labeled data
    min_joint_score: float = 0.5            # pseudo joints below this are not trained on
    min_instance_score: float = 0.3
    min_joints: int = 6
    label_batch_size: int = 32
    label_flip: bool = True                 # the teacher labels with flip test (better pseudo-labels)
    label_tta: str = "flip,scales=0.8,1.0,1.2"  # TTA views, averaged before decoding ("none": off)
    thresholds: str | None = None           # per-joint thresholds json (`posemum calibrate`)
    calibrate: bool = True                  # else: calibrate on the val set every round
    calibrate_precision: float = 0.9        # share of kept val joints within OKS 0.5
    labeled_repeat: int | None = None       # union mode: repeat labeled persons (None: to match)
    retrain_max_steps: int | None = None    # steps of each retraining (None: round 0's steps)
    mixed: bool = True                      # mixed batches; False: one union list with repeats
    labeled_ratio: float = 0.5              # labeled share of every mixed batch (exact)
    pseudo_noise: str = "randaugment,cutout"  # strong view of the pseudo crops (or "none")
    pseudo_weight: str = "none"             # none | score | agreement: per-joint loss weight
    teacher_backbone: str | None = None     # round 0 (None: train.model.backbone)
    student_backbone: str | None = None     # rounds ≥ 1 (None: train.model.backbone)
    train: TrainConfig = field(default_factory=TrainConfig)

    def save(self, path: Path) -> None:
        import yaml

        data = asdict(self)
        data["train"] = self.train.to_dict()
        path.write_text(yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=False))


@dataclass
class RoundRecord:
    round: int
    checkpoint: str
    metrics: dict[str, float]
    pseudo_annotations: int = 0
    labeled_images: int = 0


class StageLog:
    """round_k/stages.json: which stages finished and what they produced."""

    def __init__(self, round_dir: Path) -> None:
        self.path = round_dir / "stages.json"
        round_dir.mkdir(parents=True, exist_ok=True)
        self.done: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def run(self, stage: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if stage in self.done:
            log.info("%s: %s already done, reusing it", self.path.parent.name, stage)
            return self.done[stage]
        self.done[stage] = fn()
        save_json(self.done, self.path)
        return self.done[stage]


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
    images, anns = [], []
    for (coco, folder), repeat in zip(parts, (labeled_repeat, 1)):
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


def fit_schedule(optim: OptimConfig, max_steps: int) -> OptimConfig:
    """A copy of `optim` that trains exactly `max_steps` steps over its schedule.

    Retraining passes see far more crops per epoch than the labeled-only round 0, so they
    are bounded by steps. Epochs of ceil(max_steps / epochs) steps, and as many of them
    as `max_steps` needs (the last one may be partial), with the milestones scaled to the
    new epoch count: the step or cosine schedule keeps its shape and ends on time. An
    explicit `steps_per_epoch` is kept as given (then `max_steps` only stops training).
    """
    optim = copy.deepcopy(optim)
    optim.max_steps = max_steps
    if optim.steps_per_epoch:
        return optim
    per_epoch = -(-max_steps // optim.epochs)
    epochs = -(-max_steps // per_epoch)
    optim.milestones = tuple(max(1, round(m * epochs / optim.epochs)) for m in optim.milestones)
    optim.epochs, optim.steps_per_epoch = epochs, per_epoch
    return optim


def resolve_init(cfg: RoundsConfig) -> str:
    """How retraining starts: the asked mode, else the initial weights (ImageNet when
    --pretrained is given, else random); fine-tuning a smaller student from a bigger
    teacher is impossible, which is said here rather than at round 1's train stage."""
    init = cfg.init or ("pretrained" if cfg.train.model.pretrained else "scratch")
    if init not in INIT_MODES:
        raise ConfigError(f"--init must be one of {', '.join(INIT_MODES)}, got {init!r}")
    if init == "pretrained" and not cfg.train.model.pretrained:
        raise ConfigError("--init pretrained needs --pretrained (an ImageNet state_dict); "
                          "or use --init scratch")
    teacher, student = backbones(cfg)
    if init == "previous" and teacher != student:
        raise ConfigError(f"--init previous cannot start a {student} student from a {teacher} "
                          "teacher; use --init scratch or pretrained")
    return init


def check_retrain_options(cfg: RoundsConfig) -> None:
    """The mixed-batch options parse, before round 0 spends its training."""
    from posemum_deploy.training.pseudo_mix import WEIGHTS, parse_noise, split_batch

    if cfg.mixed:
        split_batch(cfg.train.optim.batch_size, cfg.labeled_ratio)
        parse_noise(cfg.pseudo_noise)
    if cfg.pseudo_weight not in WEIGHTS:
        raise ConfigError(f"--pseudo-weight must be one of {', '.join(WEIGHTS)}, "
                          f"got {cfg.pseudo_weight!r}")


def backbones(cfg: RoundsConfig) -> tuple[str, str]:
    """(round-0 teacher, retrained student) backbones; a given initial checkpoint says
    its own (so `--initial-checkpoint BIG.pt --student-backbone resnet18` distils)."""
    base = cfg.train.model.backbone
    teacher = cfg.teacher_backbone or base
    if cfg.initial_checkpoint and Path(cfg.initial_checkpoint).is_file():
        from posemum_deploy.models.checkpoint import read_checkpoint

        teacher = read_checkpoint(cfg.initial_checkpoint).get("model_meta", {}).get(
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

    data = cfg.train.data
    results = predict_coco(checkpoint, data.val_ann, data.val_images, backend="torch",
                           flip=cfg.train.runtime.val_flip)
    save_json(results, round_dir / "val_results.json")
    metrics = evaluate_results(data.val_ann, results)
    save_json(metrics, round_dir / "metrics.json")
    return {"metrics": metrics}


def _label_stages(cfg: RoundsConfig, log_: StageLog, round_dir: Path, teacher: str,
                  progress: Any = None) -> dict:
    from posemum_deploy.label.merge import MergeFilter, merge_labels
    from posemum_deploy.label.runner import LabelSettings, RunSettings, label_folder

    def export() -> dict[str, Any]:
        if cfg.backend in CHECKPOINT_BACKENDS:  # they run the checkpoint itself
            return {"artifact": teacher}
        from posemum_deploy.export.formats import ExportOptions, export_model

        out = round_dir / "export" / "teacher.onnx"
        out.parent.mkdir(parents=True, exist_ok=True)
        export_model(teacher, "onnx", out, ExportOptions())
        return {"artifact": str(out)}

    artifact = log_.run("export", export)["artifact"]
    thresholds = _thresholds_stage(cfg, log_, round_dir, artifact)
    settings = LabelSettings(boxes=cfg.boxes, flip=cfg.label_flip, tta=cfg.label_tta)
    run = RunSettings(backend=cfg.backend, batch_size=cfg.label_batch_size, resume=True)
    log_.run("label", lambda: asdict(label_folder(
        artifact, cfg.unlabeled, round_dir / "labels", settings, run, progress)) | {"ok": True})
    flt = MergeFilter(cfg.min_joint_score, cfg.min_instance_score, cfg.min_joints,
                      thresholds=thresholds)

    def merge() -> dict[str, Any]:
        stats = asdict(merge_labels(round_dir / "labels", round_dir / "pseudo.json", flt))
        if cfg.pseudo_weight != "none":
            attach_joint_reliability(round_dir / "labels", round_dir / "pseudo.json")
        return stats

    return log_.run("merge", merge)


def _thresholds_stage(cfg: RoundsConfig, log_: StageLog, round_dir: Path, artifact: str) -> Any:
    """The per-joint thresholds this round's merge keeps joints by: the given file, else
    calibrated on the val set for this teacher and TTA (None: cfg.min_joint_score)."""
    from posemum_deploy.label.calibrate import calibrate, load_thresholds

    if cfg.thresholds:
        return load_thresholds(cfg.thresholds)
    if not cfg.calibrate:
        return None
    data = cfg.train.data
    out = round_dir / "thresholds.json"
    log_.run("calibrate", lambda: {"thresholds": str(out), "precision": calibrate(
        artifact, data.val_ann, data.val_images, out, tta=cfg.label_tta,
        precision=cfg.calibrate_precision, backend=cfg.backend,
        batch_size=cfg.label_batch_size).precision})
    return load_thresholds(out)


def attach_joint_reliability(labels_dir: Path, pseudo_json: Path) -> None:
    """Copy each kept person's per-joint `joint_scores` (and `joint_agreement`, when the
    labels have it) from the shards into its pseudo-label annotation, for
    `--pseudo-weight`. Persons match by image id (position + 1, as merge numbers them)
    and box."""
    from posemum_deploy.data.coco import load_json
    from posemum_deploy.label.writer import iter_indexed

    coco = load_json(pseudo_json)
    wanted = {(a["image_id"], tuple(np.round(a["bbox"], 2))): a for a in coco["annotations"]}
    for position, record in iter_indexed(labels_dir):
        for person in record.get("persons", []):
            ann = wanted.get((position + 1, tuple(np.round(person["box"], 2))))
            if ann is None:
                continue
            ann["joint_scores"] = np.round(person["joint_scores"], 4).tolist()
            if "joint_agreement" in person:
                ann["joint_agreement"] = np.round(person["joint_agreement"], 4).tolist()
    save_json(coco, pseudo_json)


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
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in Path(cfg.unlabeled).rglob("*")):
        raise ConfigError(f"{cfg.unlabeled}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                          "under this folder (given as --unlabeled); nothing to pseudo-label")


def run_rounds(cfg: RoundsConfig, on_round: Callable[[RoundRecord], None] | None = None,
               train_callbacks: "TrainCallbacks | None" = None,
               label_progress: "LabelProgress | None" = None) -> list[RoundRecord]:
    """Round 0 (teacher on labeled data, or the given checkpoint) then cfg.rounds rounds of
    pseudo-label retraining; returns one record per round and writes a table and a plot.
    `train_callbacks` and `label_progress` see every training and labeling stage."""
    init = resolve_init(cfg)
    check_retrain_options(cfg)
    if not cfg.train.data.val_ann:
        raise ConfigError("rounds need a val set (--val-ann/--val-images) to measure each round")
    check_round_inputs(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "rounds.yaml")
    data = cfg.train.data
    records: list[RoundRecord] = []
    log0 = StageLog(out / "round_0")
    if cfg.initial_checkpoint:
        teacher = cfg.initial_checkpoint
    else:
        r0 = retrain_config(cfg, None, backbones(cfg)[0], "pretrained")
        teacher = log0.run("train", lambda: train_stage(
            cfg, out / "round_0", data.labeled, data.images, None,
            callbacks=train_callbacks, tcfg=r0))["checkpoint"]
    budget = cfg.retrain_max_steps or log0.done.get("train", {}).get("steps")
    m0 = log0.run("evaluate", lambda: evaluate_stage(cfg, teacher, out / "round_0"))
    records.append(RoundRecord(0, teacher, m0["metrics"]))
    if on_round:
        on_round(records[-1])
    for k in range(1, cfg.rounds + 1):
        round_dir = out / f"round_{k}"
        stages = StageLog(round_dir)
        merged = _label_stages(cfg, stages, round_dir, teacher, label_progress)
        pseudo: str | None = str(round_dir / "pseudo.json")
        if not merged["annotations"]:
            log.warning("%s: no pseudo-labeled person passed the filter (lower "
                        "--calibrate-precision or --min-joint-score, or pass --thresholds); "
                        "round %d trains on the labeled set only", pseudo, k)
            pseudo = None
        tcfg = retrain_config(cfg, pseudo, backbones(cfg)[1], init)
        labeled, images = data.labeled, data.images
        if pseudo and not cfg.mixed:  # the ablation: one union list, labeled repeated
            labeled, images = str(combine_labeled_and_pseudo(
                data.labeled, data.images, pseudo, cfg.unlabeled,
                round_dir / "train_combined.json", cfg.labeled_repeat)), "/"
        init_from = teacher if init == "previous" else None
        teacher = stages.run("train", lambda: train_stage(
            cfg, round_dir, labeled, images, init_from, budget, train_callbacks,
            tcfg))["checkpoint"]
        mk = stages.run("evaluate", lambda: evaluate_stage(cfg, teacher, round_dir))
        records.append(RoundRecord(k, teacher, mk["metrics"], merged["annotations"],
                                   merged["images"]))
        if on_round:
            on_round(records[-1])
    write_summary(records, out)
    return records


def write_summary(records: list[RoundRecord], out: Path) -> None:
    """rounds.json (one row per round) and rounds.png (AP per round)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    save_json([asdict(r) for r in records], out / "rounds.json")
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    ax.plot([r.round for r in records], [r.metrics["AP"] for r in records], marker="o")
    ax.set_xlabel("round")
    ax.set_ylabel("val AP")
    ax.set_xticks([r.round for r in records])
    ax.set_title("pseudo-label retraining")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "rounds.png")
    plt.close(fig)
