"""Curves from what runs leave on disk: `posemum plot`.

A training run writes RUN_DIR/metrics.jsonl (`train` rows: losses, lr, crops/s; `val`
rows: AP and friends) and RUN_DIR/config.yaml (its preset); a labeling run writes
OUT/label_log.jsonl (`shard` rows with the running images/s and crops/s). Comparing
presets means putting several runs' val AP and losses on one figure, as Pose-MUM's
Fig. 3/4 do; watching a long labeling job means its rates over time. The readers return
the parsed series so callers (and tests) see exactly what was drawn. Matplotlib draws
through the Agg canvas only: no display, no global pyplot state.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from posemum_deploy.errors import ConfigError

log = logging.getLogger(__name__)

METRICS_NAME = "metrics.jsonl"      # training/run_files.MetricsLog
CONFIG_NAME = "config.yaml"         # TrainConfig.save
LABEL_LOG_NAME = "label_log.jsonl"  # label/writer.LOG_NAME
# Keys of a `train` row that are not losses.
_NOT_LOSSES = {"kind", "time", "step", "epoch", "lr", "crops_per_s"}


@dataclass
class RunCurves:
    """One training run's series: val AP and each loss against the step."""

    run_dir: Path
    preset: str
    label: str
    val_steps: list[int] = field(default_factory=list)
    val_ap: list[float] = field(default_factory=list)
    losses: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)


@dataclass
class LabelRates:
    """One labeling run's rates after each written shard, against seconds since it began
    (a resumed run's invocations follow one another on the same clock)."""

    out_dir: Path
    seconds: list[float] = field(default_factory=list)
    images_per_s: list[float] = field(default_factory=list)
    crops_per_s: list[float] = field(default_factory=list)


def _rows(path: Path) -> list[dict[str, Any]]:
    """The json objects of a jsonl file; a line that does not parse (a run killed while
    writing its last line) is skipped with a warning rather than failing the plot."""
    rows, bad = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    if bad:
        log.warning("%s: skipped %d line(s) that are not json objects", path, bad)
    return rows


def _preset(run_dir: Path) -> str:
    path = run_dir / CONFIG_NAME
    if not path.is_file():
        return "?"
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e}); is this a posemum run folder?") from e
    return str(config.get("preset", "?")) if isinstance(config, dict) else "?"


def read_run(run_dir: str | Path) -> RunCurves:
    """Val AP and losses of a training run folder (metrics.jsonl + config.yaml)."""
    run_dir = Path(run_dir)
    preset = _preset(run_dir)
    curves = RunCurves(run_dir, preset, f"{preset} ({run_dir.name})")
    for row in _rows(run_dir / METRICS_NAME):
        if "step" not in row:
            continue
        if row.get("kind") == "val" and "AP" in row:
            curves.val_steps.append(int(row["step"]))
            curves.val_ap.append(float(row["AP"]))
        elif row.get("kind") == "train":
            for key, value in row.items():
                if key not in _NOT_LOSSES and isinstance(value, (int, float)):
                    steps, values = curves.losses.setdefault(key, ([], []))
                    steps.append(int(row["step"]))
                    values.append(float(value))
    if not curves.val_steps and not curves.losses:
        raise ConfigError(f"{run_dir / METRICS_NAME}: no train or val rows yet; "
                          "plot a run that has logged at least one step")
    return curves


def read_label_log(out_dir: str | Path) -> LabelRates:
    """images/s and crops/s after each shard of a labeling run (label_log.jsonl)."""
    out_dir = Path(out_dir)
    path = out_dir / LABEL_LOG_NAME
    rates, t0 = LabelRates(out_dir), None
    for row in _rows(path):
        if "time" not in row:
            continue
        t0 = float(row["time"]) if t0 is None else t0
        if row.get("event") == "shard":
            rates.seconds.append(float(row["time"]) - t0)
            rates.images_per_s.append(float(row["images_per_s"]))
            rates.crops_per_s.append(float(row["crops_per_s"]))
    if not rates.seconds:
        raise ConfigError(f"{path}: no shard written yet; plot a run that has labeled a shard")
    return rates


