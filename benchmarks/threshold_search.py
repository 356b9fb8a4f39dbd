"""How `calibrate` picks per-joint thresholds, measured where the labels will be used.

Thresholds are calibrated on one labeled set (val) and applied to another (the folder to
label). On the synthetic sets the folder's truth is known, so each way of choosing them
can be scored where it matters: the share of the folder's visible joints it keeps and the
share of those within OKS 0.5 (precision), at the same asked precision. Rules compared:
`each` (each threshold alone reaches it; a joint passes both), `score` (the score
threshold alone), `pair` (the pair keeping the most joints), each at confidence z 0 and 1.

    python benchmarks/threshold_search.py --model A.pt --model B.pt --val VAL.json \
        --target FOLDER.json --cache DIR

The models' predictions (with --tta) are measured once per set and kept in --cache
(`val.npz`, `target.npz`): a rerun with other rules costs nothing.
"""
from __future__ import annotations

import argparse
import time
from datetime import date
from pathlib import Path

import numpy as np

from posemum_deploy.inference.tta import ensemble_estimator, parse_tta
from posemum_deploy.label.calibrate import joint_thresholds, measure
from posemum_deploy.system import cpu_summary

RULES = (("each", 0.0), ("score", 0.0), ("pair", 0.0), ("each", 1.0), ("score", 1.0),
         ("pair", 1.0))


def measured(models: list[str], tta: str, ann: Path, cache: Path) -> dict[str, np.ndarray]:
    """Scores, agreement, per-joint OKS and visibility of `models` on `ann`'s people."""
    if not cache.is_file():
        m = measure(ensemble_estimator(models, parse_tta(tta), "torch", 32), ann,
                    ann.parent / "images")
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, scores=m.scores, agreement=m.agreement, oks=m.oks, visible=m.visible)
    return dict(np.load(cache))


def applied(val: dict[str, np.ndarray], target: dict[str, np.ndarray], rule: str, z: float,
            precision: float) -> tuple[float, float]:
    """(keep rate, precision) on `target` of the thresholds `rule` picks on `val`, as
    `merge --thresholds` keeps joints (no limit: every joint passes)."""
    t = joint_thresholds(val["scores"], None if rule == "score" else val["agreement"],
                         val["oks"] >= 0.5, val["visible"],
                         [str(j) for j in range(val["scores"].shape[1])], precision,
                         search="each" if rule == "score" else rule, z=z)
    score = np.where(np.isnan(t.score), -np.inf, t.score)
    agreement = np.where(np.isnan(t.agreement), -np.inf, t.agreement)
    vis = target["visible"]
    keep = (target["scores"] >= score) & (target["agreement"] >= agreement) & vis
    right = keep & (target["oks"] >= 0.5)
    return keep.sum() / vis.sum(), right.sum() / max(keep.sum(), 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", required=True, help="a labeling model (repeat)")
    p.add_argument("--val", type=Path, required=True, help="calibration set (COCO json)")
    p.add_argument("--target", type=Path, required=True, help="the labeled folder's truth")
    p.add_argument("--tta", default="flip,scales=0.8,1.0,1.2")
    p.add_argument("--precision", type=float, default=0.9)
    p.add_argument("--cache", type=Path, required=True, help="folder of the measured arrays")
    args = p.parse_args()
    t0 = time.perf_counter()
    val = measured(args.model, args.tta, args.val, args.cache / "val.npz")
    target = measured(args.model, args.tta, args.target, args.cache / "target.npz")
    cpu = cpu_summary()
    print(f"# threshold_search: {len(args.model)} model(s), tta {args.tta}, precision "
          f"{args.precision:g}; calibrated on {len(val['scores'])} val persons, applied to "
          f"{len(target['scores'])}; {cpu}, {date.today()}, {time.perf_counter() - t0:.0f} s")
    print("| rule | z | keep rate % | precision % | right joints % of visible |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for rule, z in RULES:
        keep, prec = applied(val, target, rule, z, args.precision)
        print(f"| {rule} | {z:g} | {100 * keep:.1f} | {100 * prec:.1f} | {100 * keep * prec:.1f} |")


if __name__ == "__main__":
    main()
