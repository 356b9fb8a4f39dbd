"""COCO keypoint evaluation: pycocotools OKS AP/AR as 10 named numbers.

`evaluate_results` is a thin, validated wrapper around
`COCOeval(gt, gt.loadRes(dt), "keypoints")` with pycocotools' defaults. It checks the
inputs first because pycocotools fails on bad ones with bare asserts and KeyErrors deep
inside its loops; here every problem is one line naming the file and the fix.
Nothing in the numbers is changed: results keep whatever keys they carry (pycocotools
takes a result's area from its `bbox` when it has one, else from its keypoints' extent).
"""
from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posemum_deploy.data.coco import NUM_KEYPOINTS, load_coco_keypoints, load_json
from posemum_deploy.errors import AnnotationError

logger = logging.getLogger(__name__)

# pycocotools' `COCOeval.stats` order for iouType="keypoints".
STAT_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APm", "APl",
                               "AR", "AR50", "AR75", "ARm", "ARl")
RESULT_KEYS: tuple[str, ...] = ("image_id", "category_id", "keypoints", "score")
# Every key pycocotools' keypoint evaluation reads from a GT annotation.
GT_ANN_KEYS: tuple[str, ...] = ("id", "image_id", "category_id", "keypoints",
                                "num_keypoints", "area", "bbox", "iscrowd")

GroundTruth: TypeAlias = str | Path | Mapping[str, Any] | COCO
Results: TypeAlias = str | Path | Sequence[Mapping[str, Any]]


def evaluate_results(gt: GroundTruth, results: Results) -> dict[str, float]:
    """Score COCO keypoint results against GT; returns the 10 stats keyed by STAT_NAMES.

    gt: a person-keypoints annotation json (path), its loaded dict, or a pycocotools COCO.
    results: a COCO results json (path) or list of dicts with image_id, category_id,
    keypoints (17*3 numbers) and score. An empty list scores 0.0 everywhere (with a
    warning) instead of crashing inside pycocotools. A stat whose area range has no GT
    is -1.0, as pycocotools reports it.
    """
    coco_gt, gt_name = _load_gt(gt)
    dets, res_name = _load_results(results)
    _check_results(dets, res_name, coco_gt, gt_name)
    if not dets:
        logger.warning("%s: no keypoint results to score; every stat is 0.0", res_name)
        return dict.fromkeys(STAT_NAMES, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_dt = coco_gt.loadRes([dict(d) for d in dets])  # copies: loadRes mutates
        coco_eval = COCOeval(coco_gt, coco_dt, "keypoints")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return {name: float(v) for name, v in zip(STAT_NAMES, coco_eval.stats, strict=True)}


def _load_gt(gt: GroundTruth) -> tuple[COCO, str]:
    """Turn any accepted GT form into an indexed COCO object plus a name for messages."""
    if isinstance(gt, COCO):
        name = "<COCO object>"
        _check_gt(gt.dataset, name)
        return gt, name
    if isinstance(gt, (str, Path)):
        name = str(gt)
        data = load_coco_keypoints(gt)
    elif isinstance(gt, Mapping):
        name, data = "<GT dict>", dict(gt)
    else:
        raise AnnotationError(f"GT of type {type(gt).__name__} not understood; pass a COCO "
                              "json path, its loaded dict or a pycocotools COCO object")
    _check_gt(data, name)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco, name


def _check_gt(data: Any, name: str) -> None:
    """Check the GT structure and the annotation keys pycocotools' keypoint eval reads."""
    if not isinstance(data, Mapping) or not all(k in data for k in
                                                ("images", "annotations", "categories")):
        raise AnnotationError(f"{name}: not a COCO annotation file (needs 'images', "
                              "'annotations' and 'categories'); pass a person_keypoints json")
    for ann in data["annotations"]:
        missing = [k for k in GT_ANN_KEYS if k not in ann]
        if missing:
            raise AnnotationError(
                f"{name}: annotation {ann.get('id')} lacks {', '.join(missing)}; COCO "
                "keypoint evaluation needs them on every annotation")
        if len(ann["keypoints"]) != 3 * NUM_KEYPOINTS:
            raise AnnotationError(
                f"{name}: annotation {ann['id']} has {len(ann['keypoints'])} keypoint "
                f"numbers, expected {3 * NUM_KEYPOINTS} (COCO-17 x,y,v); convert the file")
    if not any(a["num_keypoints"] > 0 for a in data["annotations"]):
        raise AnnotationError(f"{name}: no person annotations with keypoints; point to a "
                              "person_keypoints json with labelled people")


def _load_results(results: Results) -> tuple[list[Mapping[str, Any]], str]:
    """Read a results file (or take a list) and check that it is a list of objects."""
    if isinstance(results, (str, Path)):
        name, dets = str(results), load_json(results)
    else:
        name, dets = "<results list>", results
    if not isinstance(dets, (list, tuple)):
        raise AnnotationError(
            f"{name}: results must be a json list of detections, got "
            f"{type(dets).__name__}; for a GT annotation file use --ann")
    return list(dets), name


def _check_results(dets: list[Mapping[str, Any]], name: str,
                   coco_gt: COCO, gt_name: str) -> None:
    """Reject results pycocotools would crash on or silently ignore, naming the entry."""
    img_ids, cat_ids = set(coco_gt.getImgIds()), set(coco_gt.getCatIds())
    for i, det in enumerate(dets):
        if not isinstance(det, Mapping):
            raise AnnotationError(f"{name}: entry {i} is {type(det).__name__}, not an object "
                                  f"with keys {', '.join(RESULT_KEYS)}")
        missing = [k for k in RESULT_KEYS if k not in det]
        if missing:
            raise AnnotationError(f"{name}: entry {i} lacks {', '.join(missing)}; every "
                                  f"result needs {', '.join(RESULT_KEYS)}")
        if np.size(det["keypoints"]) != 3 * NUM_KEYPOINTS:
            raise AnnotationError(
                f"{name}: entry {i} has {np.size(det['keypoints'])} keypoint numbers, "
                f"expected {3 * NUM_KEYPOINTS} (COCO-17 x,y,score per joint)")
        if det["image_id"] not in img_ids:
            raise AnnotationError(f"{name}: entry {i} has image_id {det['image_id']!r}, "
                                  f"which is not in {gt_name}; score against the GT it "
                                  "was predicted on")
        if det["category_id"] not in cat_ids:
            raise AnnotationError(f"{name}: entry {i} has category_id {det['category_id']!r}, "
                                  f"not one of {sorted(cat_ids)} in {gt_name}; person is 1")
