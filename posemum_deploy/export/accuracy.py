"""Accuracy guard for reduced-precision artifacts (bf16, INT8, fp16).

A quantised or bf16 model can look fine on a smoke test and still move joints by
pixels, so before such an artifact is kept it is compared with its fp32 reference on
real crops (keypoint displacement in crop pixels, heatmap difference) and, when a
labelled val set is given, on COCO AP; an AP drop above `max_ap_drop` points refuses it.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from posemum_deploy.errors import ArtifactError, ConfigError
from posemum_deploy.inference.backends import Backend, load_backend
from posemum_deploy.inference.pipeline import PoseEstimator

log = logging.getLogger(__name__)
CONFIDENT = 0.2  # joints the reference scores at least this high (SimpleBaseline's rescoring cut)


@dataclass
class AccuracyReport:
    """How far a reduced-precision model is from its fp32 reference.

    Displacements are in network-input (crop) pixels; AP values are pycocotools' 0–1
    numbers and `ap_drop` is in AP points (×100), positive when the candidate is worse.
    """

    candidate: str
    reference: str
    precision: str
    num_crops: int
    mean_px: float
    max_px: float
    confident_mean_px: float
    max_abs_heatmap_diff: float
    ap_reference: float | None = None
    ap: float | None = None
    ap_drop: float | None = None
    max_ap_drop: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        text = (f"{self.precision} vs fp32 on {self.num_crops} crops: keypoints move "
                f"{self.mean_px:.2f} px mean, {self.max_px:.2f} px max "
                f"({self.confident_mean_px:.2f} px mean on confident joints)")
        if self.ap_drop is not None:
            text += (f"; AP {self.ap:.4f} vs {self.ap_reference:.4f} "
                     f"(drop {self.ap_drop:.2f} points, limit {self.max_ap_drop})")
        return text


def _open(model: str | Path | Backend) -> Backend:
    if isinstance(model, Backend):
        return model
    return load_backend(model, "auto")


def _describe(backend: Backend) -> str:
    """The artifact path when the backend has one, else its runtime name."""
    path = getattr(backend, "path", None)
    return str(path) if path is not None else backend.name


def keypoint_displacement(candidate: np.ndarray, reference: np.ndarray,
                          estimator: PoseEstimator) -> tuple[float, float, float]:
    """Heatmaps [N, K, h, w] of both → (mean px, max px, mean px over confident joints)."""
    xy_c, _ = estimator.codec.decode(candidate)
    xy_r, score_r = estimator.codec.decode(reference)
    dist = np.linalg.norm(xy_c - xy_r, axis=-1)
    confident = score_r >= CONFIDENT
    conf_mean = float(dist[confident].mean()) if confident.any() else 0.0
    return float(dist.mean()), float(dist.max()), conf_mean


def val_ap(backend: Backend, val_ann: str | Path, val_images: str | Path, batch_size: int) -> float:
    """COCO keypoint AP of a backend on a val set with GT boxes."""
    from posemum_deploy.evaluation.coco_eval import evaluate_results
    from posemum_deploy.inference.predict import predict_coco

    results = predict_coco(backend, val_ann, val_images, batch_size=batch_size)
    return float(evaluate_results(val_ann, results)["AP"])


def check_accuracy(artifact: str | Path | Backend, reference: str | Path | Backend,
                   crops: np.ndarray, val_ann: str | Path | None = None,
                   val_images: str | Path | None = None, max_ap_drop: float = 1.0,
                   batch_size: int = 32) -> AccuracyReport:
    """Compare `artifact` with its fp32 `reference` on uint8 crops [N, H, W, 3].

    Paths are opened with `load_backend(..., "auto")`; pass open backends to choose the
    runtime. Raises ArtifactError when the AP drop on (val_ann, val_images) exceeds
    `max_ap_drop` points; without a val set it only reports.
    """
    if (val_ann is None) != (val_images is None):
        raise ConfigError("the accuracy guard needs both --val-ann and --val-images, or neither")
    if len(crops) == 0:
        raise ConfigError("the accuracy guard needs real crops to compare on; pass --calib DIR")
    cand, ref = _open(artifact), _open(reference)
    cand_est = PoseEstimator(cand, batch_size=batch_size)
    ref_est = PoseEstimator(ref, batch_size=batch_size)
    hm_c, hm_r = cand_est.heatmaps(crops), ref_est.heatmaps(crops)
    mean_px, max_px, conf_px = keypoint_displacement(hm_c, hm_r, ref_est)
    report = AccuracyReport(
        candidate=_describe(cand), reference=_describe(ref),
        precision=cand.metadata.precision, num_crops=len(crops), mean_px=mean_px, max_px=max_px,
        confident_mean_px=conf_px, max_abs_heatmap_diff=float(np.abs(hm_c - hm_r).max()),
        max_ap_drop=max_ap_drop)
    if val_ann is not None and val_images is not None:  # both or neither, checked above
        report.ap_reference = val_ap(ref, val_ann, val_images, batch_size)
        report.ap = val_ap(cand, val_ann, val_images, batch_size)
        report.ap_drop = 100.0 * (report.ap_reference - report.ap)
    log.info("accuracy guard: %s", report.summary())
    if report.ap_drop is not None and report.ap_drop > max_ap_drop:
        raise ArtifactError(f"{report.candidate}: refused, {report.summary()}; keep fp32, "
                            "calibrate on more/better crops (--calib), or raise --max-ap-drop")
    return report
