"""Wrap a foreign ONNX heatmap model (HRNet from mmdeploy, any top-down exporter) as a
posemum ONNX artifact: the same graph plus the metadata every ONNX backend reads.

A model qualifies when it takes one normalised crop batch [N, 3, H, W] and returns one
heatmap tensor [N, K, h, w]; the heatmap stride (H/h, W/w) is read from the graph by
running it once. Sizes that do not fit are refused, naming what the graph declares,
because a silently mis-sized crop gives wrong keypoints, not an error. A BGR network
gets a channel reversal in front of its input (a Gather, exact), so that posemum's RGB
crops feed it; the sidecar then states RGB with the statistics reversed to match.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np

from posemum_deploy.artifacts import ModelMetadata, sha256_file
from posemum_deploy.data.coco import FLIP_PAIRS, KEYPOINT_NAMES
from posemum_deploy.errors import ArtifactError, ConfigError
from posemum_deploy.export.onnx import check_onnx, embed_metadata, finish_sidecar

log = logging.getLogger(__name__)
KEYPOINT_SETS = {"coco17": (KEYPOINT_NAMES, FLIP_PAIRS)}
RGB_INPUT = "posemum_bgr_input"  # the network's own input, behind the Gather


def _dims(value_info: Any) -> list[Any]:
    """A tensor's dims: ints where static, the symbol (or '?') where not."""
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in value_info.type.tensor_type.shape.dim]


def _describe(values: list[Any]) -> str:
    return ", ".join(f"{v.name} {_dims(v)}" for v in values)


def check_signature(model: Any, path: Path, input_hw: tuple[int, int]) -> None:
    """One 4-D input of 3 channels at `input_hw` (or symbolic), one 4-D output."""
    init = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in init]
    outputs = list(model.graph.output)
    want = (f"supported: one input [N, 3, {input_hw[0]}, {input_hw[1]}] (normalised crops) "
            "and one output [N, K, h, w] (heatmaps)")
    if len(inputs) != 1 or len(outputs) != 1:
        raise ArtifactError(f"{path}: {len(inputs)} input(s) ({_describe(inputs)}) and "
                            f"{len(outputs)} output(s) ({_describe(outputs)}); {want}")
    dims, out_dims = _dims(inputs[0]), _dims(outputs[0])
    fixed = [(d, v) for d, v in zip(dims[1:], (3, *input_hw), strict=False) if isinstance(d, int) and d]
    if len(dims) != 4 or len(out_dims) != 4 or any(d != v for d, v in fixed):
        raise ArtifactError(f"{path}: input {inputs[0].name} {dims}, output {outputs[0].name} "
                            f"{out_dims}; {want} (pass the model's own --input-size)")
    if inputs[0].type.tensor_type.elem_type != 1:  # onnx.TensorProto.FLOAT
        raise ArtifactError(f"{path}: input {inputs[0].name} is not float32; {want}")


def dynamic_batch(model: Any) -> Any:
    """The model with its input and output batch axis symbolic (posemum batches vary)."""
    model = copy.deepcopy(model)
    init = {t.name for t in model.graph.initializer}
    for v in [*[i for i in model.graph.input if i.name not in init], model.graph.output[0]]:
        v.type.tensor_type.shape.dim[0].dim_param = "batch"
    return model


def _rename(graph: Any, old: str, new: str) -> None:
    """Rename one value everywhere in `graph` and its subgraphs (If/Loop bodies)."""
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                _rename(sub, old, new)
    for v in [*graph.input, *graph.output, *graph.value_info]:
        if v.name == old:
            v.name = new


def posemum_names(model: Any) -> Any:
    """Input and output named as posemum's own exports name them (`input`, `heatmaps`):
    the INT8 calibration readers feed `input` by name."""
    from posemum_deploy.export.onnx import INPUT_NAME, OUTPUT_NAME

    model = copy.deepcopy(model)
    graph = model.graph
    init = {t.name for t in graph.initializer}
    used = {n for node in graph.node for n in [*node.input, *node.output]} | init
    current = (next(i for i in graph.input if i.name not in init).name, graph.output[0].name)
    for old, new in zip(current, (INPUT_NAME, OUTPUT_NAME), strict=True):
        if old != new and new not in used:
            _rename(graph, old, new)
    return model


