"""The toolkit's error types.

Every error a user can cause (bad file, wrong option, missing runtime) derives from
PosemumError; the CLI turns these into one-line messages that name the file and the fix.
"""
from __future__ import annotations


class PosemumError(Exception):
    """A user-facing error whose message names the input and what to do about it."""


class AnnotationError(PosemumError, ValueError):
    """A COCO/results json that cannot be used."""


class ImageError(PosemumError, ValueError):
    """An image file that cannot be decoded (missing, empty, corrupt, not an image)."""


class ConfigError(PosemumError, ValueError):
    """A configuration or option combination that cannot work."""


class BackendUnavailableError(PosemumError, RuntimeError):
    """A runtime (CUDA, TensorRT, onnxruntime, OpenVINO...) asked for but not usable here."""


class ArtifactError(PosemumError, ValueError):
    """A checkpoint, ONNX file, engine or sidecar that is missing, stale or mismatched."""
