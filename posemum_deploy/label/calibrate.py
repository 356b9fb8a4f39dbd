"""`calibrate`: per-joint thresholds at which pseudo-joints are right often enough.

A heatmap score of 0.3 means different things for a nose and an ankle, and different
things for every teacher: on a labeled set (ground-truth boxes) this measures, for each
joint type, how often a joint kept at a given threshold lies within a per-joint OKS of
0.5 of the truth (k_j = 2σ_j, s² = the annotation's area, as COCO's OKS), and picks the
lowest threshold whose kept joints reach the asked precision (e.g. 0.9). Lowest, so the
most joints are kept at that precision. The same is done for the agreement across TTA
views / ensemble members (when there is more than one view). `merge --thresholds` then
keeps a joint when its score (and agreement) reach its type's thresholds.

How the two are chosen (`search`): "each" picks each threshold alone at the asked precision
and keeps what passes both, which lands above it and drops joints either signal alone would
keep; "pair" picks the (score, agreement) pair that keeps the most joints while the joints
passing both reach it. Picking the lowest threshold that reaches a precision on one set
finds, among many candidates, one that reaches it partly by chance, more so with pairs;
`z` > 0 asks the precision's Wilson lower bound (z standard errors) to reach it instead.

The thresholds file (json) names its keypoint set, so it cannot be applied to labels of
another one. Rounds call `calibrate` each round, so it takes paths and returns the
`JointThresholds` it wrote.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from posemum_deploy.data.coco import load_coco_keypoints
from posemum_deploy.data.images import read_image
from posemum_deploy.errors import ConfigError
from posemum_deploy.inference.tta import (
    TTAEstimator,
    TTASpec,
    ensemble_estimator,
    joint_sigmas,
    make_view_crops,
    parse_tta,
)

log = logging.getLogger(__name__)
FORMAT = "posemum-joint-thresholds/1"
SEARCHES = ("each", "pair")


@dataclass
class JointThresholds:
    """Per joint type: the lowest score / agreement threshold reaching `precision` (NaN:
    not calibrated, no limit; +inf: no threshold reaches it, never keep), with what it
    keeps and the precision measured there."""

    keypoint_names: tuple[str, ...]
    score: np.ndarray
    agreement: np.ndarray
    precision: float = 0.9
    oks: float = 0.5
    search: str = "each"
    z: float = 0.0
    stats: list[dict[str, Any]] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return None if not np.isfinite(v) else round(float(v), 6)

        joints = []
        for j, name in enumerate(self.keypoint_names):
            entry = {"name": name, "score": num(self.score[j]),
                     "score_reached": not np.isposinf(self.score[j]),
                     "agreement": num(self.agreement[j]),
                     "agreement_reached": not np.isposinf(self.agreement[j])}
            entry.update(self.stats[j] if j < len(self.stats) else {})
            joints.append(entry)
        return {"format": FORMAT, "precision": self.precision, "oks": self.oks,
                "search": self.search, "confidence_z": self.z,
                "keypoint_names": list(self.keypoint_names), "source": self.source,
                "joints": joints}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2))
        return path


def load_thresholds(path: str | Path) -> JointThresholds:
    """Read a `posemum calibrate` file; a wrong or broken one is a one-line error."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise KeyError("format")
        names = tuple(data["keypoint_names"])
        joints = data["joints"]

        def limit(entry: dict[str, Any], key: str) -> float:
            if not entry.get(f"{key}_reached", True):
                return np.inf
            return np.nan if entry.get(key) is None else float(entry[key])

        score = np.array([limit(e, "score") for e in joints])
        agreement = np.array([limit(e, "agreement") for e in joints])
        if len(joints) != len(names):
            raise KeyError("joints")
    except OSError as e:
        raise ConfigError(f"--thresholds {path}: cannot read it ({e.strerror or e}); pass the "
                          "--out file of `posemum calibrate`") from e
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"--thresholds {path}: not a `posemum calibrate` thresholds file "
                          f"({e}); write one with `posemum calibrate MODEL --ann VAL.json "
                          "--images DIR --out thresholds.json`") from e
    return JointThresholds(names, score, agreement, float(data.get("precision", 0.9)),
                           float(data.get("oks", 0.5)), str(data.get("search", "each")),
                           float(data.get("confidence_z", 0.0)), source=data.get("source", {}))


