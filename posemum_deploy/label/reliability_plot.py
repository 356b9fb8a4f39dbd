"""The reliability plot of `posemum calibrate`: predicted score against measured precision.

One panel per joint type: the share of joints within OKS 0.5 of the truth per score bin
(its dots sized by how many joints fell there), the asked precision as a horizontal line
and the calibrated threshold as a vertical one. A well-calibrated teacher's dots rise
with the score; where they cross the precision line is where pseudo-joints start to pay.
Drawn on the Agg canvas (no display, no global pyplot state).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

BINS = 10


def binned_precision(scores: np.ndarray, correct: np.ndarray, bins: int = BINS
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-width score bins over [0, max]: (mean score, share correct, count) of every
    bin that holds joints. Heatmap maxima of an undertrained model can be negative; the
    bins then start at the lowest score."""
    low = min(float(scores.min()), 0.0) if len(scores) else 0.0
    top = max(float(scores.max()) if len(scores) else 1.0, low + 1e-6)
    idx = np.clip(((scores - low) / (top - low) * bins).astype(int), 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    hit = np.bincount(idx, weights=correct.astype(float), minlength=bins)
    mean = np.bincount(idx, weights=scores, minlength=bins)
    have = count > 0
    return mean[have] / count[have], hit[have] / count[have], count[have]


def reliability_plot(scores: np.ndarray, correct: np.ndarray, visible: np.ndarray,
                     names: Sequence[str], thresholds: Any, out: str | Path) -> Path:
    """Write the per-joint reliability plot (PNG) of predictions [M, K] to `out`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = 6
    rows = -(-len(names) // cols)
    fig = Figure(figsize=(2.6 * cols, 2.3 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for j, name in enumerate(names):
        ax, vis = axes[j], np.asarray(visible[:, j], bool)
        if vis.any():
            x, y, n = binned_precision(scores[vis, j], correct[vis, j])
            ax.plot(x, y, "-", color="C0", lw=1)
            ax.scatter(x, y, s=8 + 60 * n / n.max(), color="C0", zorder=3)
        ax.axhline(thresholds.precision, color="C3", lw=0.8, ls="--")
        t = thresholds.score[j]
        if np.isfinite(t):
            ax.axvline(t, color="C2", lw=0.8)
        ax.set(title=f"{name} (t={t:.2f})" if np.isfinite(t) else f"{name} (never)",
               ylim=(-0.02, 1.02))
        ax.title.set_fontsize("small")
        ax.tick_params(labelsize="x-small")
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_axis_off()
    fig.supxlabel("predicted joint score (heatmap max)")
    fig.supylabel(f"share within OKS {thresholds.oks:g} of the truth")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    return out
