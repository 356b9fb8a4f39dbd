"""OpenVinoBackend: fp32 parity with torch on real crops, same AP, async API, clear errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("openvino", reason="OpenVINO not installed (pip install 'posemum[cpu]')")

from posemum_deploy.artifacts import ModelMetadata, sidecar_path  # noqa: E402
from posemum_deploy.data.transforms import normalize_numpy  # noqa: E402
from posemum_deploy.errors import ArtifactError, BackendUnavailableError, ConfigError  # noqa: E402
from posemum_deploy.evaluation.coco_eval import evaluate_results  # noqa: E402
from posemum_deploy.export.calibration import calibration_crops  # noqa: E402
from posemum_deploy.export.onnx import export_network, finish_sidecar  # noqa: E402
from posemum_deploy.inference import backends  # noqa: E402
from posemum_deploy.inference.backends import load_backend  # noqa: E402
from posemum_deploy.inference.openvino_backend import (  # noqa: E402
    OpenVinoBackend,
    check_supported,
    cpu_precisions,
    resolve_precision,
)
from posemum_deploy.inference.predict import predict_coco  # noqa: E402
from posemum_deploy.inference.torch_backend import TorchBackend  # noqa: E402
from posemum_deploy.models.simple_baseline import build_model  # noqa: E402


def scaled_model() -> nn.Module:
    """Random ResNet-18 SimpleBaseline whose heatmaps are O(1) like a trained one's (the
    default head init gives ~1e-3 outputs, which would make a 1e-4 tolerance meaningless)."""
    torch.manual_seed(0)
    model = build_model("resnet18", 17).eval()
    for m in model.deconv.modules():
        if isinstance(m, nn.ConvTranspose2d):
            nn.init.kaiming_normal_(m.weight)
    nn.init.normal_(model.final.weight, std=0.02)
    return model


def export_onnx(model: nn.Module, path: Path, graph: str = "subpixel-deconv") -> Path:
    """`posemum export --format onnx` minus its parity check: graph (BN folded) + sidecar."""
    meta = ModelMetadata()
    export_network(model, meta, path, 17, graph)
    finish_sidecar(path, meta, "onnx", "fp32", ("torch", "onnx"))
    return path


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return scaled_model()


@pytest.fixture(scope="module")
def onnx_path(model: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(model, tmp_path_factory.mktemp("ov") / "model.onnx")


@pytest.fixture(scope="module")
def crops(coco_mini: Path) -> np.ndarray:
    """The 12 GT-box person crops of coco_mini, uint8 [12, 256, 192, 3]."""
    return calibration_crops(coco_mini / "test_coco.json", (256, 192))


@pytest.fixture(scope="module")
def fp32(onnx_path: Path) -> OpenVinoBackend:
    return OpenVinoBackend(onnx_path, precision="fp32", batch_size=8)


@pytest.fixture(scope="module")
def fp32_heatmaps(fp32, crops) -> np.ndarray:
    return fp32.predict(normalize_numpy(crops))  # 12 crops at batch 8: a full and a padded call


def test_fp32_heatmaps_match_torch_on_real_crops(model, fp32, fp32_heatmaps, crops) -> None:
    expected = TorchBackend(model, ModelMetadata()).predict(normalize_numpy(crops))
    got = fp32_heatmaps
    assert got.shape == expected.shape == (12, 17, 64, 48)
    assert np.abs(expected).max() > 0.3  # outputs at a trained model's scale
    assert np.abs(got - expected).max() < 1e-4
    assert fp32.config["INFERENCE_PRECISION_HINT"] == "f32"  # never the CPU's bf16 default


def test_same_ap_and_keypoints_as_torch_on_coco_mini(model, fp32, coco_mini) -> None:
    ann = coco_mini / "test_coco.json"
    ref = predict_coco(TorchBackend(model, ModelMetadata()), ann, coco_mini, batch_size=8)
    got = predict_coco(fp32, ann, coco_mini, batch_size=8)
    assert len(got) == len(ref)
    kp_ref = np.array([r["keypoints"] for r in ref])
    kp_got = np.array([r["keypoints"] for r in got])
    assert np.abs(kp_got - kp_ref).max() < 1e-3
    assert evaluate_results(ann, got)["AP"] == pytest.approx(evaluate_results(ann, ref)["AP"],
                                                              abs=1e-3)


def test_async_and_iterator_agree_with_predict(fp32, fp32_heatmaps, crops) -> None:
    x, expected = normalize_numpy(crops), fp32_heatmaps
    pairs = [(x[i:i + 5], i) for i in (0, 5)]  # padded calls
    out = list(fp32.predict_iter(iter(pairs)))
    assert [u for u, _ in out] == [0, 5]  # input order, whatever finished first
    for start, heatmaps in out:
        np.testing.assert_array_equal(heatmaps, expected[start:start + len(heatmaps)])
    fp32.predict_async(x[:3], "a")
    fp32.predict_async(x[3:11], "b")
    done = dict(fp32.wait_all())
    assert done.keys() == {"a", "b"} and fp32.wait_all() == []
    np.testing.assert_array_equal(done["b"], expected[3:11])
    seen: list[str] = []
    fp32.predict_async(x[:2], "cb", callback=lambda hm, user: seen.append(f"{user}{len(hm)}"))
    fp32.wait_all()
    assert seen == ["cb2"]
    with pytest.raises(ConfigError, match="exceeds the compiled batch size"):
        fp32.predict_async(x, "too big")


def test_load_backend_and_auto_order(onnx_path, monkeypatch) -> None:
    be = load_backend(onnx_path, "openvino", batch_size=4)
    assert be.name == "openvino" and be.metadata.precision == "fp32"
    monkeypatch.setattr(backends, "_ort_gpu_usable", lambda: False)
    assert backends.candidate_backends(onnx_path) == ("tensorrt", "openvino", "onnxruntime")
    assert load_backend(onnx_path, "auto", batch_size=4).name == "openvino"
    monkeypatch.setattr(backends, "_ort_gpu_usable", lambda: True)
    assert backends.candidate_backends(onnx_path)[:2] == ("tensorrt", "onnxruntime")


def test_missing_or_foreign_sidecar_is_an_artifact_error(onnx_path, tmp_path) -> None:
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(onnx_path.read_bytes())
    with pytest.raises(ArtifactError, match="re-export"):
        OpenVinoBackend(lone)
    ModelMetadata(input_hw=(128, 96), heatmap_hw=(32, 24)).save(sidecar_path(lone))
    with pytest.raises(ArtifactError, match=r"does not match the sidecar's \[N, 3, 128, 96\]"):
        OpenVinoBackend(lone)
    sidecar_path(lone).write_text(json.dumps({"input_hw": [256, 192]}))
    with pytest.raises(ConfigError, match="needs a quantised model"):
        OpenVinoBackend(lone, precision="int8")
    with pytest.raises(ConfigError, match="not one of"):
        OpenVinoBackend(lone, precision="fp16")


def test_precision_resolution_and_cpu_capabilities() -> None:
    meta = ModelMetadata(precision="bf16")
    assert resolve_precision("auto", meta, quantized=False) == "bf16"
    assert resolve_precision("auto", meta, quantized=True) == "int8"
    assert resolve_precision("f32", meta, quantized=False) == "fp32"
    assert resolve_precision("auto", ModelMetadata(precision="int8"), quantized=False) == "fp32"
    with pytest.raises(ConfigError, match="INT8-quantised"):
        resolve_precision("bf16", meta, quantized=True)
    with pytest.raises(BackendUnavailableError, match="no native BF16"):
        check_supported("bf16", ["FP32", "INT8"])
    check_supported("bf16", ["FP32", "BF16"])
    assert "fp32" in cpu_precisions()


@pytest.mark.skipif("bf16" not in cpu_precisions(), reason="this CPU has no native BF16")
def test_bf16_runs_close_to_fp32(onnx_path, fp32, crops) -> None:
    x = normalize_numpy(crops[:4])
    bf16 = OpenVinoBackend(onnx_path, precision="bf16", batch_size=4)
    assert bf16.config["INFERENCE_PRECISION_HINT"] == "bf16"
    assert bf16.metadata.precision == "bf16"
    diff = np.abs(bf16.predict(x) - fp32.predict(x))
    assert 0 < diff.max() < 0.05  # really bf16 (not f32), and still close


def test_openvinos_graph_matches_torch_and_the_ort_graph(model, onnx_path, crops, fp32_heatmaps,
                                                         tmp_path) -> None:
    """The plain-ConvTranspose graph OpenVINO runs and ONNX Runtime's sub-pixel graph are
    the same network: fp32 within 1e-4 of torch, same decoded keypoints on real crops."""
    from posemum_deploy.inference.ort_backend import OrtBackend
    from posemum_deploy.inference.pipeline import codec_for

    ct_path = export_onnx(model, tmp_path / "ct.onnx", "convtranspose")
    assert ModelMetadata.load(sidecar_path(ct_path)).extra["graph"] == "convtranspose"
    ct = OpenVinoBackend(ct_path, precision="fp32", batch_size=8, threads=2)
    assert ct.graph == "convtranspose" and ct.config["INFERENCE_NUM_THREADS"] == 2
    assert OpenVinoBackend(onnx_path, precision="fp32", batch_size=8).graph == "subpixel-deconv"
    assert {t for _, t, _ in ct.executed_layers()} >= {"Deconvolution"}
    x = normalize_numpy(crops)
    expected = TorchBackend(model, ModelMetadata()).predict(x)
    got = ct.predict(x)
    assert np.abs(got - expected).max() < 1e-4
    codec = codec_for(ModelMetadata())
    ort_hm = OrtBackend(onnx_path, device="cpu", threads=2).predict(x)
    np.testing.assert_array_equal(codec.decode(got)[0], codec.decode(ort_hm)[0])
    np.testing.assert_array_equal(codec.decode(got)[0], codec.decode(fp32_heatmaps)[0])
    meta = ModelMetadata.load(sidecar_path(ct_path))  # a sidecar without the kind: read the ops
    meta.extra.pop("graph")
    meta.save(sidecar_path(ct_path))
    assert OpenVinoBackend(ct_path, precision="fp32", batch_size=8).graph == "convtranspose"
