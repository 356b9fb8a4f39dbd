"""FP16 ONNX for strongly typed TensorRT: parity with fp32 on real crops, on ORT CPU."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from posemum_deploy.artifacts import read_sidecar
from posemum_deploy.errors import ArtifactError
from posemum_deploy.export.calibration import calibration_crops
from posemum_deploy.export.fp16 import FP16_MAX, convert_to_fp16
from posemum_deploy.export.trt_networks import network_parity

ort = pytest.importorskip("onnxruntime")


def test_fp16_graph_keeps_parity_with_fp32_on_real_crops(tiny_onnx, coco_mini_dir: Path,
                                                         tmp_path: Path) -> None:
    fp16 = tmp_path / "model.fp16.onnx"
    counts = convert_to_fp16(tiny_onnx.artifact, fp16)
    model = onnx.load(str(fp16))
    assert counts["fp32_nodes"] == 0 and counts["fp16_initializers"] > 20
    weights = [t for t in model.graph.initializer if len(t.dims) == 4]
    assert weights and all(t.data_type == TensorProto.FLOAT16 for t in weights)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert [n.op_type for n in (model.graph.node[0], model.graph.node[-1])] == ["Cast", "Cast"]
    meta = read_sidecar(tiny_onnx.artifact)
    crops = calibration_crops(coco_mini_dir / "test_coco.json", tuple(meta.input_hw))
    report = network_parity(tiny_onnx.artifact, fp16, meta, crops)
    assert report["num_crops"] == len(crops) >= 10
    # fp16 rounding (~5e-4 relative per op) through ~20 layers; decoded keypoints stay put.
    assert 0 < report["max_rel_heatmap_diff"] < 1e-2
    assert report["max_keypoint_px"] <= 1.0 and report["mean_keypoint_px"] < 0.25
    out = ort.InferenceSession(str(fp16), providers=["CPUExecutionProvider"]).run(
        None, {"input": np.zeros((2, 3, *meta.input_hw), np.float32)})[0]
    assert out.dtype == np.float32 and np.isfinite(out).all()


def _conv_model(path: Path, weight: np.ndarray) -> Path:
    """input → Conv(weight) → Relu → Conv(small) → output, fp32."""
    small = np.full((1, weight.shape[0], 1, 1), 0.5, np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
         helper.make_node("Conv", ["b", "w2"], ["heatmaps"])], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [numpy_helper.from_array(weight, "w1"), numpy_helper.from_array(small, "w2")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_weights_beyond_fp16_range_keep_their_node_in_fp32(tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    """A BN folded over a near-zero running variance gives weights past ±65504: those
    nodes stay fp32 (never inf), the rest is fp16, and the output matches fp32."""
    rng = np.random.default_rng(0)
    weight = rng.normal(0, 1, (2, 3, 1, 1)).astype(np.float32)
    weight[0, 0, 0, 0] = 3.0 * FP16_MAX
    src = _conv_model(tmp_path / "big.onnx", weight)
    dst = tmp_path / "big.fp16.onnx"
    counts = convert_to_fp16(src, dst)
    assert counts == {"fp16_initializers": 1, "fp32_nodes": 1}
    assert "1 node(s) kept in fp32" in caplog.text
    types = {t.name: t.data_type for t in onnx.load(str(dst)).graph.initializer}
    assert types == {"w1": TensorProto.FLOAT, "w2": TensorProto.FLOAT16}
    x = rng.uniform(0, 1e-4, (2, 3, 4, 4)).astype(np.float32)
    ref, out = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0] for p in (src, dst))
    with np.errstate(over="ignore"):
        assert np.isinf(weight.astype(np.float16)).any()  # what a plain cast would have made
    # fp16 activations between the nodes: about fp16's epsilon of the output's scale.
    assert np.isfinite(out).all() and np.abs(out - ref).max() <= 1e-3 * np.abs(ref).max()


def test_conversion_refuses_graphs_that_are_not_posemum_exports(tmp_path: Path) -> None:
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["c"])], "g",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1])
                               for n in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1])])
    src = tmp_path / "two_inputs.onnx"
    onnx.save(helper.make_model(graph), str(src))
    with pytest.raises(ArtifactError, match="two_inputs.onnx: expected one input and one output"):
        convert_to_fp16(src, tmp_path / "out.onnx")
