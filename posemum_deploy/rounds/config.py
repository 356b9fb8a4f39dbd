"""The rounds' configuration, per-round record and stage log (see posemum_deploy.rounds)."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from posemum_deploy.data.coco import save_json
from posemum_deploy.errors import ConfigError
from posemum_deploy.inference.backends import SUFFIX_BACKENDS
from posemum_deploy.training.config import TrainConfig

log = logging.getLogger(__name__)
STAGES = ("export", "calibrate", "label", "merge", "train", "evaluate")
INIT_MODES = ("scratch", "pretrained", "previous")
CHECKPOINT_BACKENDS = SUFFIX_BACKENDS[".pt"]  # they label from the checkpoint: no export


@dataclass
class RoundsConfig:
    """What the rounds use; `train` is the template every retraining starts from."""

    out: str
    unlabeled: str                          # folder of unlabeled images
    rounds: int = 1                         # one continued round beat two (rounds-recipe.md)
    boxes: str = "full"                     # label box source: full | hog | gt:ANN | det:DET
    backend: str = "auto"                   # labeling backend (ONNX export unless torch/torch-fast)
    init: str | None = None                 # scratch | pretrained | previous (None: previous
                                            # when teacher and student share a backbone, else
                                            # the initial weights: pretrained if given, else scratch)
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
    calibrate_search: str = "each"          # each | pair: how score and agreement thresholds
                                            # are chosen (label/calibrate.py)
    calibrate_z: float = 0.0                # > 0: the precision's lower bound must reach it
    labeled_repeat: int | None = None       # union mode: repeat labeled persons (None: to match)
    retrain_max_steps: int | None = None    # steps of each retraining (None: round 0's steps)
    schedule: str = "auto"                  # restart: each retraining runs the whole LR
                                            # schedule; continue: one schedule for the run,
                                            # round 0 up to its first milestone; auto:
                                            # continue where it applies (schedule.py)
    mixed: bool = True                      # mixed batches; False: one union list with repeats
    labeled_ratio: float = 0.5              # labeled share of every mixed batch (exact;
                                            # 0.25 with pseudo loss 1 did best at 64x64)
    pseudo_noise: str = "randaugment,cutout"  # strong view of the pseudo crops (or "none")
    pseudo_weight: str = "none"             # none | score | agreement: per-joint loss weight
    pseudo_loss_weight: float = 0.3         # scale of the pseudo part's loss in each batch
                                            # (0.3 beat 1 at 128x96 on both schedules; 1 did
                                            # better at 64x64, rounds-recipe.md)
    label_members: list[str] = field(default_factory=list)  # further teacher checkpoints
                                            # averaged with each round's teacher when it
                                            # labels (an ensemble, as label --model A --model B)
    teacher_backbone: str | None = None     # round 0 (None: train.model.backbone)
    student_backbone: str | None = None     # rounds ≥ 1 (None: train.model.backbone)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as rounds.yaml holds it (tuples as lists)."""
        data = asdict(self)
        data["train"] = self.train.to_dict()
        return json.loads(json.dumps(data))

    def save(self, path: Path) -> None:
        import yaml

        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def val_set(cfg: RoundsConfig) -> tuple[str, str]:
    """(val json, its image folder): what every round is measured and calibrated on.
    Without a folder the json's file names are read as they are, as training's
    validation reads them."""
    data = cfg.train.data
    if not data.val_ann:
        raise ConfigError("rounds need a val set (--val-ann/--val-images) to measure each round")
    return data.val_ann, data.val_images or ""


# Settings that change how fast a stage runs, not what it produces: a resumed run may
# change them. `rounds` may grow or shrink a run whose rounds restart the schedule.
RESUMABLE_KEYS = frozenset({
    "out", "train.out", "label_batch_size", "train.data.workers", "train.data.cache_images",
    "train.data.decode", "train.runtime.device", "train.runtime.channels_last",
    "train.runtime.cudnn_benchmark", "train.runtime.teacher_cuda_graph",
    "train.runtime.log_every"})


def check_same_run(cfg: RoundsConfig, saved: Path) -> None:
    """Refuse to resume the run recorded in `saved` (RUN_DIR/rounds.yaml) with other
    settings. Finished stages are reused by folder, so another --unlabeled folder, filter
    or recipe would otherwise silently reuse labels and students made for the old one."""
    import yaml

    from posemum_deploy.label.writer import differences

    if not saved.is_file():
        return
    try:
        old = yaml.safe_load(saved.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{saved}: not readable YAML ({err.__class__.__name__}); pass a "
                          "new --out, or delete that folder to start over") from err
    free = RESUMABLE_KEYS | ({"rounds"} if cfg.schedule == "restart" else set())
    # keys only one side has come from another posemum version: their defaults match
    changed = differences(old, cfg.to_dict(), skip=free, common_only=True)
    if changed:
        shown = "; ".join(changed[:3]) + (f"; {len(changed) - 3} more" if len(changed) > 3 else "")
        raise ConfigError(f"{saved.parent}: holds a rounds run with other settings ({shown}); "
                          "its finished stages would be reused for the new ones: pass a new "
                          "--out, or delete that folder to start over")


@dataclass
class RoundRecord:
    """One row of rounds.json. Round 0 of a distillation on the continued schedule also
    holds the student's own round 0 (round_0_student/: the model round 1 continues), so
    the table shows what the student was before the teacher's labels."""
    round: int
    checkpoint: str
    metrics: dict[str, float]
    pseudo_annotations: int = 0
    labeled_images: int = 0
    student_checkpoint: str | None = None
    student_metrics: dict[str, float] | None = None


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
