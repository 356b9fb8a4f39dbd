"""ONNX Runtime static QDQ INT8: calibrated on real crops, recorded in the sidecar."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from posemum_deploy.errors import ConfigError
from posemum_deploy.export.formats import ExportOptions, export_model
from posemum_deploy.inference.backends import load_backend
from posemum_deploy.inference.ort_backend import OrtBackend


def test_int8_is_qdq_per_channel_and_recorded(tiny_int8, coco_mini_dir: Path) -> None:
    import onnx

    model = onnx.load(str(tiny_int8.artifact))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    scales = [t for t in model.graph.initializer if t.name.endswith("_scale") and len(t.dims) == 1]
    assert scales and max(t.dims[0] for t in scales) > 1  # per-channel weight scales
    side = json.loads(tiny_int8.sidecar.read_text())
    assert side["precision"] == "int8" and side["format"] == "onnx"
    q = side["extra"]["quantization"]
    assert q["format"] == "QDQ" and q["per_channel"] and q["calibration_crops"] == 12
    assert q["calibration_source"] == str(coco_mini_dir / "test_coco.json")
    assert side["extra"]["accuracy"]["num_crops"] == 12


def test_int8_runs_through_the_one_interface(tiny_int8) -> None:
    backend = load_backend(tiny_int8.artifact, "onnxruntime")
    assert isinstance(backend, OrtBackend) and backend.metadata.precision == "int8"
    out = backend.predict(np.zeros((3, 3, 128, 96), np.float32))
    assert out.shape == (3, 17, 32, 24) and np.isfinite(out).all()


def test_int8_needs_real_calibration_images(tiny_onnx, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs --calib"):
        export_model(tiny_onnx.artifact, "onnx-int8", tmp_path / "q.onnx", ExportOptions())
    with pytest.raises(ConfigError, match="already int8"):
        side = json.loads(tiny_onnx.sidecar.read_text())
        fake = tmp_path / "fake.onnx"
        fake.write_bytes(tiny_onnx.artifact.read_bytes())
        side["precision"] = "int8"
        (tmp_path / "fake.json").write_text(json.dumps(side))
        export_model(fake, "onnx-int8", tmp_path / "q.onnx", ExportOptions(calib=tmp_path))
