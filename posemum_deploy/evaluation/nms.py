"""Instance rescoring and OKS-NMS, the SimpleBaseline COCO test protocol.

A top-down model predicts one pose per person box, so overlapping boxes give
near-duplicate poses; left in, they count as false positives and lower AP. SimpleBaseline
(Xiao et al. 2018, `lib/dataset/coco.py`, `lib/nms/nms.py`) therefore:
  1. rescores each instance: box score x mean of its joint scores above 0.2;
  2. per image, greedily keeps the best-scoring pose and drops every other pose whose
     OKS with it exceeds 0.9.
The OKS here uses the *prediction's* area for both poses: SimpleBaseline's
`area = prod(scale * 200)`, i.e. w*h of the person box after fixing its aspect ratio
to 0.75 and padding it by 1.25 -- the box the crop was taken from, not the raw detector
box. `postprocess_results` takes that value from an entry's `area`, else `scale` (x200),
else `bbox` w*h (the raw box: close, not identical). NumPy only, vectorised over poses.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from posemum_deploy.data.coco import OKS_SIGMAS
from posemum_deploy.errors import AnnotationError

PIXEL_STD = 200.0  # SimpleBaseline's unit for `scale`


def rescore(keypoint_scores: np.ndarray, box_scores: np.ndarray,
            thr: float = 0.2) -> np.ndarray:
    """Instance scores [N] = box score x mean of the joint scores [N, K] above thr.

    Low-confidence joints are left out of the mean so occluded joints do not drag a
    good detection down; an instance with no joint above thr scores 0.
    """
    kps = np.asarray(keypoint_scores, dtype=np.float64)
    above = kps > thr
    count = above.sum(axis=1)
    total = np.where(above, kps, 0.0).sum(axis=1)
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return np.asarray(box_scores, dtype=np.float64) * mean


def oks_iou(g: np.ndarray, d: np.ndarray, area_g: float, areas_d: np.ndarray,
            sigmas: np.ndarray = OKS_SIGMAS) -> np.ndarray:
    """OKS between one pose g [K, 3] (or flat [3K]) and M poses d [M, K, 3] -> [M].

    As in SimpleBaseline's `oks_iou`: every joint counts (no visibility test) and the
    scale is the mean of the two areas, so the measure is symmetric.
    """
    g = np.asarray(g, dtype=np.float64).reshape(1, -1, 3)
    d = np.asarray(d, dtype=np.float64).reshape(-1, g.shape[1], 3)
    return oks_matrix(g, d, np.asarray([area_g], dtype=np.float64),
                      np.asarray(areas_d, dtype=np.float64), sigmas)[0]


def oks_matrix(g: np.ndarray, d: np.ndarray, areas_g: np.ndarray, areas_d: np.ndarray,
               sigmas: np.ndarray = OKS_SIGMAS) -> np.ndarray:
    """OKS of every pose in g [G, K, 3] with every pose in d [D, K, 3] -> [G, D]."""
    variances = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2
    sq_dist = ((d[None, :, :, :2] - g[:, None, :, :2]) ** 2).sum(axis=3)  # [G, D, K]
    scale = (areas_g[:, None] + areas_d[None, :]) / 2.0 + np.spacing(1)
    return np.exp(-(sq_dist / variances / scale[:, :, None] / 2.0)).mean(axis=2)


def oks_nms(kpts: np.ndarray, scores: np.ndarray, areas: np.ndarray, thr: float = 0.9,
            sigmas: np.ndarray = OKS_SIGMAS) -> list[int]:
    """Greedy OKS-NMS over one image's poses kpts [N, K, 3]; returns kept indices.

    Kept indices come in descending score order. A pose is dropped when its OKS with an
    already kept, higher-scoring pose is above thr (ties in score keep the earlier one).
    """
    kpts = np.asarray(kpts, dtype=np.float64).reshape(len(scores), -1, 3)
    areas = np.asarray(areas, dtype=np.float64)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    # Every pair at once, then the greedy pass over the matrix: a labeler calls this for
    # every image.
    overlap = oks_matrix(kpts, kpts, areas, areas, sigmas)
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        order = rest[overlap[i, rest] <= thr]
    return keep


def postprocess_results(results: Iterable[Mapping[str, Any]], kpt_thr: float = 0.2,
                        oks_thr: float = 0.9,
                        sigmas: np.ndarray = OKS_SIGMAS) -> list[dict[str, Any]]:
    """Rescore raw per-box predictions and OKS-NMS them per image -> COCO results list.

    Each input entry: image_id, category_id, keypoints (K*3: x, y, joint score), score
    (the box score), and one of area / scale / bbox for the OKS area (see module doc).
    Output entries carry only image_id, category_id, keypoints and the new score, as
    SimpleBaseline writes them: a `bbox` would make pycocotools take the result's area
    from the box rather than from the keypoints, changing the APm/APl split.
    """
    by_image: dict[Any, list[Mapping[str, Any]]] = {}
    for entry in results:
        by_image.setdefault(entry["image_id"], []).append(entry)
    out: list[dict[str, Any]] = []
    for entries in by_image.values():
        kpts = np.array([e["keypoints"] for e in entries], dtype=np.float64)
        kpts = kpts.reshape(len(entries), -1, 3)
        box_scores = np.array([e["score"] for e in entries], dtype=np.float64)
        scores = rescore(kpts[:, :, 2], box_scores, kpt_thr)
        areas = np.array([_instance_area(e) for e in entries])
        for i in oks_nms(kpts, scores, areas, oks_thr, sigmas):
            out.append({"image_id": entries[i]["image_id"],
                        "category_id": entries[i]["category_id"],
                        "keypoints": kpts[i].reshape(-1).tolist(),
                        "score": float(scores[i])})
    return out


def _instance_area(entry: Mapping[str, Any]) -> float:
    """The OKS-NMS area of one prediction: area, else prod(scale*200), else bbox w*h."""
    if "area" in entry:
        return float(entry["area"])
    if "scale" in entry:
        return float(np.prod(np.asarray(entry["scale"], dtype=np.float64) * PIXEL_STD))
    if "bbox" in entry:
        return float(entry["bbox"][2]) * float(entry["bbox"][3])
    raise AnnotationError(f"prediction for image {entry.get('image_id')!r} has no area, "
                          "scale or bbox; OKS-NMS needs one of them to size the person")