def _kind(folder: Path) -> str:
    if (folder / METRICS_NAME).is_file():
        return "run"
    if (folder / LABEL_LOG_NAME).is_file():
        return "label"
    raise ConfigError(f"{folder}: holds neither {METRICS_NAME} (a `posemum train` run) nor "
                      f"{LABEL_LOG_NAME} (a `posemum label` output); pass one of those folders")


def _figure(ncols: int) -> tuple[Any, Any]:
    """A figure of `ncols` side-by-side axes (matplotlib loads on first use)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0 * ncols, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _unique_labels(runs: list[RunCurves]) -> None:
    """Label runs by preset; add the folder name only where presets repeat."""
    for run in runs:
        if sum(r.preset == run.preset for r in runs) == 1:
            run.label = run.preset


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path) -> list[RunCurves]:
    """Val AP against step (left) and the training losses (right) of several runs on one
    figure, one colour per run, one line style per loss; writes `out` (PNG)."""
    runs = [read_run(d) for d in run_dirs]
    _unique_labels(runs)
    fig, (ax_ap, ax_loss) = _figure(2)
    styles = ("-", "--", ":", "-.")
    loss_names = sorted({name for run in runs for name in run.losses})
    for i, run in enumerate(runs):
        colour = f"C{i % 10}"
        if run.val_steps:
            ax_ap.plot(run.val_steps, run.val_ap, "o-", color=colour, label=run.label)
        for j, name in enumerate(loss_names):
            if name in run.losses:
                steps, values = run.losses[name]
                ax_loss.plot(steps, values, styles[j % len(styles)], color=colour,
                             label=f"{run.label}: {name}")
    ax_ap.set(xlabel="step", ylabel="val AP", title="validation AP")
    ax_loss.set(xlabel="step", ylabel="loss", title="training losses")
    for ax in (ax_ap, ax_loss):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    _save(fig, out)
    return runs


def plot_label_rates(out_dirs: Sequence[str | Path], out: str | Path) -> list[LabelRates]:
    """images/s (left) and crops/s (right) over time of one or more labeling runs."""
    runs = [read_label_log(d) for d in out_dirs]
    fig, (ax_img, ax_crop) = _figure(2)
    for i, run in enumerate(runs):
        colour = f"C{i % 10}"
        ax_img.plot(run.seconds, run.images_per_s, "o-", color=colour, label=run.out_dir.name)
        ax_crop.plot(run.seconds, run.crops_per_s, "o-", color=colour, label=run.out_dir.name)
    ax_img.set(xlabel="seconds", ylabel="images/s", title="images per second")
    ax_crop.set(xlabel="seconds", ylabel="crops/s", title="crops (persons) per second")
    for ax in (ax_img, ax_crop):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    _save(fig, out)
    return runs


def plot_folders(folders: Sequence[str | Path], out: str | Path
                 ) -> list[RunCurves] | list[LabelRates]:
    """Training run folders -> `plot_runs`; labeling output folders -> `plot_label_rates`.
    A folder that is neither, or a mix of both kinds, is a one-line error."""
    if not folders:
        raise ConfigError("posemum plot: give at least one run or labeling folder")
    paths = [Path(f) for f in folders]
    kinds = [_kind(p) for p in paths]
    if len(set(kinds)) > 1:
        raise ConfigError("posemum plot: training runs and labeling runs go on separate "
                          f"figures ({paths[kinds.index('run')]} is a run, "
                          f"{paths[kinds.index('label')]} a labeling output)")
    if kinds[0] == "run":
        return plot_runs(paths, out)
    return plot_label_rates(paths, out)


def _save(fig: Any, out: str | Path) -> None:
    out = Path(out)
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ConfigError(f"--out {out}: write a .png, .pdf or .svg file")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    log.info("wrote %s", out)
