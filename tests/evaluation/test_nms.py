"""Rescoring and OKS-NMS follow SimpleBaseline's COCO test protocol."""
from __future__ import annotations

import math

import numpy as np
import pytest

from posemum_deploy.data.coco import OKS_SIGMAS
from posemum_deploy.errors import AnnotationError
from posemum_deploy.evaluation.nms import oks_iou, oks_nms, postprocess_results, rescore


def _reference_oks(g, d, a_g, a_d, sigmas):
    """SimpleBaseline's lib/nms/nms.py oks_iou loop (in_vis_thre=None), flat [3K] poses."""
    variances = (sigmas * 2) ** 2
    xg, yg = g[0::3], g[1::3]
    ious = np.zeros(d.shape[0])
    for n in range(d.shape[0]):
        dx, dy = d[n, 0::3] - xg, d[n, 1::3] - yg
        e = (dx ** 2 + dy ** 2) / variances / ((a_g + a_d[n]) / 2 + np.spacing(1)) / 2
        ious[n] = np.sum(np.exp(-e)) / e.shape[0]
    return ious


def test_oks_hand_computed() -> None:
    # 2 joints, sigma 0.5 -> variance (2*0.5)^2 = 1; mean area 2; joint 0 off by (1, 1):
    # e0 = 2 / 1 / 2 / 2 = 0.5, e1 = 0  ->  OKS = (exp(-0.5) + 1) / 2.
    g = np.array([[0.0, 0.0, 1.0], [5.0, 5.0, 1.0]])
    d = np.array([[[1.0, 1.0, 1.0], [5.0, 5.0, 1.0]]])
    got = oks_iou(g, d, 2.0, np.array([2.0]), sigmas=np.array([0.5, 0.5]))
    assert got.shape == (1,)
    assert got[0] == pytest.approx((math.exp(-0.5) + 1.0) / 2.0, abs=1e-12)


def test_oks_matches_simplebaseline_loop() -> None:
    rng = np.random.default_rng(0)
    g = rng.uniform(0, 100, size=(17, 3))
    d = g[None] + rng.normal(0, 5, size=(6, 17, 3))
    areas = rng.uniform(500, 5000, size=6)
    ref = _reference_oks(g.reshape(-1), d.reshape(6, -1), 1000.0, areas, OKS_SIGMAS)
    np.testing.assert_allclose(oks_iou(g, d, 1000.0, areas), ref, rtol=0, atol=1e-12)


def test_rescore_formula() -> None:
    kps = np.array([[0.9, 0.5, 0.1, 0.2],   # mean of 0.9, 0.5 (0.2 is not above 0.2)
                    [0.1, 0.0, 0.15, 0.2]])  # nothing above -> 0
    got = rescore(kps, np.array([0.8, 1.0]), thr=0.2)
    np.testing.assert_allclose(got, [0.8 * 0.7, 0.0], atol=1e-12)


def _pose(offset: float, score: float = 0.9) -> np.ndarray:
    base = np.stack([np.linspace(0, 40, 17), np.linspace(0, 80, 17)], axis=1)
    return np.concatenate([base + offset, np.full((17, 1), score)], axis=1)


def test_oks_nms_suppresses_duplicates_keeps_distinct() -> None:
    kpts = np.stack([_pose(0.0), _pose(0.5), _pose(300.0), _pose(0.2)])
    scores = np.array([0.5, 0.9, 0.7, 0.3])
    keep = oks_nms(kpts, scores, np.full(4, 4000.0), thr=0.9)
    assert keep == [1, 2]  # best of the three near-copies, and the far-away person


def test_postprocess_results_per_image() -> None:
    def entry(image_id: int, offset: float, box_score: float) -> dict:
        return {"image_id": image_id, "category_id": 1, "score": box_score,
                "keypoints": _pose(offset).reshape(-1).tolist(), "scale": [0.3, 0.4],
                "bbox": [0, 0, 10, 10]}

    raw = [entry(1, 0.0, 0.6), entry(1, 0.3, 0.8), entry(2, 0.0, 0.5), entry(1, 300.0, 0.4)]
    out = postprocess_results(raw)
    assert [(r["image_id"], r["score"]) for r in out] == [
        (1, pytest.approx(0.8 * 0.9)), (1, pytest.approx(0.4 * 0.9)), (2, pytest.approx(0.45))]
    assert set(out[0]) == {"image_id", "category_id", "keypoints", "score"}
    assert out[0]["keypoints"] == raw[1]["keypoints"]


def test_postprocess_needs_an_area() -> None:
    bad = [{"image_id": 7, "category_id": 1, "score": 1.0, "keypoints": [0.0] * 51}]
    with pytest.raises(AnnotationError, match="image 7"):
        postprocess_results(bad)


def test_matrix_nms_equals_greedy_oks_iou_reference():
    """oks_nms computes all pairs at once; it must keep exactly what the one-pose-at-a-time
    greedy loop over oks_iou keeps (ties in score included)."""
    def greedy(kpts, scores, areas, thr):
        order, keep = np.argsort(-scores, kind="stable"), []
        while order.size:
            i, rest = int(order[0]), order[1:]
            keep.append(i)
            order = rest[oks_iou(kpts[i], kpts[rest], areas[i], areas[rest]) <= thr]
        return keep

    rng = np.random.default_rng(0)
    for _ in range(500):
        n = int(rng.integers(1, 9))
        kpts = rng.random((1, 17, 3)) * 100 + rng.normal(0, rng.choice([0.5, 3, 20]), (n, 17, 3))
        scores = np.round(rng.random(n), 1)  # ties
        areas = rng.random(n) * 5000 + 10
        thr = float(rng.choice([0.3, 0.9]))
        assert oks_nms(kpts, scores, areas, thr) == greedy(kpts, scores, areas, thr)
