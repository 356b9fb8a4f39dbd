"""`posemum train --tensorboard`: the event file holds what metrics.jsonl holds; without
the tensorboard package the flag is a one-line error before any training."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from posemum_deploy.cli.app import app
from posemum_deploy.errors import BackendUnavailableError


def _train_args(ann: Path, out: Path) -> list[str]:
    return ["train", "--labeled", str(ann), "--images", str(ann.parent / "images"),
            "--val-ann", str(ann), "--val-images", str(ann.parent / "images"),
            "--out", str(out), "--input-size", "64x64", "--batch-size", "4", "--epochs", "2",
            "--steps-per-epoch", "1", "--workers", "0", "--device", "cpu",
            "--precision", "fp32", "--tensorboard"]


@pytest.mark.slow
def test_scalars_match_metrics_jsonl(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="pip install 'posemum[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from posemum_deploy.data.synthetic import generate_dataset

    ann = generate_dataset(tmp_path / "data", 6, seed=3, image_size=(96, 128), max_people=2)
    result = CliRunner().invoke(app, _train_args(ann, tmp_path / "run"))
    assert result.exit_code == 0, (result.output, result.exception)
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(tmp_path / "run/tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/AP"} <= tags and "train/epoch" not in tags
    val = [(r["step"], r["AP"]) for r in rows if r["kind"] == "val"]
    assert len(val) == 2
    assert [(e.step, e.value) for e in events.Scalars("val/AP")] == [
        (step, pytest.approx(ap, abs=1e-6)) for step, ap in val]
    train = [(r["step"], r["loss"]) for r in rows if r["kind"] == "train"]
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [
        (step, pytest.approx(loss, rel=1e-6)) for step, loss in train]


def test_without_the_package_the_flag_is_refused_in_one_line(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             synthetic_small: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    result = CliRunner().invoke(app, _train_args(synthetic_small, tmp_path / "run"))
    assert isinstance(result.exception, BackendUnavailableError)
    message = str(result.exception)
    assert "--tensorboard" in message and "posemum[tensorboard]" in message
    assert "\n" not in message and not (tmp_path / "run" / "metrics.jsonl").exists()
