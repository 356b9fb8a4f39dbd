"""`posemum export`, `posemum doctor` and `posemum evaluate --model x.onnx` end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from posemum_deploy.cli.app import app

runner = CliRunner()


def _invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def cli_onnx(tiny_ckpt: Path, coco_mini_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("cli")
    result = _invoke("export", str(tiny_ckpt), "--format", "onnx", "--out", str(out),
                     "--opset", "17", "--check", str(coco_mini_dir / "test_coco.json"))
    return out / "model.onnx", result.output


def test_export_onnx_prints_parity(cli_onnx) -> None:
    path, output = cli_onnx
    assert path.is_file() and (path.parent / "model.json").is_file()
    assert "max_abs_heatmap_diff" in output and "keypoints_identical" in output
    assert "True" in output and "precision fp32" in output


def test_export_onnx_int8(cli_onnx, coco_mini_dir: Path) -> None:
    path, _ = cli_onnx
    out = path.with_name("int8.onnx")
    result = _invoke("export", str(path), "--format", "onnx-int8", "--out", str(out),
                     "--calib", str(coco_mini_dir / "test_coco.json"), "--calib-count", "8")
    assert "precision int8" in result.output and "mean_px" in result.output
    assert json.loads(out.with_suffix(".json").read_text())["precision"] == "int8"


def test_evaluate_onnx_matches_checkpoint(cli_onnx, tiny_ckpt: Path, coco_mini_dir: Path,
                                          tmp_path: Path) -> None:
    ann = coco_mini_dir / "test_coco.json"
    stats, results = {}, {}
    for name, model in (("ckpt", tiny_ckpt), ("onnx", cli_onnx[0])):
        _invoke("evaluate", "--ann", str(ann), "--model", str(model), "--images", str(coco_mini_dir),
                "--batch-size", "8", "--json-out", str(tmp_path / f"{name}.json"),
                "--results-out", str(tmp_path / f"{name}_res.json"))
        stats[name] = json.loads((tmp_path / f"{name}.json").read_text())
        results[name] = json.loads((tmp_path / f"{name}_res.json").read_text())
    assert abs(stats["ckpt"]["AP"] - stats["onnx"]["AP"]) <= 0.001
    assert len(results["ckpt"]) == len(results["onnx"]) > 0
    kp = [np.array([r["keypoints"] for r in results[n]]) for n in ("ckpt", "onnx")]
    assert np.abs(kp[0] - kp[1]).max() <= 1e-3  # same keypoints, not just the same AP


def test_doctor_table() -> None:
    output = _invoke("doctor").output
    for word in ("torch", "onnxruntime", "TensorRT", "OpenVINO", "Ray", "CUDA"):
        assert word in output
    assert "posemum[" in output  # fixes keep their pip extras (no rich markup eaten)


def test_export_errors_are_one_line(tiny_ckpt: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(tiny_ckpt), "--format", "onnx",
                                 "--batch", "4,2,8", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "MIN,OPT,MAX" in str(result.exception)
    result = runner.invoke(app, ["export", str(tiny_ckpt), "--format", "tensorrtt",
                                 "--out", str(tmp_path)])
    assert "did you mean 'tensorrt'" in str(result.exception)
