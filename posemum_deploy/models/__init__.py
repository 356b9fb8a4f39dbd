"""Pose networks."""
from posemum_deploy.models.simple_baseline import BACKBONES, STAGE_NAMES, SimpleBaseline, build_model

__all__ = ["BACKBONES", "STAGE_NAMES", "SimpleBaseline", "build_model"]
