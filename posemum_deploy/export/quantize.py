"""ONNX Runtime CPU INT8: static QDQ quantisation calibrated on real person crops.

Static (not dynamic) quantisation because convolutions dominate this network and only
static QDQ lets ONNX Runtime run them as integer kernels (VNNI on recent x86).
Weights are per-channel symmetric int8 and activations uint8, the layout ORT's x86
kernels are fastest with. The graph is pre-processed (shape inference, fusions) first,
as ORT recommends. The INT8 model is compared with its fp32 source on the calibration
crops and, when a val set is given, on AP (refused when the drop exceeds the limit).
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from posemum_deploy.artifacts import ModelMetadata, sidecar_path
from posemum_deploy.errors import ConfigError
from posemum_deploy.export.calibration import CropBatcher, calibration_crops
from posemum_deploy.export.formats import ExportOptions, ExportResult
from posemum_deploy.export.onnx import (
    INPUT_NAME,
    embed_metadata,
    finish_sidecar,
    load_onnx_source,
)

log = logging.getLogger(__name__)
CALIB_BATCH = 16
CALIBRATE_METHODS = ("minmax", "entropy", "percentile")


class CropReader:
    """onnxruntime CalibrationDataReader over a CropBatcher (one input, fixed batch)."""

    def __init__(self, batcher: CropBatcher, input_name: str = INPUT_NAME) -> None:
        self.batcher = batcher
        self.input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = self.batcher.next_batch()
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self.batcher.reset()


def quantize_qdq(fp32_onnx: Path, out: Path, batcher: CropBatcher, method: str = "minmax",
                 tensorrt: bool = False) -> None:
    """Static QDQ quantisation of `fp32_onnx` into `out` (per-channel s8 weights).

    Activations are u8 with a zero point for the CPU runtimes; `tensorrt=True` makes them
    s8 and symmetric with fp32 biases, the only Q/DQ TensorRT builds.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ConfigError(f"calibration method {method!r}: choose {', '.join(CALIBRATE_METHODS)}")
    reader = CropReader(batcher)
    CalibrationDataReader.register(CropReader)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_onnx), str(pre), skip_symbolic_shape=True)
        extra = ({"ActivationSymmetric": True, "WeightSymmetric": True,
                  "QuantizeBias": False}  # no int32 bias DQ in TensorRT
                 if tensorrt else {})
        quantize_static(str(pre), str(out), reader, quant_format=QuantFormat.QDQ,
                        per_channel=True,
                        activation_type=QuantType.QInt8 if tensorrt else QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=methods[method],
                        extra_options=extra)


def export_onnx_int8(source: Path, out: Path, options: ExportOptions) -> ExportResult:
    """Checkpoint or fp32 ONNX → INT8 QDQ ONNX + sidecar (precision "int8", how it was made)."""
    if options.calib is None:
        raise ConfigError("--format onnx-int8 needs --calib IMAGES (a folder of person images "
                          "or a COCO keypoints json) to calibrate on real crops")
    fp32_path, meta = load_onnx_source(source, options, out)
    if meta.precision != "fp32":
        raise ConfigError(f"{fp32_path}: is already {meta.precision}; quantise the fp32 export")
    crops = calibration_crops(options.calib, meta.input_hw, options.calib_count)
    method = str(options.extra.get("calibrate_method", "minmax"))
    batcher = CropBatcher(crops, min(CALIB_BATCH, len(crops)), meta.mean, meta.std)
    quantize_qdq(fp32_path, out, batcher, method)
    meta = ModelMetadata.from_dict(meta.to_dict())
    meta.precision = "int8"
    meta.extra = {"quantization": {
        "tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "per_channel": True,
        "weights": "int8 symmetric", "activations": "uint8", "calibrate_method": method,
        "calibration_crops": int(len(batcher) * batcher.batch_size),
        "calibration_source": str(options.calib), "fp32_source": fp32_path.name}}
    embed_metadata(out, meta)
    meta = finish_sidecar(out, meta, "onnx", "int8", ("torch", "onnx", "onnxruntime"))
    report = _accuracy(out, fp32_path, crops, options)
    meta.extra["accuracy"] = report
    meta.save(sidecar_path(out))
    return ExportResult(out, meta, report, extra_files=[fp32_path])


def _accuracy(int8_path: Path, fp32_path: Path, crops: np.ndarray,
              options: ExportOptions) -> dict[str, Any]:
    """INT8 vs fp32 on the crops (and AP on the val set); refuses a too-large AP drop."""
    from posemum_deploy.errors import ArtifactError
    from posemum_deploy.export.accuracy import check_accuracy
    from posemum_deploy.inference.ort_backend import OrtBackend

    try:
        report = check_accuracy(OrtBackend(int8_path, device="cpu"),
                                OrtBackend(fp32_path, device="cpu"), crops,
                                options.val_ann, options.val_images, options.max_ap_drop)
    except ArtifactError:
        for path in (int8_path, sidecar_path(int8_path)):
            path.unlink(missing_ok=True)
        raise
    return {k: v for k, v in report.to_dict().items() if k not in ("candidate", "reference")}
