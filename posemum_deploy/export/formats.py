"""The table of export formats, the options they share, and sidecar verification.

One row per format names the module and function that writes it, so adding a format
(e.g. `openvino`) is one new row plus one module: every exporter has the signature
`export_<fmt>(source: Path, out: Path, options: ExportOptions) -> ExportResult`, where
`source` is a checkpoint (.pt) or, for formats built from ONNX, a posemum .onnx export.
Runtime modules are imported only when their row is used.
"""
from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posemum_deploy.artifacts import ModelMetadata, sidecar_path
from posemum_deploy.errors import ArtifactError, ConfigError

MIN_OPSET = 17


@dataclass(frozen=True)
class ExportFormat:
    """One exportable format: the file suffix it writes and the function that writes it."""

    name: str
    suffix: str
    module: str
    function: str
    help: str


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("onnx", ".onnx", "posemum_deploy.export.onnx", "export_onnx",
                 "fp32 ONNX network (crops in, heatmaps out), dynamic batch"),
    ExportFormat("onnx-int8", ".onnx", "posemum_deploy.export.quantize", "export_onnx_int8",
                 "ONNX Runtime CPU INT8 (static QDQ, calibrated on --calib crops)"),
    ExportFormat("tensorrt", ".engine", "posemum_deploy.export.tensorrt", "export_tensorrt",
                 "TensorRT engine (fp32/--fp16/--int8) for this GPU and TensorRT version"),
    ExportFormat("openvino", ".xml", "posemum_deploy.export.openvino", "export_openvino_ir",
                 "OpenVINO IR for the CPU (--precision fp32/bf16/int8, INT8 calibrated on --calib)"),
)}


@dataclass
class ExportOptions:
    """Options shared by the exporters; each format reads the ones it needs.

    `batch` is the (min, opt, max) batch profile (TensorRT), `calib` a folder of person
    images or a COCO keypoints json (INT8 calibration and the parity check), `check`
    real images for the parity check when there is no `calib`.
    """

    opset: int = MIN_OPSET
    weights: str = "teacher"
    fp16: bool = False
    int8: bool = False
    calib: Path | None = None
    calib_count: int = 256
    check: Path | None = None
    batch: tuple[int, int, int] = (1, 32, 64)
    val_ann: Path | None = None
    val_images: Path | None = None
    max_ap_drop: float = 1.0
    cache_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.opset < MIN_OPSET:
            raise ConfigError(f"--opset {self.opset}: posemum exports need opset ≥ {MIN_OPSET}")
        if self.weights not in ("teacher", "student"):
            raise ConfigError(f"--weights {self.weights!r}: choose teacher or student")
        if (self.val_ann is None) != (self.val_images is None):
            raise ConfigError("give both --val-ann and --val-images, or neither")


@dataclass
class ExportResult:
    """What an exporter wrote and what it checked (the CLI prints `report`)."""

    artifact: Path
    metadata: ModelMetadata
    report: dict[str, Any] = field(default_factory=dict)
    extra_files: list[Path] = field(default_factory=list)

    @property
    def sidecar(self) -> Path:
        return sidecar_path(self.artifact)


def parse_profile(text: str) -> tuple[int, int, int]:
    """'1,32,64' → (1, 32, 64) with 1 ≤ min ≤ opt ≤ max; a single 'N' means (N, N, N)."""
    try:
        values = [int(v) for v in text.replace(" ", "").split(",")]
    except ValueError as e:
        raise ConfigError(f"--batch {text!r}: expected MIN,OPT,MAX integers, e.g. 1,32,64") from e
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
        raise ConfigError(f"--batch {text!r}: expected MIN,OPT,MAX with 1 ≤ MIN ≤ OPT ≤ MAX, "
                          "e.g. 1,32,64")
    return values[0], values[1], values[2]


def get_format(name: str) -> ExportFormat:
    """The table row for `name`; a typo gets a suggestion."""
    if name in FORMATS:
        return FORMATS[name]
    close = difflib.get_close_matches(name, list(FORMATS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"unknown export format {name!r}{hint}; choose {', '.join(FORMATS)}")


def export_model(source: str | Path, fmt: str, out: str | Path,
                 options: ExportOptions | None = None) -> ExportResult:
    """Export `source` (checkpoint or ONNX) to `fmt` at `out` (a file, or a folder)."""
    row = get_format(fmt)
    source, out = Path(source), Path(out)
    if not source.is_file():
        raise ArtifactError(f"{source}: not found; pass a checkpoint (RUN_DIR/checkpoints/best.pt)")
    if out.is_dir() or out.suffix == "":
        out = out / f"model{row.suffix}"
    out.parent.mkdir(parents=True, exist_ok=True)
    exporter: Callable[..., ExportResult] = getattr(importlib.import_module(row.module), row.function)
    return exporter(source, out, options or ExportOptions())


def tool_versions(*names: str) -> dict[str, str]:
    """Versions of the named Python packages that are importable (for the sidecar)."""
    from importlib import metadata as pkg_metadata

    import posemum_deploy

    versions = {"posemum": posemum_deploy.__version__}
    for name in names:
        try:
            versions[name] = pkg_metadata.version(name)
        except pkg_metadata.PackageNotFoundError:
            continue
    return versions
