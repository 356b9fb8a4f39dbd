"""The ONNX graphs TensorRT builds from: FP16 (converted) and INT8 (explicit Q/DQ).

TensorRT 11 builds only strongly typed networks (TensorRT 10.x since 10.1 recommends it):
precision comes from the graph, not from builder flags or a calibrator. So
- FP16: the fp32 export converted by `export.fp16` (fp32 input/output kept);
- INT8: the fp32 export quantised to QDQ by ONNX Runtime's static quantiser on real crops,
  with the settings TensorRT requires (signed int8 activations and weights, symmetric,
  zero point 0, per-channel weights, fp32 biases). The `--format onnx-int8` model uses uint8
  asymmetric activations for ONNX Runtime's CPU kernels, which TensorRT rejects; a QDQ
  ONNX passed in directly is checked for this first.
Both are cache entries (`export.trt_cache`) keyed by the fp32 sha256 (and, for INT8,
the sha256 of the calibration crops and the method), and both are compared with the fp32
graph on real crops by ONNX Runtime on the CPU before TensorRT sees them.
"""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from posemum_deploy.artifacts import ModelMetadata
from posemum_deploy.errors import ArtifactError
from posemum_deploy.export.trt_cache import entry_info, load_entry, store_entry

FP16_CONVERTER = "posemum.export.fp16/1"
QDQ_SETTINGS = "s8s8-symmetric-per-channel-fp32-bias/1"
CALIB_BATCH = 16


def fp16_network(onnx_path: Path, onnx_sha: str, cache: Path) -> Path:
    """The FP16 ONNX of `onnx_path` from the cache, converted (and stored) on a miss."""
    from posemum_deploy.export.fp16 import convert_to_fp16

    tag = hashlib.sha256(f"{onnx_sha}|{FP16_CONVERTER}".encode()).hexdigest()[:24]
    entry = cache / "networks" / f"{tag}.fp16.onnx"
    if load_entry(entry) is None:
        with tempfile.TemporaryDirectory() as tmp:
            converted = Path(tmp) / "fp16.onnx"
            counts = convert_to_fp16(onnx_path, converted)
            store_entry(entry, converted.read_bytes(),
                        {"source_sha256": onnx_sha, "converter": FP16_CONVERTER, **counts})
    return entry


def int8_network(onnx_path: Path, onnx_sha: str, meta: ModelMetadata, calib: Path,
                 calib_count: int, method: str, cache: Path) -> Path:
    """The TensorRT-ready QDQ ONNX of `onnx_path`, calibrated on `calib` crops (cached)."""
    from posemum_deploy.export.calibration import CropBatcher, calibration_crops

    crops = calibration_crops(calib, meta.input_hw, calib_count)
    crops_sha = hashlib.sha256(crops.tobytes()).hexdigest()
    tag = hashlib.sha256(f"{onnx_sha}|{crops_sha}|{method}|{QDQ_SETTINGS}".encode())
    entry = cache / "networks" / f"{tag.hexdigest()[:24]}.qdq.onnx"
    if load_entry(entry) is None:
        batcher = CropBatcher(crops, min(CALIB_BATCH, len(crops)), meta.mean, meta.std)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "qdq.onnx"
            quantize_for_tensorrt(onnx_path, out, batcher, method)
            store_entry(entry, out.read_bytes(),
                        {"source_sha256": onnx_sha, "calibration_crops_sha256": crops_sha,
                         "calibration_crops": len(crops), "calibrate_method": method,
                         "calibration_source": str(calib), "settings": QDQ_SETTINGS})
    check_tensorrt_qdq(entry)
    return entry


def quantize_for_tensorrt(fp32_onnx: Path, out: Path, batcher: Any, method: str) -> None:
    """Static QDQ with TensorRT's constraints: int8 both ways, symmetric, zero point 0."""
    from posemum_deploy.export.quantize import quantize_qdq

    quantize_qdq(fp32_onnx, out, batcher, method, tensorrt=True)


def check_tensorrt_qdq(path: Path) -> None:
    """Refuse Q/DQ that TensorRT cannot build: non-int8 or non-zero zero points."""
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        raise ArtifactError(f"{path}: has no QuantizeLinear/DequantizeLinear nodes, so it is not "
                            "an INT8 QDQ model; pass the fp32 ONNX with --int8 --calib IMAGES")
    for node in qdq:
        zp = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zp is None:
            continue  # no zero point: int8, 0
        nonzero = bool(np.any(numpy_helper.to_array(zp) != 0))
        if zp.data_type != TensorProto.INT8 or nonzero:
            kind = TensorProto.DataType.Name(zp.data_type).lower()
            raise ArtifactError(
                f"{path}: its Q/DQ node {node.name or node.output[0]} has a {kind} zero point"
                f"{' that is not 0' if nonzero else ''}, which TensorRT rejects (it takes int8 "
                "Q/DQ with zero point 0; the onnx-int8 export is uint8 and asymmetric, for ONNX "
                "Runtime's CPU); build from the fp32 ONNX with "
                "`posemum export MODEL.onnx --format tensorrt --int8 --calib IMAGES`")


def network_parity(fp32_onnx: Path, graph_path: Path, meta: ModelMetadata, crops: np.ndarray,
                   batch_size: int = 16) -> dict[str, Any]:
    """fp32 ONNX vs the FP16/QDQ network, both on ONNX Runtime (CPU), on uint8 crops."""
    from posemum_deploy.inference.ort_backend import OrtBackend
    from posemum_deploy.inference.pipeline import PoseEstimator

    ests = [PoseEstimator(OrtBackend(p, device="cpu", metadata=meta), batch_size=batch_size)
            for p in (fp32_onnx, graph_path)]
    hm_ref, hm = (e.heatmaps(crops) for e in ests)
    xy_ref, _ = ests[0].codec.decode(hm_ref)
    xy, _ = ests[1].codec.decode(hm)
    scale = float(np.abs(hm_ref).max()) or 1.0
    return {"num_crops": len(crops), "max_abs_heatmap_diff": float(np.abs(hm - hm_ref).max()),
            "max_rel_heatmap_diff": float(np.abs(hm - hm_ref).max()) / scale,
            "max_keypoint_px": float(np.abs(xy - xy_ref).max()) if len(crops) else 0.0,
            "mean_keypoint_px": float(np.linalg.norm(xy - xy_ref, axis=-1).mean())
            if len(crops) else 0.0,
            "network": graph_path.name, "network_info": entry_info(graph_path)}
