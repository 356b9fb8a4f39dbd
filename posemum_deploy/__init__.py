"""posemum: Pose-MUM+ semi-supervised 2D human pose, from training to bulk pseudo-labels.

The public API is imported lazily so that `import posemum_deploy` stays cheap on a
labeling box that never trains (and never imports a runtime it does not use).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_API: dict[str, str] = {
    "build_model": "posemum_deploy.models.simple_baseline",
    "load_model": "posemum_deploy.models.checkpoint",
    "HeatmapCodec": "posemum_deploy.data.codec",
    "generate_dataset": "posemum_deploy.data.synthetic",
    "read_image": "posemum_deploy.data.images",
    "TrainConfig": "posemum_deploy.training.config",
    "train": "posemum_deploy.training.trainer",
    "apply_preset": "posemum_deploy.training.presets",
    "PRESETS": "posemum_deploy.training.presets",
    "load_backend": "posemum_deploy.inference.backends",
    "PoseEstimator": "posemum_deploy.inference.pipeline",
    "predict_coco": "posemum_deploy.inference.predict",
    "export_model": "posemum_deploy.export.formats",
    "ModelMetadata": "posemum_deploy.artifacts",
    "label_folder": "posemum_deploy.label.runner",
    "LabelSettings": "posemum_deploy.label.runner",
    "RunSettings": "posemum_deploy.label.runner",
    "merge_labels": "posemum_deploy.label.merge",
    "evaluate_results": "posemum_deploy.evaluation.coco_eval",
    "run_rounds": "posemum_deploy.rounds",
    "PosemumError": "posemum_deploy.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'posemum_deploy' has no attribute {name!r}")
