"""`posemum plot`: curves of two real (tiny) training runs on one figure, a real labeling
run's rates, and one-line errors for folders that are neither."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from posemum_deploy.cli.app import app
from posemum_deploy.errors import ConfigError
from posemum_deploy.plots import plot_folders, read_run
from posemum_deploy.training.config import TrainConfig
from posemum_deploy.training.presets import apply_preset
from posemum_deploy.training.trainer import train


def _png_pixels(path: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return mpimg.imread(path)


def _tiny_run(ann: Path, out: Path, preset: str) -> Path:
    """Two epochs of one step at 64x64 on synthetic data, validated after each epoch."""
    data = ann.parent
    cfg = apply_preset(TrainConfig(), preset)
    cfg.out = str(out)
    cfg.data.labeled = cfg.ssl.unlabeled = cfg.data.val_ann = str(data / "annotations.json")
    cfg.data.images = cfg.ssl.unlabeled_images = cfg.data.val_images = str(data / "images")
    cfg.data.input_hw, cfg.data.workers = (64, 64), 0
    cfg.ssl.tiles, cfg.ssl.unlabeled_batch_size = (2, 2), 4
    cfg.optim.batch_size, cfg.optim.epochs, cfg.optim.steps_per_epoch = 4, 2, 1
    cfg.runtime.device, cfg.runtime.precision, cfg.runtime.channels_last = "cpu", "fp32", False
    cfg.runtime.log_every = 1
    train(cfg)
    return out


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A supervised and a pose-mum-plus run, each 2 epochs x 1 step, validated per epoch."""
    from posemum_deploy.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("runs")
    ann = generate_dataset(root / "data", 6, seed=3, image_size=(96, 128), max_people=2)
    return [_tiny_run(ann, root / "sup", "supervised"),
            _tiny_run(ann, root / "plus", "pose-mum-plus")]


@pytest.mark.slow
def test_two_runs_on_one_figure(two_runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "curves.png"
    series = plot_folders(two_runs, out)
    assert [s.preset for s in series] == ["supervised", "pose-mum-plus"]
    assert [s.label for s in series] == ["supervised", "pose-mum-plus"]
    for run, s in zip(two_runs, series, strict=True):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        val = [r for r in rows if r["kind"] == "val"]
        assert s.val_steps == [1, 2] == [r["step"] for r in val]
        assert s.val_ap == [r["AP"] for r in val]
        steps, values = s.losses["loss"]
        assert steps == [1, 2]
        assert values == [r["loss"] for r in rows if r["kind"] == "train"]
        assert "lr" not in s.losses and "crops_per_s" not in s.losses
    # the semi-supervised run logs more loss terms than the supervised one
    assert set(series[0].losses) < set(series[1].losses)
    pixels = _png_pixels(out)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 1000  # two panels side by side
    assert pixels[..., :3].std() > 0.05  # something was drawn


@pytest.mark.slow
def test_cli_plots_runs_and_labels_repeated_presets_by_folder(two_runs: list[Path],
                                                              tmp_path: Path) -> None:
    out = tmp_path / "curves.png"
    result = CliRunner().invoke(app, ["plot", str(two_runs[0]), str(two_runs[0]),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "supervised (sup): 2 val points" in result.output and out.is_file()


def test_label_dir_rates(tiny_ckpt: Path, tmp_path: Path) -> None:
    import cv2

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for i in range(6):
        cv2.imwrite(str(tmp_path / "images" / f"{i}.jpg"),
                    rng.integers(0, 255, (90 + i, 120, 3), dtype=np.uint8))
    out = tmp_path / "labels"
    result = CliRunner().invoke(app, ["label", str(tiny_ckpt), str(tmp_path / "images"),
                                      "--out", str(out), "--shard-size", "2",
                                      "--batch-size", "4", "--workers", "1"])
    assert result.exit_code == 0, result.output
    png = tmp_path / "rates.png"
    (rates,) = plot_folders([out], png)
    shards = [json.loads(line) for line in (out / "label_log.jsonl").read_text().splitlines()
              if json.loads(line)["event"] == "shard"]
    assert len(shards) == 3 and len(rates.seconds) == 3
    assert rates.images_per_s == [s["images_per_s"] for s in shards]
    assert rates.crops_per_s == [s["crops_per_s"] for s in shards]
    assert all(b >= a >= 0 for a, b in itertools.pairwise(rates.seconds))
    assert _png_pixels(png).shape[1] > 1000


def test_a_folder_that_is_neither_is_a_one_line_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError) as info:
        plot_folders([empty], tmp_path / "x.png")
    message = str(info.value)
    assert str(empty) in message and "metrics.jsonl" in message and "\n" not in message
    assert not (tmp_path / "x.png").exists()


def test_cli_error_is_one_line_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "posemum_deploy.cli", "plot", str(tmp_path),
                           "--out", str(tmp_path / "x.png")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(tmp_path.name) in errors[0], proc.stderr


def test_a_run_without_rows_names_its_metrics_file(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "lo')  # killed
    with pytest.raises(ConfigError, match="metrics.jsonl: no train or val rows"):
        read_run(tmp_path)
