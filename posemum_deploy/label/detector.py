"""Person boxes from a torchvision detector whose weights sit in a local file.

No model hub: the network is built with `weights=None, weights_backbone=None` and the
file is loaded with `weights_only=True`, so a labeling box needs no internet and a
weights file cannot run code. The architecture is named (`detector:ARCH:WEIGHTS`) or
found by matching the file's state-dict keys and shapes against the known builders.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from posemum_deploy.artifacts import sha256_file
from posemum_deploy.errors import ArtifactError, ConfigError
from posemum_deploy.label.boxes import BoxLimits

log = logging.getLogger(__name__)
COCO_PERSON_LABEL = 1
# Tried in this order when the file does not name its architecture (cheap ones first).
ARCHITECTURES = ("ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_fpn",
                 "fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_resnet50_fpn",
                 "fasterrcnn_resnet50_fpn_v2", "retinanet_resnet50_fpn")


def build_detector(arch: str, num_classes: int = 91, device: str | None = None) -> Any:
    """An untrained torchvision detector of the named architecture (no downloads).

    `device="meta"` builds the skeleton without allocating or initialising weights (a
    random init costs seconds); load real weights into it with `assign=True`.
    """
    import torch
    import torchvision.models.detection as det

    if arch not in ARCHITECTURES:
        raise ConfigError(f"detector architecture {arch!r} unknown; choose {', '.join(ARCHITECTURES)}")
    with torch.device(device or "cpu"):
        return getattr(det, arch)(weights=None, weights_backbone=None, num_classes=num_classes)


def _read_state(path: Path) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise ArtifactError(f"{path}: detector weights not found; pass --boxes detector:FILE.pth")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a foreign file
        raise ArtifactError(f"{path}: not a loadable state dict ({type(e).__name__}); save "
                            "one with torch.save(model.state_dict(), FILE)") from e
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not any(str(k).startswith("backbone.") for k in state):
        raise ArtifactError(f"{path}: not a torchvision detector state dict (no backbone.* "
                            "tensors); save one with torch.save(detector.state_dict(), FILE)")
    return state


def load_detector(path: str | Path, arch: str | None = None) -> tuple[Any, str]:
    """(detector in eval mode, architecture name) from a local weights file."""
    path = Path(path)
    state = _read_state(path)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for name in ([arch] if arch else ARCHITECTURES):
        model = build_detector(name, device="meta")
        if {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes:
            model.load_state_dict(state, assign=True)
            return model.eval(), name
        if arch:
            try:
                model.load_state_dict(state, assign=True)
            except RuntimeError as e:
                raise ArtifactError(f"{path}: not {arch} weights ({str(e).splitlines()[0]}); "
                                    "check the architecture name or drop it to auto-detect") from e
    raise ArtifactError(f"{path}: weights match none of {', '.join(ARCHITECTURES)} (91 COCO "
                        "classes); name the architecture with detector:ARCH:FILE")


@dataclass
class TorchvisionDetectorBoxes:
    """Person boxes (COCO label 1) from a torchvision detector, loaded lazily per process."""

    path: Path
    arch: str | None
    limits: BoxLimits = field(default_factory=BoxLimits)
    sha256: str = ""

    def __post_init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, arg: str, limits: BoxLimits) -> TorchvisionDetectorBoxes:
        """`WEIGHTS` or `ARCH:WEIGHTS`; checks the file loads now, not in a worker."""
        name, sep, rest = arg.partition(":")
        arch, path = (name, Path(rest)) if sep and name in ARCHITECTURES else (None, Path(arg))
        source = cls(path, arch, limits, sha256_file(path) if path.is_file() else "")
        _, source.arch = source._load()
        return source

    def _load(self) -> tuple[Any, str]:
        with self._lock:
            if self._model is None:
                self._model, self.arch = load_detector(self.path, self.arch)
                log.info("detector %s loaded from %s", self.arch, self.path)
            assert self.arch is not None  # load_detector set it with the model
            return self._model, self.arch

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k not in ("_model", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self.__post_init__()

    def boxes(self, rel_path: str, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        model, _ = self._load()
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
        with torch.inference_mode():
            out = model([x])[0]
        person = (out["labels"] == COCO_PERSON_LABEL).numpy()
        xyxy = out["boxes"].numpy()[person].astype(np.float64)
        xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        h, w = image.shape[:2]
        return self.limits.apply(xywh, out["scores"].numpy()[person], w, h)

    def identity(self) -> dict[str, Any]:
        return {"kind": "detector", "arch": self.arch, "file_sha256": self.sha256,
                **vars(self.limits)}
