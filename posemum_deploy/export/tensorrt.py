"""ONNX → TensorRT engine (TRT 10 Python builder), cached by what makes engines unportable.

An engine only runs on the TensorRT version and GPU architecture it was built for, with
the precision and batch profile it was built with. So the cache key is exactly those
plus the ONNX sha256 (`engine_key`, a pure function), the key is written in the
engine's sidecar, and `check_engine` refuses an engine whose key differs from what this
machine would build. One optimisation profile (min/opt/max batch); FP16; INT8 with the
entropy calibrator over real crops (its cache is saved beside the engine); a timing
cache in the cache folder is reused by every build on this GPU. `tensorrt` and CUDA
are imported only when building.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from posemum_deploy.artifacts import ModelMetadata, sha256_file, sidecar_path
from posemum_deploy.errors import ArtifactError, ConfigError
from posemum_deploy.export.formats import ExportOptions, ExportResult, tool_versions
from posemum_deploy.inference.trt_engine import (
    EngineKey,
    current_gpu,
    engine_key,
    import_tensorrt,
)

log = logging.getLogger(__name__)


def precision_of(options: ExportOptions) -> str:
    if options.fp16 and options.int8:
        raise ConfigError("choose one of --fp16 and --int8 (INT8 engines fall back to fp16 "
                          "kernels where faster anyway)")
    return "int8" if options.int8 else "fp16" if options.fp16 else "fp32"


def cache_dir(options: ExportOptions) -> Path:
    """Engine/timing cache folder: --cache-dir, $POSEMUM_CACHE/tensorrt, ~/.cache/posemum/tensorrt."""
    if options.cache_dir is not None:
        return Path(options.cache_dir)
    root = os.environ.get("POSEMUM_CACHE") or Path.home() / ".cache" / "posemum"
    return Path(root) / "tensorrt"


def export_tensorrt(source: Path, out: Path, options: ExportOptions) -> ExportResult:
    """Checkpoint or posemum ONNX → engine at `out` + sidecar, reusing a cached engine."""
    from posemum_deploy.export.onnx import load_onnx_source

    precision = precision_of(options)
    trt = import_tensorrt()
    gpu_name, cc = current_gpu()
    if precision == "int8" and options.calib is None:
        raise ConfigError("--int8 needs --calib IMAGES (real person images or a COCO json)")
    onnx_path, meta = load_onnx_source(source, options, out)
    key = engine_key(sha256_file(onnx_path), trt.__version__, cc, precision, options.batch)
    cached = cache_dir(options) / "engines" / f"{key.digest()}.engine"
    if cached.is_file():
        log.info("reusing cached engine %s", cached)
    else:
        cached.parent.mkdir(parents=True, exist_ok=True)
        build_engine(onnx_path, cached, meta, key, options, cache_dir(options))
    if cached.resolve() != out.resolve():
        shutil.copyfile(cached, out)
    meta = ModelMetadata.from_dict(meta.to_dict())
    meta.format, meta.precision = "tensorrt", precision
    meta.artifact_sha256 = sha256_file(out)
    meta.extra = {"engine_key": asdict(key), "cache_key": key.digest(), "gpu": gpu_name,
                  "onnx_source": onnx_path.name}
    meta.tool_versions = {**meta.tool_versions, **tool_versions("tensorrt", "torch")}
    meta.save(sidecar_path(out))
    return ExportResult(out, meta, {"engine_key": asdict(key), "cached": str(cached)},
                        extra_files=[onnx_path])


def make_calibrator(trt: Any, batcher: Any, cache_file: Path) -> Any:
    """An IInt8EntropyCalibrator2 feeding CropBatcher batches through a CUDA torch tensor.

    The calibration cache is read back on the next build (same crops, same network), so
    recalibrating costs nothing until the cache file is deleted.
    """
    import torch

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.device_batch = torch.empty(batcher.shape, dtype=torch.float32, device="cuda")

        def get_batch_size(self) -> int:
            return batcher.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = batcher.next_batch()
            if batch is None:
                return None
            self.device_batch.copy_(torch.from_numpy(batch))
            torch.cuda.synchronize()
            return [int(self.device_batch.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            cache_file.write_bytes(bytes(cache))

    return EntropyCalibrator()


def _parse(trt: Any, logger: Any, onnx_path: Path) -> tuple[Any, Any, Any]:
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ArtifactError(f"{onnx_path}: TensorRT cannot parse it ({errors[:300]}); "
                            "re-export the ONNX with `posemum export CKPT --format onnx`")
    return builder, network, parser


def build_engine(onnx_path: Path, engine_path: Path, meta: ModelMetadata, key: EngineKey,
                 options: ExportOptions, cache: Path) -> Path:
    """Build and serialise an engine with one batch profile, reusing the timing cache."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder, network, _parser = _parse(trt, logger, onnx_path)
    config = builder.create_builder_config()
    h, w = meta.input_hw
    lo, opt, hi = key.profile
    profile = builder.create_optimization_profile()
    profile.set_shape(network.get_input(0).name, (lo, 3, h, w), (opt, 3, h, w), (hi, 3, h, w))
    config.add_optimization_profile(profile)
    timing_file = cache / f"timing-{key.trt_version}-sm{key.compute_capability}.cache"
    timing = config.create_timing_cache(timing_file.read_bytes() if timing_file.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    if key.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if key.precision == "int8":
        from posemum_deploy.export.calibration import CropBatcher, calibration_crops

        crops = calibration_crops(options.calib, (h, w), options.calib_count)
        batcher = CropBatcher(crops, min(opt, len(crops)), meta.mean, meta.std)
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = make_calibrator(
            trt, batcher, engine_path.with_name(f"{key.onnx_sha256[:16]}.calib.cache"))
        calib_profile = builder.create_optimization_profile()
        shape = (batcher.batch_size, 3, h, w)
        calib_profile.set_shape(network.get_input(0).name, shape, shape, shape)
        config.set_calibration_profile(calib_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ArtifactError(f"{onnx_path}: TensorRT failed to build a {key.precision} engine "
                            "(see the TensorRT log above); try another precision or --batch")
    cache.mkdir(parents=True, exist_ok=True)
    timing_file.write_bytes(bytes(config.get_timing_cache().serialize()))
    engine_path.write_bytes(bytes(serialized))
    return engine_path
