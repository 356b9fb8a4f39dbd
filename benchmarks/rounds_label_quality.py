"""Pseudo-label quality for benchmarks/rounds_synthetic.py: pseudo-labels matched to the
unlabeled set's hidden truth (rows q, u-masked), and the truth written as pseudo-labels
(row u). The synthetic sets know every person's true joints; a real folder would not."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from posemum_deploy.data.coco import OKS_SIGMAS


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / max(a[2] * a[3] + b[2] * b[3] - inter, 1e-9)


def file_names(coco: dict) -> dict[int, str]:
    """Image id → file name: the key that the unlabeled set and its pseudo-labels share
    (their image ids differ)."""
    return {im["id"]: im["file_name"] for im in coco["images"]}


def persons_by_file(coco: dict) -> dict[str, list[dict]]:
    """A COCO json's annotations grouped by their image's file name."""
    names = file_names(coco)
    by_file: dict[str, list[dict]] = {}
    for a in coco["annotations"]:
        by_file.setdefault(names[a["image_id"]], []).append(a)
    return by_file


def same_person(box: list[float], candidates: list[dict], min_iou: float = 0.7) -> dict | None:
    """The candidate whose box overlaps `box` most, if that IoU reaches `min_iou` (label
    boxes are the true ones, clipped to the image)."""
    best = max(candidates, key=lambda c: _iou(c["bbox"], box), default=None)
    return best if best is not None and _iou(best["bbox"], box) >= min_iou else None


def label_quality(pseudo: str, truth: Path) -> dict[str, float]:
    """Kept pseudo-joints against the hidden truth (persons match by image and best box
    IoU, `same_person`): share within OKS 0.5, keep rate (kept / visible true joints),
    mean OKS, all ×100."""
    gt = json.loads(truth.read_text())
    true = persons_by_file(gt)
    coco = json.loads(Path(pseudo).read_text())
    names = file_names(coco)
    oks, kept_visible = [], 0
    for a in coco["annotations"]:
        t = same_person(a["bbox"], true.get(names[a["image_id"]], []))
        if t is None:
            continue
        p, g = np.asarray(a["keypoints"]).reshape(-1, 3), np.asarray(t["keypoints"]).reshape(-1, 3)
        keep = (p[:, 2] > 0) & (g[:, 2] > 0)
        d2 = ((p[:, :2] - g[:, :2]) ** 2).sum(1)
        area = max(float(t.get("area") or t["bbox"][2] * t["bbox"][3]), 1.0)
        oks.extend(np.exp(-d2 / (2 * area * (2 * OKS_SIGMAS) ** 2))[keep].tolist())
        kept_visible += int(keep.sum())
    visible = sum(int((np.asarray(a["keypoints"]).reshape(-1, 3)[:, 2] > 0).sum())
                  for a in gt["annotations"])
    o = np.asarray(oks) if oks else np.zeros(1)
    return {"q-precision": 100 * float((o >= 0.5).mean()),
            "q-keep": 100 * kept_visible / max(visible, 1), "q-mean-oks": 100 * float(o.mean())}


def report_quality(pseudo: str, truth: Path, done: Callable[[str, float], None],
                   row: str = "") -> None:
    """`label_quality` as the benchmark's rows: q-precision, q-keep, q-mean-oks, or with
    `row` ("d", "r2", "notta"…) q-d-precision and so on."""
    tag = f"q-{row}-" if row else "q-"
    for key, value in label_quality(pseudo, truth).items():
        done(key.replace("q-", tag, 1), value)

def truth_at_kept_joints(truth: dict, pseudo: dict) -> dict:
    """The true labels, each joint kept only where the pseudo-label of the same person
    (`same_person`) kept it: row u-masked, which splits b's loss against u into dropped
    joints (u − u-masked) and position errors (u-masked − b)."""
    labels, names = persons_by_file(pseudo), file_names(truth)
    anns = []
    for a in truth["annotations"]:
        match = same_person(a["bbox"], labels.get(names[a["image_id"]], []))
        if match is None:
            continue
        k = np.asarray(a["keypoints"], dtype=float).reshape(-1, 3)
        k[np.asarray(match["keypoints"]).reshape(-1, 3)[:, 2] <= 0] = 0
        if (k[:, 2] > 0).any():
            anns.append({**a, "keypoints": k.reshape(-1).tolist(), "score": 1.0,
                         "num_keypoints": int((k[:, 2] > 0).sum())})
    return {**truth, "annotations": anns}


def truth_as_pseudo(out: Path, unlabeled: Path, knob: str = "") -> Path:
    """The unlabeled set's hidden truth written as pseudo-labels (row u), once; `knob`
    names the unlabeled set when it is not the default one (rounds_stages.unlabeled_knob)."""
    truth = out / f"truth_as_pseudo{knob}.json"
    if not truth.is_file():
        coco = json.loads(unlabeled.read_text())
        for ann in coco["annotations"]:
            ann["score"] = 1.0
        truth.write_text(json.dumps(coco))
    return truth


def truth_masked_as_pseudo(out: Path, truth: Path, pseudo: str, knob: str = "") -> Path:
    """`truth_at_kept_joints` of the truth file `truth` (truth_as_pseudo) and the labels
    `pseudo`, written once as out/truth_masked_as_pseudo{knob}.json (row u-masked); `knob`
    names the labels' knobs (rounds_stages.label_knobs)."""
    masked = out / f"truth_masked_as_pseudo{knob}.json"
    if not masked.is_file():
        masked.write_text(json.dumps(truth_at_kept_joints(
            json.loads(truth.read_text()), json.loads(Path(pseudo).read_text()))))
    return masked
