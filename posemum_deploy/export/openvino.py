"""ONNX → OpenVINO IR (fp32 / bf16 / INT8), with the accuracy guard for reduced precision.

The IR keeps fp32 weights (`compress_to_fp16=False`): OpenVINO would otherwise store
fp16 weights by default and the "fp32" IR would drift from torch. bf16 is a runtime
choice, so a bf16 export is the fp32 IR whose sidecar says `precision: bf16` (the
backend then compiles with the bf16 hint). INT8 is NNCF post-training quantisation on
real crops (method "nncf"), or an ORT static-QDQ ONNX converted as is (method "qdq");
either way the sidecar's `extra["quantization"]` records how it was made.
A reduced-precision export is checked against fp32 before it is kept (`check_accuracy`).

Graph per runtime: from a checkpoint, the IR is built from OpenVINO's own ONNX graph
(plain ConvTranspose, BN folded: `export.onnx`, graph kind "convtranspose"), not from
ONNX Runtime's sub-pixel rewrite, which costs OpenVINO 9-13 % (it runs ConvTranspose
natively; folding BN or leaving it to OpenVINO compiles to the same executed layers).
The sidecar's `extra["graph"]` says which graph the IR holds.
"""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from posemum_deploy.artifacts import ModelMetadata, sha256_file, sidecar_path
from posemum_deploy.data.transforms import normalize_numpy
from posemum_deploy.errors import ConfigError, PosemumError
from posemum_deploy.export.accuracy import AccuracyReport, check_accuracy
from posemum_deploy.export.calibration import CropBatcher, calibration_crops
from posemum_deploy.export.formats import ExportOptions, ExportResult, tool_versions
from posemum_deploy.export.onnx import CONVTRANSPOSE, SUBPIXEL, graph_kind
from posemum_deploy.inference.openvino_backend import (
    OpenVinoBackend,
    is_quantized,
    load_sidecar,
    require_openvino,
)

log = logging.getLogger(__name__)
EXPORT_PRECISIONS = ("fp32", "bf16", "int8")
INT8_METHODS = ("nncf", "qdq")


def quantize_nncf(model: Any, crops: np.ndarray, meta: ModelMetadata,
                  fast_bias_correction: bool = True) -> Any:
    """NNCF post-training INT8 (symmetric weights/activations, "performance" preset)."""
    try:
        import nncf
    except ImportError as e:
        raise ConfigError("INT8 for OpenVINO with method 'nncf' needs NNCF: pip install nncf, "
                          "or use int8_method='qdq' with the ORT QDQ export") from e
    data = normalize_numpy(crops, meta.mean, meta.std)
    dataset = nncf.Dataset([data[i:i + 1] for i in range(len(data))])
    # Quiet NNCF through its logger's level only, restored after: `nncf.set_log_level`
    # also sets the level of every handler on that logger, which can be the caller's own
    # (a test runner's capture handler), muting their warnings for good.
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # NNCF draws progress bars on stdout
            return nncf.quantize(model, dataset, preset=nncf.QuantizationPreset.PERFORMANCE,
                                 subset_size=len(data), fast_bias_correction=fast_bias_correction)
    finally:
        nncf_log.setLevel(level)


def _quantization_record(method: str, crops: np.ndarray | None, calib: str | None) -> dict[str, Any]:
    record: dict[str, Any] = {"method": method, "calibration_crops": 0 if crops is None else len(crops),
                              "calibration_source": calib or ""}
    if method == "nncf":
        import nncf

        record.update(preset="performance", nncf=nncf.__version__)
    else:
        record.update(tool="onnxruntime.quantization static QDQ")
    return record


def export_openvino(onnx_path: str | Path, out: str | Path, precision: str = "fp32",
                    crops: np.ndarray | None = None, int8_method: str = "nncf",
                    qdq_onnx: str | Path | None = None, calib_source: str | None = None,
                    val_ann: str | Path | None = None, val_images: str | Path | None = None,
                    max_ap_drop: float = 1.0, batch_size: int = 32
                    ) -> tuple[Path, AccuracyReport | None]:
    """Write `out` (.xml + .bin + sidecar) from the fp32 ONNX export (with its model.json).

    `crops` (uint8 [N, H, W, 3], from `export.calibration.calibration_crops`) calibrate
    NNCF INT8 and feed the accuracy guard, so bf16/int8 need them. `int8_method="qdq"` converts
    `qdq_onnx` (the ORT static-QDQ export) instead of running NNCF. The reduced-precision IR is compared
    with the fp32 ONNX and deleted again when it fails the guard.
    """
    ov = require_openvino()
    onnx_path, out = Path(onnx_path), _xml_path(out)
    _check_options(precision, int8_method, crops, qdq_onnx)
    meta = load_sidecar(onnx_path)
    graph_source, graph = onnx_path, graph_kind(onnx_path, meta)
    model = ov.convert_model(str(onnx_path))
    if is_quantized(model):
        raise ConfigError(f"{onnx_path}: already quantised; pass the fp32 ONNX export")
    if precision == "int8" and int8_method == "nncf":
        assert crops is not None  # _check_options: int8 needs crops
        model = quantize_nncf(model, crops, meta)
    elif precision == "int8":
        assert qdq_onnx is not None  # _check_options: method qdq needs qdq_onnx
        model = ov.convert_model(str(qdq_onnx))
        if not is_quantized(model):
            raise ConfigError(f"{qdq_onnx}: has no QuantizeLinear/DequantizeLinear pairs; pass "
                              "the ORT QDQ export (posemum export --format onnx --precision int8)")
        graph_source, graph = Path(qdq_onnx), graph_kind(qdq_onnx)
    if graph == SUBPIXEL:
        log.warning("%s holds ONNX Runtime's sub-pixel graph; OpenVINO runs the ConvTranspose "
                    "graph faster: export the IR from the checkpoint", graph_source)
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(out), compress_to_fp16=False)
    meta = _ir_metadata(meta, out, precision)
    meta.extra["graph"] = graph
    if precision == "int8":
        meta.extra["quantization"] = _quantization_record(int8_method, crops, calib_source)
    meta.save(sidecar_path(out))
    if precision == "fp32":
        return out, None
    assert crops is not None  # _check_options: bf16 and int8 need crops
    try:
        reference = OpenVinoBackend(onnx_path, precision="fp32", batch_size=batch_size)
        candidate = OpenVinoBackend(out, batch_size=batch_size)
        report = check_accuracy(candidate, reference, crops, val_ann, val_images, max_ap_drop,
                                batch_size=batch_size)
    except PosemumError:
        remove_ir(out)
        raise
    meta.extra["accuracy"] = report.to_dict()
    meta.save(sidecar_path(out))
    return out, report


