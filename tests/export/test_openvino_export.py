"""OpenVINO IR export (fp32 / bf16 / INT8 via NNCF or ORT QDQ) and the accuracy guard.

Runs at 128×96 input to stay fast; the backend tests cover 256×192 parity with torch.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("openvino", reason="OpenVINO not installed (pip install 'posemum[cpu]')")

from posemum_deploy.artifacts import ModelMetadata, sidecar_path  # noqa: E402
from posemum_deploy.data.boxes import gt_boxes  # noqa: E402
from posemum_deploy.data.coco import load_coco_keypoints  # noqa: E402
from posemum_deploy.data.images import read_image  # noqa: E402
from posemum_deploy.data.transforms import normalize_numpy, transform_points  # noqa: E402
from posemum_deploy.errors import ArtifactError, BackendUnavailableError, ConfigError  # noqa: E402
from posemum_deploy.export import openvino as ov_export  # noqa: E402
from posemum_deploy.export.accuracy import check_accuracy  # noqa: E402
from posemum_deploy.export.calibration import calibration_crops  # noqa: E402
from posemum_deploy.export.formats import ExportOptions, export_model  # noqa: E402
from posemum_deploy.export.openvino import export_openvino  # noqa: E402
from posemum_deploy.inference.backends import load_backend  # noqa: E402
from posemum_deploy.inference.openvino_backend import OpenVinoBackend, cpu_precisions  # noqa: E402
from posemum_deploy.inference.pipeline import codec_for, make_crops  # noqa: E402

HW = (128, 96)  # the tiny checkpoint of tests/export/conftest.py


@pytest.fixture(scope="module")
def onnx_path(tiny_onnx) -> Path:
    """fp32 ONNX + model.json written by `posemum export --format onnx`."""
    return tiny_onnx.artifact


@pytest.fixture(scope="module")
def crops(coco_mini: Path) -> np.ndarray:
    return calibration_crops(coco_mini / "test_coco.json", HW)


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
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    from posemum_deploy.export.calibration import CropBatcher
    from posemum_deploy.export.quantize import quantize_qdq

    crops = crops[:4]
    qdq = tmp_path / "model_qdq.onnx"
    meta = ModelMetadata()
    quantize_qdq(onnx_path, qdq, CropBatcher(crops, 4, meta.mean, meta.std))
    with pytest.raises(ConfigError, match="no QuantizeLinear"):
        export_openvino(onnx_path, tmp_path / "bad.xml", "int8", crops, "qdq", qdq_onnx=onnx_path)
    xml, report = export_openvino(onnx_path, tmp_path / "qdq.xml", "int8", crops, "qdq",
                                  qdq_onnx=qdq, batch_size=4)
    meta = ModelMetadata.load(sidecar_path(xml))
    assert meta.extra["quantization"]["method"] == "qdq" and report.ap_drop is None
    assert OpenVinoBackend(xml, batch_size=4).precision == "int8"


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
    # without native BF16 the guard cannot even run bf16: that refuses the export too
    expected = ArtifactError if "bf16" in cpu_precisions() else BackendUnavailableError
    with pytest.raises(expected):
        export_openvino(onnx_path, tmp_path / "m.xml", "bf16", crops=crops[:4], batch_size=4)
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
    with pytest.raises(ConfigError, match="--fp16 is for TensorRT"):
        export_model(onnx_path, "openvino", tmp_path, ExportOptions(fp16=True))
    with pytest.raises(ConfigError, match="needs --calib"):
        export_model(onnx_path, "openvino", tmp_path, ExportOptions(extra={"precision": "bf16"}))


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
            for crop, hm in zip(normalize_numpy(batch.crops), heatmaps, strict=True):
                self.table[crop.tobytes()] = np.roll(hm, shift_px, axis=-1)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        zeros = np.zeros((17, 32, 24), np.float32)
        return np.stack([self.table.get(np.ascontiguousarray(x).tobytes(), zeros) for x in batch])


def test_guard_refuses_a_real_ap_drop_and_passes_an_equal_model(coco_mini) -> None:
    ann = coco_mini / "test_coco.json"
    crops = calibration_crops(ann, HW)
    perfect, shifted = OracleBackend(coco_mini), OracleBackend(coco_mini, shift_px=2)
    report = check_accuracy(perfect, perfect, crops, ann, coco_mini, batch_size=8)
    assert report.ap_reference > 0.9 and report.ap_drop == 0 and report.max_px == 0
    with pytest.raises(ArtifactError, match=r"oracle: refused.*AP 0\.\d+ vs 1\.0000 \(drop"):
        check_accuracy(shifted, perfect, crops, ann, coco_mini, max_ap_drop=1.0, batch_size=8)
    loose = check_accuracy(shifted, perfect, crops, ann, coco_mini, max_ap_drop=100.0, batch_size=8)
    assert loose.ap_drop > 1.0 and loose.confident_mean_px == pytest.approx(8.0)  # 2 heatmap px × 4
    with pytest.raises(ConfigError, match="both --val-ann and --val-images"):
        check_accuracy(perfect, perfect, crops, ann)


def test_cli_export_openvino_int8(onnx_path, coco_mini, tmp_path) -> None:
    from typer.testing import CliRunner

    from posemum_deploy.cli.app import app

    out = tmp_path / "ov"
    result = CliRunner().invoke(app, ["export", str(onnx_path), "--format", "openvino", "--out",
                                      str(out), "--precision", "int8", "--calib-count", "4",
                                      "--calib", str(coco_mini / "test_coco.json")])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "precision int8" in result.output and "mean_px" in result.output
    assert {p.name for p in out.iterdir()} >= {"model.xml", "model.bin", "model.json"}
    backend = load_backend(out / "model.xml", "auto", batch_size=4)
    assert backend.name == "openvino" and backend.precision == "int8"


def _deconv_precisions(backend: OpenVinoBackend) -> set[str]:
    return {prec for _, kind, prec in backend.executed_layers() if kind == "Deconvolution"}


@pytest.mark.slow
def test_ir_from_a_checkpoint_holds_openvinos_graph(tiny_ckpt, tiny_onnx, coco_mini, tmp_path
                                                    ) -> None:
    """fp32 and INT8 (NNCF, and the ORT quantiser's QDQ) IRs made from a checkpoint hold
    plain ConvTranspose (run natively, in u8 when INT8), say so in the sidecar, and give
    the keypoints of ONNX Runtime's sub-pixel graph; its own ONNX export stays sub-pixel."""
    from posemum_deploy.inference.ort_backend import OrtBackend
    from posemum_deploy.inference.pipeline import PoseEstimator

    ann = coco_mini / "test_coco.json"
    assert tiny_onnx.meta["extra"]["graph"] == "subpixel-deconv"
    result = export_model(tiny_ckpt, "openvino", tmp_path / "fp32", ExportOptions(check=ann))
    assert result.metadata.extra["graph"] == "convtranspose"
    fp32_onnx = tmp_path / "fp32" / "model.convtranspose.fp32.onnx"
    assert ModelMetadata.load(sidecar_path(fp32_onnx)).extra["parity"]["keypoints_identical"]
    ov_fp32 = OpenVinoBackend(result.artifact, batch_size=8, threads=2)
    assert ov_fp32.graph == "convtranspose" and _deconv_precisions(ov_fp32) == {"f32"}
    crops = calibration_crops(ann, HW)
    est_ov = PoseEstimator(ov_fp32, batch_size=8)
    est_ort = PoseEstimator(OrtBackend(tiny_onnx.artifact, device="cpu"), batch_size=8)
    hm_ov, hm_ort = est_ov.heatmaps(crops), est_ort.heatmaps(crops)
    assert np.abs(hm_ov - hm_ort).max() < 1e-4
    np.testing.assert_array_equal(est_ov.codec.decode(hm_ov)[0], est_ort.codec.decode(hm_ort)[0])
    for method in ("nncf", "qdq"):
        if method == "nncf":
            pytest.importorskip("nncf", reason="NNCF not installed (pip install nncf)")
        opts = ExportOptions(calib=ann, val_ann=ann, val_images=coco_mini,
                             extra={"precision": "int8", "int8_method": method})
        int8 = export_model(tiny_ckpt, "openvino", tmp_path / method, opts)
        assert int8.metadata.extra["graph"] == "convtranspose"
        assert int8.metadata.extra["quantization"]["method"] == method
        assert int8.metadata.extra["accuracy"]["ap_drop"] <= 1.0  # the guard's tolerance
        backend = OpenVinoBackend(int8.artifact, batch_size=8, threads=2)
        assert backend.precision == "int8" and _deconv_precisions(backend) <= {"u8", "i8"}
