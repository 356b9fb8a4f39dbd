"""fp32 posemum ONNX → FP16 ONNX with fp32 input and output, for strongly typed TensorRT.

TensorRT 11 removed the builder's FP16 flag: a strongly typed network runs each layer in
the type the ONNX graph gives it, so an FP16 engine needs an FP16 graph. The graph is
small and regular (Conv, Relu, Add, MaxPool, Slice, Concat, Reshape, DepthToSpace), so
the conversion is done here rather than by a general converter: every float initializer
and Constant becomes float16, a Cast at the input and at the output keeps the model's
interface fp32 (the backends and the sidecar stay the same), and `Shape`/int64 tensors
are untouched. Batch norms are folded into the weights at export (`fold_deconv_bn`),
which can push a weight past float16's ±65504; a node whose weights would overflow stays
fp32 between two Casts instead of silently becoming inf. Parity with the fp32 graph is
checked on real crops by ONNX Runtime (CPU) at export time.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from posemum_deploy.errors import ArtifactError

log = logging.getLogger(__name__)
FP16_MAX = float(np.finfo(np.float16).max)
FP16_TINY = float(np.finfo(np.float16).smallest_subnormal)


def _fits_fp16(values: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(values)) and np.abs(values).max(initial=0.0) <= FP16_MAX)


def _to_fp16(values: np.ndarray) -> np.ndarray:
    """float32 → float16, with magnitudes below the smallest subnormal kept at it (not 0),
    so a tiny folded weight keeps its sign instead of vanishing."""
    out = values.astype(np.float16)
    tiny = (values != 0) & (np.abs(values) < FP16_TINY)
    out[tiny] = np.copysign(FP16_TINY, values[tiny]).astype(np.float16)
    return out


def convert_to_fp16(src: Path, dst: Path) -> dict[str, int]:
    """Write the FP16 version of `src` to `dst`; returns counts (converted, kept fp32)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ArtifactError(f"{src}: expected one input and one output (a posemum export); "
                            "re-export with `posemum export CKPT --format onnx`")
    inits = {t.name: t for t in graph.initializer}
    float_inits = {n for n, t in inits.items() if t.data_type == TensorProto.FLOAT}
    keep_fp32 = {i for i, node in enumerate(graph.node)
                 if any(n in float_inits and not _fits_fp16(numpy_helper.to_array(inits[n]))
                        for n in node.input)}
    kept_inputs = {n for i in keep_fp32 for n in graph.node[i].input if n in float_inits}
    for name in float_inits - kept_inputs:
        tensor = inits[name]
        tensor.CopyFrom(numpy_helper.from_array(_to_fp16(numpy_helper.to_array(tensor)), name))
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(_to_fp16(numpy_helper.to_array(attr.t))))
        if node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i == TensorProto.FLOAT:
                    attr.i = TensorProto.FLOAT16
    nodes = list(graph.node)
    new_nodes = []
    for i, node in enumerate(nodes):
        if i not in keep_fp32:
            new_nodes.append(node)
            continue
        # fp16 activations in, fp32 compute with its fp32 weights, fp16 out.
        for j, name in enumerate(node.input):
            if name and name not in inits:
                new_nodes.append(helper.make_node("Cast", [name], [f"{name}__fp32_{i}"],
                                                  to=TensorProto.FLOAT))
                node.input[j] = f"{name}__fp32_{i}"
        new_nodes.append(node)
        for j, name in enumerate(node.output):
            node.output[j] = f"{name}__fp32_{i}"
            new_nodes.append(helper.make_node("Cast", [node.output[j]], [name],
                                              to=TensorProto.FLOAT16))
    inp, out = graph.input[0].name, graph.output[0].name
    for node in new_nodes:
        node.input[:] = [f"{inp}__fp16" if n == inp else n for n in node.input]
        node.output[:] = [f"{out}__fp16" if n == out else n for n in node.output]
    new_nodes.insert(0, helper.make_node("Cast", [inp], [f"{inp}__fp16"], to=TensorProto.FLOAT16))
    new_nodes.append(helper.make_node("Cast", [f"{out}__fp16"], [out], to=TensorProto.FLOAT))
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]  # recomputed below with the new element types
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.save(model, str(dst))
    try:
        onnx.checker.check_model(str(dst), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ArtifactError(f"{dst}: the FP16 conversion of {src.name} fails onnx.checker "
                            f"({str(e).splitlines()[0][:200]}); report it with the model") from e
    if keep_fp32:
        log.warning("%s: %d node(s) kept in fp32 (weights beyond float16's range after "
                    "batch-norm folding)", src.name, len(keep_fp32))
    return {"fp16_initializers": len(float_inits - kept_inputs), "fp32_nodes": len(keep_fp32)}
