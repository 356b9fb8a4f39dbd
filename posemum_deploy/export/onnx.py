"""Checkpoint → ONNX (network only: normalised crops in, heatmaps out), checked.

Uses the TorchScript exporter (`dynamo=False`): with this torch it is deterministic,
needs no onnxscript, and handles SimpleBaseline completely. Only the batch axis is
dynamic. The deconvolution head (a third of the compute) is rewritten exactly for the
runtimes: batch norms are folded into the deconvolutions (ONNX Runtime fuses Conv+BN
but not ConvTranspose+BN), and each 4×4 stride-2 deconvolution becomes one 2×2
convolution with 4× the channels plus a pixel shuffle (sub-pixel convolution, same
MACs), because ONNX Runtime's ConvTranspose is a slow col2im kernel that its INT8
quantiser leaves in fp32, while convolutions get its NCHWc and VNNI kernels. That
rewrite is ONNX Runtime's graph ("subpixel-deconv"); OpenVINO runs ConvTranspose
natively and the rewrite costs it 9-13 %, so its graph ("convtranspose", `graph=`)
keeps plain deconvolutions (BN still folded). `meta.extra["graph"]` names the kind in
the sidecar and the embedded metadata. The ModelMetadata goes into the ONNX metadata
props and a sidecar; the export is then compared with torch on real crops (heatmaps and
decoded keypoints).
"""
from __future__ import annotations

import copy
import itertools
import json
import logging
import warnings
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from posemum_deploy.artifacts import (
    ModelMetadata,
    read_sidecar,
    sha256_file,
    sidecar_path,
)
from posemum_deploy.errors import ArtifactError, ConfigError
from posemum_deploy.export.formats import ExportOptions, ExportResult, tool_versions

log = logging.getLogger(__name__)
INPUT_NAME, OUTPUT_NAME = "input", "heatmaps"
META_KEY = "posemum.model_meta"
# graph kinds: ONNX Runtime's (sub-pixel deconvolutions) and OpenVINO's (plain ConvTranspose).
SUBPIXEL, CONVTRANSPOSE = "subpixel-deconv", "convtranspose"
GRAPH_KINDS = (SUBPIXEL, CONVTRANSPOSE)


def fold_deconv_bn(model: nn.Module) -> nn.Module:
    """A copy of `model` with each ConvTranspose2d → BatchNorm2d pair folded into one layer
    (a BatchNorm2d without running statistics normalises with the batch's: it stays)."""
    model = copy.deepcopy(model).eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        layers = list(seq)
        for i, (a, b) in enumerate(itertools.pairwise(layers)):
            if isinstance(a, nn.ConvTranspose2d) and isinstance(b, nn.BatchNorm2d) and a.groups == 1:
                mean, var = b.running_mean, b.running_var
                if mean is None or var is None:
                    continue
                scale = b.weight / torch.sqrt(var + b.eps)
                bias = a.bias if a.bias is not None else torch.zeros_like(mean)
                with torch.no_grad():
                    a.weight.mul_(scale[None, :, None, None])
                    a.bias = nn.Parameter((bias - mean) * scale + b.bias)
                seq[i + 1] = nn.Identity()
    return model


class SubPixelDeconv(nn.Module):
    """ConvTranspose2d(k=4, s=2, p=1) as a 2×2 conv over the padded input + pixel shuffle.

    Output row 2m uses input rows (m-1, m) with kernel taps (3, 1); row 2m+1 uses rows
    (m, m+1) with taps (2, 0); same for columns. One conv computes all four phases
    (4·C_out channels); phase (py, px) is its window shifted by (py, px).
    """

    TAPS = ((3, 1), (2, 0))

    def __init__(self, deconv: nn.ConvTranspose2d) -> None:
        super().__init__()
        w = deconv.weight.detach()  # [C_in, C_out, 4, 4]
        c_in, c_out = w.shape[:2]
        phases = [w[:, :, list(self.TAPS[py])][:, :, :, list(self.TAPS[px])].transpose(0, 1)
                  for py in range(2) for px in range(2)]
        bias = deconv.bias.detach() if deconv.bias is not None else torch.zeros(c_out)
        self.conv = nn.Conv2d(c_in, 4 * c_out, 2, padding=1)
        assert self.conv.bias is not None  # a Conv2d has a bias unless built with bias=False
        with torch.no_grad():
            self.conv.weight.copy_(torch.cat(phases))
            self.conv.bias.copy_(bias.repeat(4))
        self.c_out = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, y = self.c_out, self.conv(x)  # y: [N, 4·C_out, H+1, W+1]
        window = (slice(0, -1), slice(1, None))  # static slices: no Shape ops in the graph
        phases = [y[:, (2 * py + px) * c:(2 * py + px + 1) * c, window[py], window[px]]
                  for py in range(2) for px in range(2)]
        return F.pixel_shuffle(torch.stack(phases, 2).flatten(1, 2), 2)


