"""The label side of a round: export, calibrate, label, merge (and per-joint reliability
copied into the pseudo-labels for --pseudo-weight)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from posemum_deploy.data.coco import save_json
from posemum_deploy.errors import ConfigError
from posemum_deploy.rounds.config import CHECKPOINT_BACKENDS, RoundsConfig, StageLog, val_set


def _label_stages(cfg: RoundsConfig, log_: StageLog, round_dir: Path, teacher: str,
                  progress: Any = None, members: Sequence[str] = ()) -> dict:
    """Label cfg.unlabeled with `teacher` into round_dir and merge the kept persons into
    round_dir/pseudo.json. `members` are further teacher checkpoints averaged with it
    (an ensemble, as `posemum label --model A --model B`): the thresholds are then
    calibrated for the ensemble, and each member is exported like the teacher."""
    from posemum_deploy.label.merge import MergeFilter, merge_labels
    from posemum_deploy.label.runner import LabelSettings, RunSettings, label_folder

    def export() -> dict[str, Any]:
        if cfg.backend in CHECKPOINT_BACKENDS:  # they run the checkpoint itself
            return {"artifact": teacher, "members": list(members)}
        from posemum_deploy.export.formats import ExportOptions, export_model

        outs = []
        for i, ckpt in enumerate((teacher, *members)):
            out = round_dir / "export" / ("teacher.onnx" if i == 0 else f"member{i}.onnx")
            out.parent.mkdir(parents=True, exist_ok=True)
            export_model(ckpt, "onnx", out, ExportOptions())
            outs.append(str(out))
        return {"artifact": outs[0], "members": outs[1:]}

    exported = log_.run("export", export)
    artifact, extra = exported["artifact"], exported.get("members", [])
    thresholds = _thresholds_stage(cfg, log_, round_dir, [artifact, *extra])
    settings = LabelSettings(boxes=cfg.boxes, flip=cfg.label_flip, tta=cfg.label_tta,
                             ensemble=list(extra))
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


def check_label_members(cfg: RoundsConfig) -> None:
    """Every --label-member is a checkpoint that can label beside the teachers it will
    meet: --initial-checkpoint (round 1's teacher, when given) and the models the run
    trains (later rounds', or every round's without one), compared as `label --model`
    compares ensemble members. Found before round 0 trains, not at a label stage hours
    later."""
    from posemum_deploy.artifacts import ModelMetadata
    from posemum_deploy.inference.tta import check_ensemble
    from posemum_deploy.models.checkpoint import read_checkpoint
    from posemum_deploy.training.trainer import model_metadata

    if not cfg.label_members:
        return
    for path in cfg.label_members:
        if not Path(path).is_file():
            raise ConfigError(f"{path}: file not found (given as --label-member)")

    def meta(path: str) -> ModelMetadata:
        return ModelMetadata.from_dict(read_checkpoint(path, mmap=True)["model_meta"])

    members = [meta(path) for path in cfg.label_members]
    teachers = []
    if cfg.initial_checkpoint:
        teachers.append((cfg.initial_checkpoint, meta(cfg.initial_checkpoint)))
    if not cfg.initial_checkpoint or cfg.rounds > 1:
        teachers.append(("the run", model_metadata(cfg.train)))
    for name, teacher in teachers:
        check_ensemble([teacher, *members], [name, *cfg.label_members],
                       option="--label-member", alone="label with the round's teacher alone")


def _thresholds_stage(cfg: RoundsConfig, log_: StageLog, round_dir: Path,
                      artifact: str | Sequence[str]) -> Any:
    """The per-joint thresholds this round's merge keeps joints by: the given file, else
    calibrated on the val set for this teacher (or ensemble) and TTA (None:
    cfg.min_joint_score)."""
    from posemum_deploy.label.calibrate import calibrate, load_thresholds

    if cfg.thresholds:
        return load_thresholds(cfg.thresholds)
    if not cfg.calibrate:
        return None
    val_ann, val_images = val_set(cfg)
    out = round_dir / "thresholds.json"
    log_.run("calibrate", lambda: {"thresholds": str(out), "precision": calibrate(
        artifact, val_ann, val_images, out, tta=cfg.label_tta,
        precision=cfg.calibrate_precision, backend=cfg.backend,
        batch_size=cfg.label_batch_size, search=cfg.calibrate_search, z=cfg.calibrate_z).precision})
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
