"""Training configuration: plain dataclasses, saved as YAML in every run dir and
inside every checkpoint, so a run can always be reproduced and resumed."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from posemum_deploy.errors import ConfigError


@dataclass
class DataConfig:
    """Where the images and annotations are, and how crops are made."""

    labeled: str = ""                 # COCO person-keypoints json
    images: str = ""                  # folder the json's file_names are relative to
    labeled_count: int | None = None  # first N instances with keypoints (1K/5K/10K splits)
    val_ann: str | None = None
    val_images: str | None = None
    input_hw: tuple[int, int] = (256, 192)
    sigma: float = 2.0
    workers: int = 1
    cache_images: bool = False        # keep decoded images in memory (small sets)
    decode: str = "host"              # host: workers decode and crop | device: on the GPU
    scale_factor: float = 0.25        # "Affine" augmentation (SimpleBaseline recipe)
    rotation_factor: float = 30.0

    def __post_init__(self) -> None:
        h, w = self.input_hw  # a list from Python or YAML becomes the tuple the code compares
        self.input_hw = (h, w)

    @property
    def heatmap_hw(self) -> tuple[int, int]:
        return (self.input_hw[0] // 4, self.input_hw[1] // 4)


@dataclass
class ModelConfig:
    backbone: str = "resnet18"
    deconv_channels: int = 256       # head width (SimpleBaseline: 256)
    pretrained: str | None = None     # local torchvision ImageNet state_dict


@dataclass
class OptimConfig:
    """Adam with a step schedule; milestones are in epochs (paper: 20/25 of 30)."""

    lr: float = 1e-3
    epochs: int = 30
    milestones: tuple[int, ...] = (20, 25)
    gamma: float = 0.1
    schedule: str = "step"            # step (paper) | cosine
    batch_size: int = 32
    steps_per_epoch: int | None = None  # None: one pass over the labeled set
    max_steps: int | None = None        # stop early (smoke runs, benchmarks)
    warmup_steps: int = 0               # linear lr warmup from 0.001x over these steps
                                        # (mmpose: 500); 0: off, as every run before it


@dataclass
class SSLConfig:
    """Semi-supervised settings; `teacher="none"` means plain supervised training."""

    teacher: str = "none"             # none | single | ema | eman | dual
    decay: float | None = 0.999       # None: the paper's EMAN decay for the backbone
    unlabeled: str | None = None      # COCO json, pseudo-label json, or image folder
    unlabeled_images: str | None = None
    unlabeled_boxes: str = "whole"    # image folder only: "whole" or a detection results json
    unlabeled_batch_size: int = 32
    unsup_weight: float = 1.0
    clamp_targets: bool = False       # teacher heatmaps clamped to [0, 1] (a Gaussian
                                      # target's range) before the unlabeled loss; off:
                                      # the paper's raw heatmaps (rounds-recipe.md)
    init_from: str | None = None      # start the student from this checkpoint (warm start)
    epoch_unit: str = "labeled"       # labeled | unlabeled: what one epoch is a pass over
    strong_affine: bool = False
    joint_cutout: bool = False
    rand_augment: bool = False
    rand_augment_ops: int = 2
    rand_augment_magnitude: float = 9.0
    mum: bool = False                 # image-level mix/unmix
    feature_mum: bool = False         # Pose-MUM: stochastic mixing after stages
    mix_stages: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3")
    mix_prob: float = 0.5
    unmix_at: str = "encoder"         # layer2 | encoder | decoder
    group_size: int = 4
    tiles: tuple[int, int] = (4, 3)

    def __post_init__(self) -> None:
        rows, cols = self.tiles  # as DataConfig.input_hw
        self.tiles = (rows, cols)


@dataclass
class PseudoConfig:
    """Pseudo-labeled persons mixed into every labeled batch (the rounds' retraining).

    `labels` empty: plain training. Otherwise each batch holds exactly
    round(labeled_ratio × batch_size) labeled crops, then pseudo-labeled ones, which are
    noised (`noise`, comma list of affine|randaugment|cutout|mum, or none) and whose joint
    losses are weighted by `weight` (none | score | agreement, read from the json); the
    pseudo part's loss is scaled by `loss_weight` (below 1: the clean labels set the
    precise peak positions, the pseudo-labels add robustness without pulling as hard).
    """

    labels: str | None = None         # COCO json of pseudo-labels (written by merge)
    images: str | None = None         # folder its file_names are relative to
    labeled_ratio: float = 0.5
    noise: str = "randaugment,cutout"
    weight: str = "none"              # none | score | agreement
    loss_weight: float = 1.0          # scale of the pseudo part's loss (≥ 0)


@dataclass
class RuntimeConfig:
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    precision: str = "auto"           # auto | fp32 | bf16 | fp16
    channels_last: bool = True
    cudnn_benchmark: bool = True      # CUDA: autotune conv algorithms for the fixed crop shapes
    teacher_cuda_graph: bool = True   # CUDA: replay the eval-mode teacher's forward from a graph
    seed: int = 0
    val_every: int = 1                # epochs between validations (0: never)
    val_flip: bool = False
    log_every: int = 20               # steps between metrics.jsonl rows


@dataclass
class TrainConfig:
    preset: str = "supervised"
    out: str = "runs/train"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return _build(cls, data)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(_plain(self.to_dict()), sort_keys=False))
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(read_config(path))


def read_config(path: str | Path) -> dict[str, Any]:
    """The settings a YAML config file holds (an empty file holds none)."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read config ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config is a YAML mapping of settings")
    return data


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _build(cls: type, data: dict[str, Any]) -> Any:
    """Nested dataclass from a dict; unknown keys are an error that names them."""
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} setting(s): {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {}
    defaults = cls()
    for name, value in data.items():
        current = getattr(defaults, name)
        if is_dataclass(current) and isinstance(value, dict):
            kwargs[name] = _build(type(current), value)
        elif isinstance(current, tuple) and isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)
