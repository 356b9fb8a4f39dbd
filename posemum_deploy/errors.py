"""The toolkit's error types.

Every error a user can cause (bad file, wrong option, missing runtime) derives from
PosemumError; the CLI turns these into one-line messages that name the file and the fix.
"""
from __future__ import annotations

import importlib
from types import ModuleType


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


def import_optional(module: str, install_hint: str) -> ModuleType:
    """Import an optional runtime, or raise BackendUnavailableError saying how to get it.

    Runtimes (onnxruntime, TensorRT, OpenVINO) are extras: a missing one must be a
    one-line error with the install command, never an ImportError traceback.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise BackendUnavailableError(install_hint) from e