def _check_options(precision: str, int8_method: str, crops: np.ndarray | None,
                   qdq_onnx: str | Path | None) -> None:
    if precision not in EXPORT_PRECISIONS:
        raise ConfigError(f"OpenVINO export precision {precision!r}: choose "
                          f"{', '.join(EXPORT_PRECISIONS)}")
    if int8_method not in INT8_METHODS:
        raise ConfigError(f"int8 method {int8_method!r}: choose {', '.join(INT8_METHODS)}")
    if precision != "fp32" and (crops is None or len(crops) == 0):
        raise ConfigError(f"--precision {precision} needs real calibration crops: pass --calib DIR")
    if precision == "int8" and int8_method == "qdq" and qdq_onnx is None:
        raise ConfigError("int8 method 'qdq' converts the ORT QDQ ONNX: export it first "
                          "(posemum export --format onnx --precision int8) and pass its path")


def remove_ir(xml: Path) -> None:
    """Delete an IR and its sidecar (a refused export must not be picked up later)."""
    for path in (xml, xml.with_suffix(".bin"), sidecar_path(xml)):
        path.unlink(missing_ok=True)


def _xml_path(out: str | Path) -> Path:
    out = Path(out)
    if out.is_dir() or out.suffix == "":
        return out / "model.xml"
    if out.suffix.lower() != ".xml":
        raise ConfigError(f"{out}: an OpenVINO IR is written as NAME.xml (+ NAME.bin)")
    return out


def _ir_metadata(meta: ModelMetadata, xml: Path, precision: str) -> ModelMetadata:
    meta = ModelMetadata.from_dict(meta.to_dict())
    meta.extra = dict(meta.extra)
    meta.extra.pop("accuracy", None)
    meta.format = "openvino"
    meta.precision = precision
    meta.artifact_sha256 = sha256_file(xml)
    meta.extra["bin_sha256"] = sha256_file(xml.with_suffix(".bin"))
    tools = ("openvino", "nncf") if precision == "int8" else ("openvino",)
    meta.tool_versions = {**meta.tool_versions, **tool_versions(*tools)}
    return meta



def export_openvino_ir(source: Path, out: Path, options: ExportOptions) -> ExportResult:
    """The `openvino` row of the export formats table: checkpoint or fp32 ONNX → IR.

    Precision comes from `options.extra["precision"]` (fp32 | bf16 | int8; `--int8` also
    means int8), the INT8 method from `options.extra["int8_method"]` (nncf when NNCF is
    installed, else the ORT QDQ model converted); crops from `--calib`.
    """
    from posemum_deploy.export.onnx import load_onnx_source
    from posemum_deploy.export.quantize import quantize_qdq

    precision = str(options.extra.get("precision") or ("int8" if options.int8 else "fp32"))
    if options.fp16:
        raise ConfigError("--fp16 is for TensorRT; on the CPU use --precision bf16 or int8")
    method = str(options.extra.get("int8_method") or default_int8_method())
    onnx_path, meta = load_onnx_source(source, options, out, graph=CONVTRANSPOSE)
    crops = None
    if precision != "fp32":
        if options.calib is None:
            raise ConfigError(f"--precision {precision} needs --calib IMAGES (a folder of person "
                              "images or a COCO keypoints json) for calibration and the guard")
        crops = calibration_crops(options.calib, meta.input_hw, options.calib_count)
    qdq = None
    if precision == "int8" and method == "qdq":
        qdq = out.with_name(out.stem + ".qdq.onnx")
        assert crops is not None  # read above for every precision but fp32
        quantize_qdq(onnx_path, qdq, CropBatcher(crops, min(16, len(crops)), meta.mean, meta.std))
    xml, report = export_openvino(onnx_path, out, precision, crops, method, qdq_onnx=qdq,
                                  calib_source=str(options.calib or ""), val_ann=options.val_ann,
                                  val_images=options.val_images, max_ap_drop=options.max_ap_drop)
    extra = [p for p in (onnx_path, qdq) if p is not None and p != source]
    result = {} if report is None else {k: v for k, v in report.to_dict().items()
                                        if k not in ("candidate", "reference")}
    return ExportResult(xml, load_sidecar(xml), result, extra_files=[xml.with_suffix(".bin"), *extra])


def default_int8_method() -> str:
    """NNCF when installed (calibrated per-tensor ranges tuned for OpenVINO), else ORT QDQ."""
    try:
        import nncf  # noqa: F401
    except ImportError:
        return "qdq"
    return "nncf"
