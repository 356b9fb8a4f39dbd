"""`posemum export`, `posemum doctor` and `posemum evaluate --model x.onnx` end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from posemum_deploy.cli.app import app

runner = CliRunner()


def _invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_export_onnx_prints_parity(tiny_onnx) -> None:
    assert tiny_onnx.artifact.is_file() and tiny_onnx.sidecar.is_file()
    for word in ("max_abs_heatmap_diff", "keypoints_identical", "True", "precision fp32"):
        assert word in tiny_onnx.output


def test_export_onnx_int8_prints_accuracy(tiny_int8) -> None:
    assert "precision int8" in tiny_int8.output and "mean_px" in tiny_int8.output
    assert tiny_int8.meta["precision"] == "int8"


def test_evaluate_onnx_matches_checkpoint(tiny_onnx, tiny_ckpt: Path, coco_mini_dir: Path,
                                          tmp_path: Path) -> None:
    ann = coco_mini_dir / "test_coco.json"
    stats, results = {}, {}
    for name, model in (("ckpt", tiny_ckpt), ("onnx", tiny_onnx.artifact)):
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