def lowest_threshold(values: np.ndarray, correct: np.ndarray, precision: float,
                     z: float = 0.0) -> tuple[float, int, float]:
    """Lowest t with precision(values ≥ t) ≥ `precision` (with z > 0: its Wilson lower
    bound) → (t, kept count, precision there); (+inf, 0, nan) when no threshold reaches it.
    Ties are kept or dropped together."""
    values, correct = np.asarray(values, np.float64), np.asarray(correct, bool)
    if not len(values):
        return np.inf, 0, np.nan
    order = np.argsort(-values, kind="stable")
    v, c = values[order], correct[order]
    n = np.arange(1, len(v) + 1)
    prec = np.cumsum(c) / n
    bound = prec
    if z > 0:
        bound = (prec + z * z / (2 * n) - z * np.sqrt(prec * (1 - prec) / n + z * z / (4 * n * n))
                 ) / (1 + z * z / n)
    ends = np.flatnonzero(np.append(v[1:] != v[:-1], True))  # last index of each tie group
    ok = ends[bound[ends] >= precision]
    if not len(ok):
        return np.inf, 0, np.nan
    i = ok[-1]
    return float(v[i]), int(i + 1), float(prec[i])


def pair_threshold(scores: np.ndarray, agreement: np.ndarray, correct: np.ndarray,
                   precision: float, z: float = 0.0, grid: int = 256) -> tuple[float, float, int]:
    """The (score, agreement) thresholds keeping the most joints whose kept joints reach
    `precision` → (score t, agreement t, kept); (+inf, +inf, 0) when none does. Score
    candidates are `grid` of the observed scores (all of them for small sets); for each,
    the agreement threshold is the lowest reaching it among the joints the score keeps."""
    scores = np.asarray(scores, np.float64)
    best = (np.inf, np.inf, 0)
    if not len(scores):
        return best
    ranked = np.sort(scores)
    for ts in np.unique(ranked[np.linspace(0, len(ranked) - 1, grid).astype(int)]):
        kept = scores >= ts
        ta, n, _ = lowest_threshold(agreement[kept], correct[kept], precision, z)
        if n > best[2]:
            best = (float(ts), ta, n)
    return best


def joint_thresholds(scores: np.ndarray, agreement: np.ndarray | None, correct: np.ndarray,
                     visible: np.ndarray, names: Sequence[str], precision: float = 0.9,
                     oks: float = 0.5, search: str = "each", z: float = 0.0) -> JointThresholds:
    """Thresholds from predictions [M, K] (scores, agreement or None), whether each was
    within OKS `oks` of the truth [M, K] and whether the truth was labeled [M, K]."""
    check_search(precision, search, z)
    k = len(names)
    score_t, agree_t = np.full(k, np.nan), np.full(k, np.nan)
    stats = []
    for j in range(k):
        vis = np.asarray(visible[:, j], bool)
        n, c = int(vis.sum()), correct[vis, j]
        t, kept, prec = lowest_threshold(scores[vis, j], c, precision, z)
        score_t[j] = t
        entry = {"visible": n, "precision_all": round(float(c.mean()), 4) if n else None,
                 "kept_share_score": round(kept / n, 4) if n else 0.0,
                 "precision_score": None if np.isnan(prec) else round(prec, 4)}
        keep = scores[vis, j] >= t
        if agreement is not None:
            ta, kept_a, prec_a = lowest_threshold(agreement[vis, j], c, precision, z)
            agree_t[j] = ta
            if search == "pair":
                score_t[j], agree_t[j], _ = pair_threshold(scores[vis, j], agreement[vis, j], c,
                                                           precision, z)
            keep = (scores[vis, j] >= score_t[j]) & (agreement[vis, j] >= agree_t[j])
            entry.update(kept_share_agreement=round(kept_a / n, 4) if n else 0.0,
                         precision_agreement=None if np.isnan(prec_a) else round(prec_a, 4))
        entry.update(kept_share_both=round(float(keep.sum()) / n, 4) if n else 0.0,
                     precision_both=round(float(c[keep].mean()), 4) if keep.any() else None)
        stats.append(entry)
    return JointThresholds(tuple(names), score_t, agree_t, precision, oks, search, z, stats)


def check_search(precision: float, search: str, z: float,
                 options: Sequence[str] = ("--precision", "--search", "--confidence-z")) -> None:
    """One-line refusals of calibration settings that cannot work (`options`: their names
    on the command that was given them)."""
    if not 0 < precision <= 1:
        raise ConfigError(f"{options[0]} {precision}: must be in (0, 1], e.g. 0.9")
    if search not in SEARCHES:
        raise ConfigError(f"{options[1]} {search}: use each (each threshold alone reaches "
                          "the precision) or pair (the pair keeping the most joints)")
    if not 0 <= z < 10:
        raise ConfigError(f"{options[2]} {z}: standard errors of the precision's lower "
                          "bound, ≥ 0 (0: the measured precision; 1 is a careful choice)")