def _is_subpixel_able(m: nn.Module) -> TypeGuard[nn.ConvTranspose2d]:
    return (isinstance(m, nn.ConvTranspose2d) and m.kernel_size == (4, 4) and m.stride == (2, 2)
            and m.padding == (1, 1) and m.output_padding == (0, 0) and m.groups == 1
            and m.dilation == (1, 1))


def runtime_graph(model: nn.Module, graph: str = SUBPIXEL) -> nn.Module:
    """A copy of `model` with the exact rewrites above: BN folding, and for ONNX
    Runtime's graph the sub-pixel deconvolutions."""
    check_graph_kind(graph)
    model = fold_deconv_bn(model)
    if graph == CONVTRANSPOSE:
        return model
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i, layer in enumerate(list(seq)):
            if _is_subpixel_able(layer):
                seq[i] = SubPixelDeconv(layer)
    return model


def check_graph_kind(graph: str) -> None:
    if graph not in GRAPH_KINDS:
        raise ConfigError(f"graph kind {graph!r}: choose {', '.join(GRAPH_KINDS)}")


def export_network(model: nn.Module, meta: ModelMetadata, out: Path, opset: int,
                   graph_kind: str = SUBPIXEL) -> Path:
    """Write the ONNX graph of `model` with a dynamic batch axis and embedded metadata;
    `meta.extra["graph"]` is set to `graph_kind` (the caller's meta, for its sidecar)."""
    h, w = meta.input_hw
    sample = torch.zeros(2, 3, h, w)
    graph = runtime_graph(model, graph_kind).cpu()
    meta.extra["graph"] = graph_kind
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(graph, (sample,), str(out), dynamo=False,
                          opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], do_constant_folding=True,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        out_shape = tuple(graph(sample).shape)
    embed_metadata(out, meta, out_shape[1:])
    check_onnx(out)
    return out


def embed_metadata(path: Path, meta: ModelMetadata, output_khw: tuple[int, ...] = ()) -> None:
    """Store the metadata (less the file's own sha256) in the ONNX metadata props, and
    the static [K, h, w] of the output where the exporter left them symbolic."""
    import onnx

    model = onnx.load(str(path))
    dims = model.graph.output[0].type.tensor_type.shape.dim
    for dim, size in zip(list(dims)[1:], output_khw, strict=False):
        dim.dim_value = int(size)
    data = {k: v for k, v in meta.to_dict().items() if k != "artifact_sha256"}
    del model.metadata_props[:]
    entries = {META_KEY: json.dumps(data), "keypoint_names": ",".join(meta.keypoint_names),
               "input_hw": "x".join(map(str, meta.input_hw)), "precision": meta.precision}
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "posemum"
    onnx.save(model, str(path))


def embedded_metadata(path: str | Path) -> ModelMetadata:
    """The ModelMetadata stored inside an ONNX file (without the sidecar)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if META_KEY not in props:
        raise ArtifactError(f"{path}: carries no posemum metadata; re-export it with "
                            "`posemum export CKPT --format onnx`")
    return ModelMetadata.from_dict(json.loads(props[META_KEY]))


def check_onnx(path: Path) -> None:
    """onnx.checker (full, with shape inference) or an ArtifactError naming the file."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ArtifactError(f"{path}: the exported ONNX fails onnx.checker ({e}); "
                            "report this with the checkpoint's backbone") from e


def finish_sidecar(artifact: Path, meta: ModelMetadata, fmt: str, precision: str,
                   tools: tuple[str, ...]) -> ModelMetadata:
    """Stamp format, precision, sha256 and tool versions, and write the sidecar."""
    meta = ModelMetadata.from_dict(copy.deepcopy(meta.to_dict()))
    meta.format, meta.precision = fmt, precision
    meta.artifact_sha256 = sha256_file(artifact)
    meta.tool_versions = {**meta.tool_versions, **tool_versions(*tools)}
    meta.save(sidecar_path(artifact))
    return meta