def reverse_channels(model: Any) -> Any:
    """Put a Gather(axis=1, [2, 1, 0]) in front of the input: RGB in, BGR to the network."""
    import onnx
    from onnx import helper, numpy_helper

    model = copy.deepcopy(model)
    init = {t.name for t in model.graph.initializer}
    original = next(i for i in model.graph.input if i.name not in init)
    new_input = copy.deepcopy(original)
    new_input.name = original.name  # the network's input now comes from the Gather
    _rename(model.graph, original.name, RGB_INPUT)
    original = next(i for i in model.graph.input if i.name == RGB_INPUT)
    model.graph.initializer.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64),
                                                           "posemum_bgr_index"))
    model.graph.node.insert(0, helper.make_node("Gather", [new_input.name, "posemum_bgr_index"],
                                                [RGB_INPUT], axis=1, name="posemum_rgb_to_bgr"))
    index = list(model.graph.input).index(original)
    model.graph.input.remove(original)
    model.graph.input.insert(index, new_input)
    onnx.checker.check_model(model)
    return model


def run_once(path: Path, input_hw: tuple[int, int], batch: int = 2) -> tuple[int, ...]:
    """The output shape for a zero batch, by running the graph with ONNX Runtime."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = np.zeros((batch, 3, *input_hw), np.float32)
        out = session.run(None, {session.get_inputs()[0].name: x})[0]
    except Exception as e:  # onnxruntime raises its own Fail/InvalidArgument types
        raise ArtifactError(f"{path}: does not run on a batch of {batch} crops of "
                            f"{input_hw[0]}x{input_hw[1]} ({str(e).splitlines()[0][:200]}); "
                            "export it with a dynamic batch axis and pass its --input-size"
                            ) from e
    return tuple(int(d) for d in out.shape)


def heatmap_hw(shape: tuple[int, ...], input_hw: tuple[int, int], path: Path) -> tuple[int, int]:
    """(h, w) of [N, K, h, w] output, checked to be one integer stride of the input."""
    h, w = shape[2], shape[3]
    if input_hw[0] % h or input_hw[1] % w or input_hw[0] // h != input_hw[1] // w:
        raise ArtifactError(f"{path}: output {list(shape)} is not a heatmap of the "
                            f"{input_hw[0]}x{input_hw[1]} input at one integer stride "
                            f"(H/h={input_hw[0] / h:g}, W/w={input_hw[1] / w:g})")
    return h, w


def import_onnx_heatmap(src: str | Path, out_dir: str | Path, input_hw: tuple[int, int],
                        mean: tuple[float, float, float], std: tuple[float, float, float],
                        channel_order: str,
                        keypoints: str = "coco17", heatmap_offset: float = 0.0) -> ModelMetadata:
    """Write OUT_DIR/model.onnx (+ model.json) from a foreign heatmap ONNX; returns its
    metadata. `mean`/`std` are on posemum's 0..1 scale, in the network's channel order;
    `heatmap_offset` is the decoding convention (0: the peak at crop_xy / stride, as
    mmpose's MSRA heatmaps; 0.5: posemum's pixel centres, see data/codec.py)."""
    import onnx

    src, out_dir = Path(src), Path(out_dir)
    if keypoints not in KEYPOINT_SETS:
        raise ConfigError(f"--keypoints {keypoints!r}: choose {', '.join(KEYPOINT_SETS)}")
    order = channel_order.upper()
    if order not in ("RGB", "BGR"):
        raise ConfigError(f"--channel-order {channel_order!r}: choose rgb or bgr")
    if not src.is_file():
        raise ArtifactError(f"{src}: ONNX file not found")
    try:
        model = onnx.load(str(src))
    except Exception as e:  # protobuf DecodeError and friends
        raise ArtifactError(f"{src}: not an ONNX model ({type(e).__name__}); pass a .onnx "
                            "file exported from the pose network") from e
    check_signature(model, src, input_hw)
    model = posemum_names(dynamic_batch(model))
    if order == "BGR":
        model = reverse_channels(model)
        mean, std = mean[::-1], std[::-1]
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "model.onnx"
    onnx.save(model, str(out))
    shape = run_once(out, input_hw)
    names, flips = KEYPOINT_SETS[keypoints]
    if shape[1] != len(names):
        raise ArtifactError(f"{src}: output has {shape[1]} channels, --keypoints {keypoints} "
                            f"has {len(names)} joints")
    meta = ModelMetadata(backbone=f"onnx:{src.stem}", num_joints=shape[1], deconv_channels=0,
                         input_hw=input_hw, heatmap_hw=heatmap_hw(shape, input_hw, src),
                         mean=mean, std=std, channel_order="RGB",
                         keypoint_names=names, flip_pairs=flips, format="onnx",
                         source_checkpoint_sha256=sha256_file(src),
                         extra={"imported_from": {"file": src.name, "layout": "onnx-heatmap",
                                                  "channel_order": order},
                                "heatmap_offset": float(heatmap_offset)})
    embed_metadata(out, meta, shape[1:])
    check_onnx(out)
    meta = finish_sidecar(out, meta, "onnx", "fp32", ("onnx", "onnxruntime"))
    log.info("wrapped %s as %s (heatmaps %s, stride %d)", src, out, shape[1:],
             input_hw[0] // shape[2])
    return meta
