"""Load a trained network from a checkpoint without importing any training code.

Checkpoints are plain dicts of tensors and Python scalars, loaded with
`torch.load(weights_only=True)`, so a checkpoint from an untrusted source cannot run code.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from posemum_deploy.artifacts import ModelMetadata, sha256_file
from posemum_deploy.errors import ArtifactError
from posemum_deploy.models.simple_baseline import SimpleBaseline, build_model

WEIGHT_KEYS = {"teacher": "teacher", "student": "model"}


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """torch.load with weights_only=True and a clear error for a missing or bad file.

    `mmap=True` maps the tensors from the file instead of reading them, for a caller that
    wants only the metadata (backbone, step, config): a ResNet-50 checkpoint read for its
    backbone name costs the pickle, not its 100 MB of weights."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: checkpoint not found; pass RUN_DIR/checkpoints/best.pt")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:  # torch's text would suggest weights_only=False
        raise ArtifactError(f"{path}: not a loadable posemum checkpoint (not a torch file, or "
                            "it holds objects beyond tensors and plain containers, which "
                            "posemum's weights_only loading refuses); pass a checkpoint "
                            "written by `posemum train`") from e
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        raise ArtifactError(f"{path}: not a loadable posemum checkpoint ({type(e).__name__}: "
                            f"{str(e).splitlines()[0].split('. ')[0][:200]}); a truncated "
                            "copy or an interrupted save reads so: copy or save it again") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_meta" not in ckpt:
        raise ArtifactError(f"{path}: not a posemum checkpoint (no 'model'/'model_meta'); "
                            "train one with `posemum train`")
    return ckpt


def load_model(path: str | Path, weights: str = "teacher") -> tuple[SimpleBaseline, ModelMetadata]:
    """Rebuild the network of a checkpoint in eval mode, with its metadata.

    `weights="teacher"` falls back to the student when the run had no teacher
    (supervised presets).
    """
    if weights not in WEIGHT_KEYS:
        raise ArtifactError(f"weights must be 'teacher' or 'student', got {weights!r}")
    ckpt = read_checkpoint(path)
    meta = ModelMetadata.from_dict(ckpt["model_meta"])
    key = WEIGHT_KEYS[weights]
    state = ckpt.get(key) or ckpt["model"]
    used = weights if ckpt.get(key) else "student"
    model = build_model(meta.backbone, meta.num_joints, deconv_channels=meta.deconv_channels)
    model.load_state_dict(state)
    model.eval()
    meta.weights = used
    meta.source_checkpoint_sha256 = sha256_file(path)
    return model, meta
