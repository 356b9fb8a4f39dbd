"""OpenVINO IR export (fp32 / bf16 / INT8 via NNCF or ORT QDQ) and the accuracy guard.

Runs at 128×96 input to stay fast; the backend tests cover 256×192 parity with torch.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("openvino", reason="OpenVINO not installed (pip install 'posemum[cpu]')")

from posemum_deploy.data.boxes import gt_boxes  # noqa: E402
from posemum_deploy.data.coco import load_coco_keypoints  # noqa: E402
from posemum_deploy.data.images import read_image  # noqa: E402
from posemum_deploy.data.transforms import normalize_numpy, transform_points  # noqa: E402
from posemum_deploy.errors import ArtifactError, ConfigError  # noqa: E402
from posemum_deploy.export import openvino as ov_export  # noqa: E402
from posemum_deploy.export.accuracy import check_accuracy  # noqa: E402
from posemum_deploy.export.metadata import ModelMetadata, sidecar_path  # noqa: E402
from posemum_deploy.export.openvino import calibration_crops, export_openvino  # noqa: E402
from posemum_deploy.inference.backends import load_backend  # noqa: E402
from posemum_deploy.inference.openvino_backend import OpenVinoBackend, cpu_precisions  # noqa: E402
from posemum_deploy.inference.pipeline import codec_for, make_crops  # noqa: E402
from posemum_deploy.models.simple_baseline import build_model  # noqa: E402

HW = (128, 96)
META = ModelMetadata(format="onnx", input_hw=HW, heatmap_hw=(32, 24))


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fp32 ONNX + model.json as the ONNX exporter writes them."""
    torch.manual_seed(0)
    model = build_model("resnet18", 17).eval()
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    torch.onnx.export(model, torch.zeros(1, 3, *HW), path, opset_version=17, dynamo=False,
                      input_names=["input"], output_names=["heatmaps"],
                      dynamic_axes={"input": {0: "batch"}, "heatmaps": {0: "batch"}})
    META.save(sidecar_path(path))
    return path


@pytest.fixture(scope="module")
def crops(coco_mini: Path) -> np.ndarray:
    return calibration_crops(coco_mini, HW, ann=coco_mini / "test_coco.json")


def test_fp32_ir_matches_onnx_and_has_its_own_sidecar(onnx_path, crops, tmp_path) -> None:
    xml, report = export_openvino(onnx_path, tmp_path / "ir", "fp32")
    assert report is None and xml == tmp_path / "ir" / "model.xml"
    assert xml.with_suffix(".bin").is_file()
    meta = ModelMetadata.load(sidecar_path(xml))
    assert (meta.format, meta.precision, meta.input_hw) == ("openvino", "fp32", HW)
    assert meta.artifact_sha256 == hashlib.sha256(xml.read_bytes()).hexdigest()
    x = normalize_numpy(crops[:4])
    ir = load_backend(xml, "auto", batch_size=4)
    assert ir.name == "openvino" and ir.precision == "fp32"
    ref = OpenVinoBackend(onnx_path, "fp32", batch_size=4).predict(x)
    assert np.abs(ir.predict(x) - ref).max() < 1e-5  # fp32 weights kept, not fp16
    meta.artifact_sha256 = "0" * 64
    meta.save(sidecar_path(xml))
    with pytest.raises(ArtifactError, match="does not describe"):
        OpenVinoBackend(xml)


def test_int8_nncf_export_records_how_and_how_good(onnx_path, crops, coco_mini, tmp_path,
                                                   capfd) -> None:
    pytest.importorskip("nncf", reason="NNCF not installed (pip install nncf)")
    xml, report = export_openvino(onnx_path, tmp_path / "int8.xml", "int8", crops=crops,
                                  calib_source=str(coco_mini), val_ann=coco_mini / "test_coco.json",
                                  val_images=coco_mini, batch_size=8)
    assert "Statistics collection" not in capfd.readouterr().out  # no progress bar from a library
    meta = ModelMetadata.load(sidecar_path(xml))
    assert meta.precision == "int8"
    assert meta.extra["quantization"]["method"] == "nncf"
    assert meta.extra["quantization"]["calibration_crops"] == len(crops)
    assert meta.extra["accuracy"]["ap_drop"] == pytest.approx(report.ap_drop)
    assert report.num_crops == len(crops) and report.max_px >= report.mean_px >= 0
    backend = OpenVinoBackend(xml, batch_size=8)
    assert backend.precision == "int8"
    with pytest.raises(ConfigError, match="INT8-quantised"):
        OpenVinoBackend(xml, precision="fp32")


