"""Artifacts: ModelMetadata, its sidecar files and file hashes.

ModelMetadata is the one description that travels with every artifact.

Checkpoints carry it under "model_meta", ONNX files in their metadata props and every
exported artifact in a `model.json` sidecar, so that any runtime can rebuild the exact
pre/post-processing (sizes, normalisation, codec, flip pairs) without the training code.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from posemum_deploy.data.coco import FLIP_PAIRS, KEYPOINT_NAMES
from posemum_deploy.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from posemum_deploy.errors import ArtifactError

SIDECAR_NAME = "model.json"


@dataclass
class ModelMetadata:
    """What a runtime needs to turn image crops into keypoints with this network."""

    backbone: str = "resnet18"
    num_joints: int = 17
    deconv_channels: int = 256
    input_hw: tuple[int, int] = (256, 192)
    heatmap_hw: tuple[int, int] = (64, 48)
    sigma: float = 2.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"
    layout: str = "NCHW"
    keypoint_names: tuple[str, ...] = KEYPOINT_NAMES
    flip_pairs: tuple[tuple[int, int], ...] = FLIP_PAIRS
    format: str = "torch"
    precision: str = "fp32"
    weights: str = "teacher"
    source_checkpoint_sha256: str = ""
    artifact_sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    tool_versions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Callers pass lists too (json, YAML, user code); the runtimes compare tuples.
        (h, w), (hh, hw) = self.input_hw, self.heatmap_hw
        self.input_hw, self.heatmap_hw = (h, w), (hh, hw)
        (r, g, b), (sr, sg, sb) = self.mean, self.std
        self.mean, self.std = (r, g, b), (sr, sg, sb)
        self.keypoint_names = tuple(self.keypoint_names)
        self.flip_pairs = tuple((left, right) for left, right in self.flip_pairs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMetadata:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})  # lists become tuples

    def save(self, path: str | Path) -> Path:
        """Write as json (a directory gets `model.json` inside it)."""
        path = Path(path)
        if path.is_dir():
            path = path / SIDECAR_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ModelMetadata:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError as e:
            raise ArtifactError(f"{path}: metadata sidecar missing; re-export the model with "
                                "`posemum export` so model.json sits beside the artifact") from e
        except (ValueError, TypeError) as e:  # bad json, or fields of the wrong shape
            raise ArtifactError(f"{path}: unreadable metadata sidecar ({e}); re-export") from e


def sidecar_path(artifact: str | Path) -> Path:
    """`model.onnx` → `model.json` beside it (one sidecar per artifact)."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.stem + ".json")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed (engines and checkpoints can be large)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_sidecar(artifact: str | Path, fmt: str = "onnx") -> ModelMetadata:
    """The artifact's model.json, checked to describe this very file (sha256).

    A missing sidecar or one written for another file (a re-export beside an old one,
    a copied engine) is refused: running with the wrong sizes or normalisation gives
    silently wrong keypoints.
    """
    artifact = Path(artifact)
    side = sidecar_path(artifact)
    fix = f"re-export with `posemum export CKPT --format {fmt} --out {artifact}`"
    if not artifact.is_file():
        raise ArtifactError(f"{artifact}: model file not found")
    if not side.is_file():
        raise ArtifactError(f"{artifact}: metadata sidecar {side.name} is missing beside it; {fix}")
    meta = ModelMetadata.load(side)
    if not meta.artifact_sha256:
        raise ArtifactError(f"{side}: records no artifact sha256, so it cannot be matched to "
                            f"{artifact.name}; {fix}")
    if meta.artifact_sha256 != sha256_file(artifact):
        raise ArtifactError(f"{side} does not match {artifact.name} (sha256 differs: the file "
                            f"was changed or the sidecar belongs to another export); {fix}")
    return meta