@dataclass
class Measured:
    """Predictions on ground-truth boxes and how they compare with the truth."""

    scores: np.ndarray     # [M, K] heatmap scores
    agreement: np.ndarray  # [M, K] agreement across views/models (1 with a single view)
    oks: np.ndarray        # [M, K] per-joint OKS against the truth
    visible: np.ndarray    # [M, K] truth labeled (v > 0)
    views: int = 1


def measure(estimator: TTAEstimator, ann: str | Path, images: str | Path,
            max_images: int | None = None,
            progress: Callable[[int, int], None] | None = None) -> Measured:
    """Run `estimator` on every labeled person of `ann` (its boxes, its images)."""
    data = load_coco_keypoints(ann)
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in data["annotations"]:
        if not a.get("iscrowd") and any(v > 0 for v in a.get("keypoints", [])[2::3]):
            by_image.setdefault(a["image_id"], []).append(a)
    todo = [im for im in data["images"] if im["id"] in by_image][:max_images]
    if not todo:
        raise ConfigError(f"--ann {ann}: no images with labeled people to calibrate on")
    in_h, in_w = estimator.meta.input_hw
    hw, spec = (in_h, in_w), estimator.spec
    sig2 = (2.0 * joint_sigmas(estimator.meta)) ** 2
    out: list[np.ndarray] = []
    truth: list[np.ndarray] = []
    areas: list[float] = []
    pending: list[tuple[Any, list[dict[str, Any]]]] = []

    def flush() -> None:
        if not pending:
            return
        crops = np.concatenate([b.crops for b, _ in pending])
        inverse = np.concatenate([b.inverse for b, _ in pending])
        out.append(estimator.decode(estimator.heatmaps(crops), inverse))
        pending.clear()

    for i, im in enumerate(todo):
        anns = by_image[im["id"]]
        image = read_image(Path(images) / im["file_name"])
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float64)
        pending.append((make_view_crops(image, boxes, np.ones(len(anns)), hw, spec.scales), anns))
        truth.extend(np.asarray(a["keypoints"], np.float64).reshape(-1, 3) for a in anns)
        areas.extend(float(a.get("area") or a["bbox"][2] * a["bbox"][3]) for a in anns)
        if sum(len(b.boxes) for b, _ in pending) >= estimator.batch_size:
            flush()
        if progress:
            progress(i + 1, len(todo))
    flush()
    pred, gt = np.concatenate(out), np.stack(truth)
    d2 = ((pred[..., :2] - gt[..., :2]) ** 2).sum(-1)
    ks = np.exp(-d2 / (2.0 * np.asarray(areas)[:, None] * sig2[None] + np.spacing(1)))
    return Measured(pred[..., 2], pred[..., 3], ks, gt[..., 2] > 0, estimator.num_views)


def calibrate(models: str | Path | Sequence[str | Path], ann: str | Path, images: str | Path,
              out: str | Path, tta: str | TTASpec | None = None, precision: float = 0.9,
              oks: float = 0.5, backend: str = "auto", batch_size: int = 32,
              plot: str | Path | None = "auto", max_images: int | None = None,
              progress: Callable[[int, int], None] | None = None, search: str = "each",
              z: float = 0.0) -> JointThresholds:
    """Measure `models` (one, or an ensemble) with `tta` views on the labeled set, write
    the per-joint thresholds (chosen by `search`, at confidence `z`) to `out` and
    (plot="auto": beside it, .png) the reliability plot; returns the thresholds."""
    check_search(precision, search, z)
    spec = tta if isinstance(tta, TTASpec) else parse_tta(tta)
    paths = [models] if isinstance(models, (str, Path)) else list(models)
    estimator = ensemble_estimator(paths, spec, backend, batch_size)
    m = measure(estimator, ann, images, max_images, progress)
    names = tuple(estimator.meta.keypoint_names)
    result = joint_thresholds(m.scores, m.agreement if m.views > 1 else None, m.oks >= oks,
                              m.visible, names, precision, oks, search, z)
    result.source = {"models": [Path(p).name for p in paths], "tta": str(spec),
                     "ann": Path(ann).name, "persons": len(m.scores)}
    result.save(out)
    if plot is not None:
        from posemum_deploy.label.reliability_plot import reliability_plot

        png = Path(out).with_suffix(".png") if plot == "auto" else Path(plot)
        reliability_plot(m.scores, m.oks >= oks, m.visible, names, result, png)
    return result
