"""posemum: Pose-MUM+ semi-supervised 2D human pose, from training to bulk pseudo-labels."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
