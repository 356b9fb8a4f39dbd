"""ONNX export: graph shape, metadata in two places, parity with torch on real crops."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from posemum_deploy.artifacts import read_sidecar, sha256_file, sidecar_path
from posemum_deploy.errors import ArtifactError, ConfigError
from posemum_deploy.export.calibration import calibration_crops
from posemum_deploy.export.formats import ExportOptions, export_model
from posemum_deploy.export.onnx import (
    SubPixelDeconv,
    embedded_metadata,
    fold_deconv_bn,
    runtime_graph,
)
from posemum_deploy.inference.ort_backend import OrtBackend
from posemum_deploy.inference.pipeline import PoseEstimator
from posemum_deploy.inference.torch_backend import TorchBackend


def test_parity_with_torch_on_coco_mini_crops(tiny_onnx, tiny_ckpt: Path, coco_mini_dir: Path) -> None:
    crops = calibration_crops(coco_mini_dir / "test_coco.json", (128, 96))
    assert len(crops) == 12  # every GT person with keypoints
    torch_est = PoseEstimator(TorchBackend(tiny_ckpt, device="cpu"), batch_size=8)
    ort_est = PoseEstimator(OrtBackend(tiny_onnx.artifact, device="cpu"), batch_size=8)
    hm_t, hm_o = torch_est.heatmaps(crops), ort_est.heatmaps(crops)
    assert np.abs(hm_t - hm_o).max() <= 1e-4
    assert np.array_equal(torch_est.codec.decode(hm_t)[0], ort_est.codec.decode(hm_o)[0])
    report = tiny_onnx.report  # the check the exporter itself ran and printed
    assert report["num_crops"] == 12 and report["keypoints_identical"]
    assert report["max_abs_heatmap_diff"] <= 1e-4


def test_graph_opset_dynamic_batch_and_checker(tiny_onnx) -> None:
    import onnx

    model = onnx.load(str(tiny_onnx.artifact))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,), (out,) = model.graph.input, model.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1:] == [3, 128, 96]
    assert [d.dim_value for d in out.type.tensor_type.shape.dim][1:] == [17, 32, 24]
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"BatchNormalization", "ConvTranspose"}  # rewritten for runtimes
    backend = OrtBackend(tiny_onnx.artifact, device="cpu")
    for n in (1, 5):
        assert backend.predict(np.zeros((n, 3, 128, 96), np.float32)).shape == (n, 17, 32, 24)


def test_sidecar_and_embedded_metadata(tiny_onnx, tiny_ckpt: Path) -> None:
    side = json.loads(sidecar_path(tiny_onnx.artifact).read_text())
    assert side["artifact_sha256"] == sha256_file(tiny_onnx.artifact)
    assert side["source_checkpoint_sha256"] == sha256_file(tiny_ckpt)
    assert side["precision"] == "fp32" and side["format"] == "onnx"
    assert side["input_hw"] == [128, 96] and side["channel_order"] == "RGB"
    assert len(side["keypoint_names"]) == 17 and len(side["flip_pairs"]) == 8
    assert {"torch", "onnx", "onnxruntime", "posemum"} <= set(side["tool_versions"])
    embedded = embedded_metadata(tiny_onnx.artifact)
    assert embedded.mean == tuple(side["mean"]) and embedded.sigma == side["sigma"]
    assert embedded.flip_pairs == tuple(tuple(p) for p in side["flip_pairs"])


def test_missing_or_mismatched_sidecar_is_refused(tiny_onnx, tmp_path: Path) -> None:
    lone = tmp_path / "lone.onnx"
    shutil.copy(tiny_onnx.artifact, lone)
    with pytest.raises(ArtifactError, match="sidecar lone.json is missing.*re-export"):
        OrtBackend(lone, device="cpu")
    shutil.copy(tiny_onnx.sidecar, tmp_path / "lone.json")
    assert read_sidecar(lone).artifact_sha256 == sha256_file(lone)
    with lone.open("ab") as f:  # the file changes after export
        f.write(b"\0")
    with pytest.raises(ArtifactError, match="does not match lone.onnx.*sha256.*re-export"):
        OrtBackend(lone, device="cpu")


@pytest.mark.parametrize("hw", [(4, 3), (5, 7)])
def test_subpixel_deconv_equals_conv_transpose(hw: tuple[int, int]) -> None:
    torch.manual_seed(1)
    deconv = torch.nn.ConvTranspose2d(8, 6, 4, stride=2, padding=1, bias=True)
    x = torch.randn(3, 8, *hw)
    with torch.no_grad():
        torch.testing.assert_close(SubPixelDeconv(deconv)(x), deconv(x), atol=1e-5, rtol=1e-5)


def test_runtime_graph_is_the_same_function(tiny_ckpt: Path) -> None:
    from posemum_deploy.models.checkpoint import load_model

    model, _ = load_model(tiny_ckpt)
    folded, graph = fold_deconv_bn(model), runtime_graph(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.deconv.modules())
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in graph.modules())
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(folded(x), ref, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(graph(x), ref, atol=1e-5, rtol=1e-4)


def test_export_options_are_validated(tiny_ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="opset ≥ 17"):
        ExportOptions(opset=13)
    with pytest.raises(ConfigError, match="did you mean 'onnx'"):
        export_model(tiny_ckpt, "onxx", tmp_path)
    with pytest.raises(ArtifactError, match="not found"):
        export_model(tmp_path / "nope.pt", "onnx", tmp_path)


def test_parity_crops_come_from_the_checkpoints_own_val_json(tmp_path):
    """No --check, no --calib: the parity check reads real crops from the json the
    checkpoint was trained with (its config, read without loading the weights)."""
    from posemum_deploy.artifacts import ModelMetadata
    from posemum_deploy.export.onnx import check_crops
    from tests.testdata import COCO_MINI, make_checkpoint

    ckpt = make_checkpoint(tmp_path / "m.pt", input_hw=(64, 48))
    meta = ModelMetadata.from_dict(torch.load(ckpt, weights_only=True)["model_meta"])
    crops, origin = check_crops(ckpt, meta, ExportOptions())
    assert origin == str(COCO_MINI / "test_coco.json")
    assert crops.shape[1:] == (64, 48, 3) and crops.dtype == np.uint8 and crops.std() > 10


def test_fold_deconv_bn_leaves_a_batchnorm_without_running_statistics() -> None:
    """Such a BatchNorm normalises with each batch's statistics: nothing to fold, so it stays
    (folding it failed on its missing running_var)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1),
                              torch.nn.BatchNorm2d(3, track_running_stats=False),
                              torch.nn.ConvTranspose2d(3, 2, 4, stride=2, padding=1),
                              torch.nn.BatchNorm2d(2)).eval()
    with torch.no_grad():
        net[3].running_mean.uniform_(-1, 1)
        net[3].running_var.uniform_(0.5, 2)
    folded = fold_deconv_bn(net)
    assert isinstance(folded[1], torch.nn.BatchNorm2d) and isinstance(folded[3], torch.nn.Identity)
    x = torch.randn(2, 4, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-5)