def test_int8_from_ort_qdq_onnx(onnx_path, crops, tmp_path) -> None:
    quant = pytest.importorskip("onnxruntime.quantization", reason="onnxruntime not installed")
    crops = crops[:8]
    x = normalize_numpy(crops)

    class Reader(quant.CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter({"input": x[i:i + 4]} for i in range(0, len(x), 4))

        def get_next(self):
            return next(self.items, None)

    qdq = tmp_path / "model_qdq.onnx"
    quant.quantize_static(str(onnx_path), str(qdq), Reader(), quant_format=quant.QuantFormat.QDQ,
                          per_channel=True, weight_type=quant.QuantType.QInt8,
                          activation_type=quant.QuantType.QUInt8)
    with pytest.raises(ConfigError, match="no QuantizeLinear"):
        export_openvino(onnx_path, tmp_path / "bad.xml", "int8", crops, "qdq", qdq_onnx=onnx_path)
    xml, report = export_openvino(onnx_path, tmp_path / "qdq.xml", "int8", crops, "qdq",
                                  qdq_onnx=qdq, batch_size=8)
    meta = ModelMetadata.load(sidecar_path(xml))
    assert meta.extra["quantization"]["method"] == "qdq" and report.ap_drop is None


@pytest.mark.skipif("bf16" not in cpu_precisions(), reason="this CPU has no native BF16")
def test_bf16_export_runs_bf16_by_default(onnx_path, crops, tmp_path) -> None:
    xml, report = export_openvino(onnx_path, tmp_path / "bf16", "bf16", crops=crops, batch_size=8)
    assert ModelMetadata.load(sidecar_path(xml)).precision == "bf16"
    assert OpenVinoBackend(xml, batch_size=8).config["INFERENCE_PRECISION_HINT"] == "bf16"
    assert report.precision == "bf16" and report.max_abs_heatmap_diff > 0


def test_refused_export_leaves_no_artifact(onnx_path, crops, tmp_path, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise ArtifactError("refused: AP drops 3.00 points")

    monkeypatch.setattr(ov_export, "check_accuracy", refuse)
    precision = "bf16" if "bf16" in cpu_precisions() else "int8"
    with pytest.raises(ArtifactError, match="refused"):
        export_openvino(onnx_path, tmp_path / "m.xml", precision, crops=crops, batch_size=8)
    assert list(tmp_path.iterdir()) == []


def test_option_errors_name_the_fix(onnx_path, tmp_path) -> None:
    with pytest.raises(ConfigError, match="choose fp32, bf16, int8"):
        export_openvino(onnx_path, tmp_path, "fp16")
    with pytest.raises(ConfigError, match="--calib DIR"):
        export_openvino(onnx_path, tmp_path, "int8")
    with pytest.raises(ConfigError, match="export it first"):
        export_openvino(onnx_path, tmp_path, "int8", np.zeros((1, *HW, 3), np.uint8), "qdq")
    with pytest.raises(ConfigError, match="NAME.xml"):
        export_openvino(onnx_path, tmp_path / "model.bin")
    with pytest.raises(ConfigError, match="no calibration images"):
        calibration_crops(tmp_path, HW)


class OracleBackend:
    """Returns the GT heatmaps of each coco_mini crop (found by its bytes), optionally
    shifted: a perfect model and a measurably worse one for the AP guard."""

    name = "oracle"

    def __init__(self, coco_mini: Path, shift_px: int = 0) -> None:
        self.metadata = ModelMetadata(input_hw=HW, heatmap_hw=(32, 24))
        self.table: dict[bytes, np.ndarray] = {}
        coco = load_coco_keypoints(coco_mini / "test_coco.json")
        boxes, codec = gt_boxes(coco), codec_for(self.metadata)
        for im in coco["images"]:
            batch = make_crops(read_image(coco_mini / im["file_name"]), *boxes[im["id"]], HW)
            anns = [a for a in coco["annotations"] if a["image_id"] == im["id"] and a["num_keypoints"]]
            kps = np.array([a["keypoints"] for a in anns], np.float64).reshape(len(anns), 17, 3)
            fwd = np.stack([cv2.invertAffineTransform(m) for m in batch.inverse])
            heatmaps, _ = codec.encode(transform_points(kps[..., :2], fwd), kps[..., 2])
            for crop, hm in zip(normalize_numpy(batch.crops), heatmaps):
                self.table[crop.tobytes()] = np.roll(hm, shift_px, axis=-1)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        zeros = np.zeros((17, 32, 24), np.float32)
        return np.stack([self.table.get(np.ascontiguousarray(x).tobytes(), zeros) for x in batch])


def test_guard_refuses_a_real_ap_drop_and_passes_an_equal_model(coco_mini) -> None:
    ann = coco_mini / "test_coco.json"
    crops = calibration_crops(coco_mini, HW, ann=ann)
    perfect, shifted = OracleBackend(coco_mini), OracleBackend(coco_mini, shift_px=2)
    report = check_accuracy(perfect, perfect, crops, ann, coco_mini, batch_size=8)
    assert report.ap_reference > 0.9 and report.ap_drop == 0 and report.max_px == 0
    with pytest.raises(ArtifactError, match=r"oracle: refused.*AP 0\.\d+ vs 1\.0000 \(drop"):
        check_accuracy(shifted, perfect, crops, ann, coco_mini, max_ap_drop=1.0, batch_size=8)
    loose = check_accuracy(shifted, perfect, crops, ann, coco_mini, max_ap_drop=100.0, batch_size=8)
    assert loose.ap_drop > 1.0 and loose.confident_mean_px == pytest.approx(8.0)  # 2 heatmap px × 4
    with pytest.raises(ConfigError, match="both --val-ann and --val-images"):
        check_accuracy(perfect, perfect, crops, ann)