def export_onnx(source: Path, out: Path, options: ExportOptions,
                graph: str = SUBPIXEL) -> ExportResult:
    """Checkpoint → fp32 ONNX + sidecar, then the parity check against torch."""
    from posemum_deploy.models.checkpoint import load_model

    model, meta = load_model(source, weights=options.weights)
    meta.precision = "fp32"
    export_network(model, meta, out, options.opset, graph)
    meta = finish_sidecar(out, meta, "onnx", "fp32", ("torch", "onnx", "onnxruntime"))
    crops, origin = check_crops(source, meta, options)
    report = parity_report(model, out, crops)
    report["crops"] = origin
    meta.extra["parity"] = report
    meta.save(sidecar_path(out))
    return ExportResult(out, meta, report)


def check_crops(source: Path, meta: ModelMetadata, options: ExportOptions,
                limit: int = 64) -> tuple[np.ndarray, str]:
    """Real uint8 crops for the parity check, and where they came from.

    From --check, else --calib, else the checkpoint's own val/labelled json; random
    pixels (and a warning) only when none of those exist on this machine.
    """
    from posemum_deploy.export.calibration import calibration_crops

    candidates: list[Path] = [p for p in (options.check, options.calib) if p is not None]
    if not candidates:
        candidates = _checkpoint_data(source)
    for path in candidates:
        if path.exists():
            return calibration_crops(path, meta.input_hw, limit), str(path)
    log.warning("no real images for the parity check; using random pixels "
                "(pass --check IMAGES for real crops)")
    h, w = meta.input_hw
    return np.random.default_rng(0).integers(0, 256, (8, h, w, 3), dtype=np.uint8), "random"


def _checkpoint_data(source: Path) -> list[Path]:
    if source.suffix.lower() not in (".pt", ".pth"):
        return []
    from posemum_deploy.models.checkpoint import read_checkpoint

    data = (read_checkpoint(source, mmap=True).get("config") or {}).get("data") or {}
    return [Path(p) for p in (data.get("val_ann"), data.get("labeled")) if p]


def parity_report(model: nn.Module, onnx_path: Path, crops: np.ndarray,
                  batch_size: int = 16) -> dict[str, Any]:
    """Torch vs ONNX Runtime (CPU, fp32) on uint8 crops: heatmap Δ and decoded keypoints."""
    from posemum_deploy.inference.ort_backend import OrtBackend
    from posemum_deploy.inference.pipeline import PoseEstimator
    from posemum_deploy.inference.torch_backend import TorchBackend

    ort_be = OrtBackend(onnx_path, device="cpu")
    torch_be = TorchBackend(model, ModelMetadata.from_dict(ort_be.metadata.to_dict()), device="cpu")
    est_o = PoseEstimator(ort_be, batch_size=batch_size)
    est_t = PoseEstimator(torch_be, batch_size=batch_size)
    hm_o, hm_t = est_o.heatmaps(crops), est_t.heatmaps(crops)
    xy_o, _ = est_o.codec.decode(hm_o)
    xy_t, _ = est_t.codec.decode(hm_t)
    return {"num_crops": int(len(crops)), "max_abs_heatmap_diff": float(np.abs(hm_o - hm_t).max()),
            "keypoints_identical": bool(np.array_equal(xy_o, xy_t)),
            "max_keypoint_px": float(np.abs(xy_o - xy_t).max()) if len(crops) else 0.0}


def load_onnx_source(source: Path, options: ExportOptions, out: Path,
                     graph: str = SUBPIXEL) -> tuple[Path, ModelMetadata]:
    """An fp32 posemum ONNX for formats built from ONNX: `source` itself (whatever graph
    it holds), or exported from the checkpoint in the `graph` kind to `<out
    stem>.fp32.onnx` (`<out stem>.<graph>.fp32.onnx` for OpenVINO's graph) beside `out`."""
    if source.suffix.lower() == ".onnx":
        return source, read_sidecar(source)
    infix = "" if graph == SUBPIXEL else f".{graph}"
    onnx_path = out.with_name(f"{out.stem}{infix}.fp32.onnx")
    result = export_onnx(source, onnx_path, options, graph)
    return onnx_path, result.metadata


def graph_kind(path: str | Path, meta: ModelMetadata | None = None) -> str:
    """The graph kind of an ONNX export: its sidecar's `extra["graph"]`, else read from
    the graph (any ConvTranspose node: OpenVINO's kind; exports before graph kinds were
    recorded held the sub-pixel graph)."""
    if meta is not None and meta.extra.get("graph") in GRAPH_KINDS:
        return str(meta.extra["graph"])
    import onnx

    ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    return CONVTRANSPOSE if "ConvTranspose" in ops else SUBPIXEL
