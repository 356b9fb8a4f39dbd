"""ONNX → TensorRT engine, one build path for TensorRT 10.x and 11.x (strongly typed).

TensorRT 11 removed the implicit-precision builder flags and the INT8 calibrators
(deprecated since 10.1/10.12), so every engine here is built from a strongly typed
network whose precision is in the ONNX graph (`export.trt_networks`): the fp32 export,
its FP16 conversion, or its QDQ quantisation for INT8. One optimisation profile
(min/opt/max batch), an optional hardware-compatibility level, and a timing cache per
TensorRT version and GPU model. Engine, timing cache and networks are cache entries that
are written atomically and verified before reuse (`export.trt_cache`); the engine key
(`inference.trt_engine.engine_key`) names everything an engine depends on and is written
into the sidecar. `tensorrt` and CUDA are imported only when building.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from posemum_deploy.artifacts import (
    ModelMetadata,
    read_sidecar,
    sha256_file,
    sidecar_path,
)
from posemum_deploy.errors import ArtifactError, ConfigError
from posemum_deploy.export.formats import ExportOptions, ExportResult, tool_versions
from posemum_deploy.export.trt_cache import atomic_write_bytes, load_entry, store_entry
from posemum_deploy.inference.trt_engine import (
    HARDWARE_COMPAT,
    EngineKey,
    current_gpu,
    engine_key,
    import_tensorrt,
)

log = logging.getLogger(__name__)


def precision_of(options: ExportOptions) -> str:
    if options.fp16 and options.int8:
        raise ConfigError("choose one of --fp16 and --int8 (an INT8 engine keeps fp32 where "
                          "its QDQ graph has no quantisation)")
    return "int8" if options.int8 else "fp16" if options.fp16 else "fp32"


def hardware_compat_of(options: ExportOptions) -> str:
    level = str(options.extra.get("hardware_compatibility", "none"))
    if level not in HARDWARE_COMPAT:
        raise ConfigError(f"hardware compatibility {level!r}: choose {', '.join(HARDWARE_COMPAT)}")
    return level


def cache_dir(options: ExportOptions) -> Path:
    """Engine/timing cache folder: --cache-dir, $POSEMUM_CACHE/tensorrt, ~/.cache/posemum/tensorrt."""
    if options.cache_dir is not None:
        return Path(options.cache_dir)
    root = os.environ.get("POSEMUM_CACHE") or Path.home() / ".cache" / "posemum"
    return Path(root) / "tensorrt"


def _source_network(source: Path, options: ExportOptions, out: Path, precision: str
                    ) -> tuple[Path, ModelMetadata, Path | None]:
    """(fp32 ONNX, its metadata, a QDQ ONNX given as the source itself or None)."""
    from posemum_deploy.export.onnx import load_onnx_source

    if source.suffix.lower() == ".onnx" and read_sidecar(source).precision == "int8":
        if precision != "int8":
            raise ConfigError(f"{source}: is an INT8 QDQ model; build it with --int8, or pass "
                              "the fp32 ONNX for an fp32/--fp16 engine")
        return source, read_sidecar(source), source
    if precision == "int8" and options.calib is None:
        raise ConfigError("--int8 needs --calib IMAGES (real person images or a COCO json) "
                          "to quantise the fp32 ONNX, or pass a TensorRT-ready QDQ ONNX")
    onnx_path, meta = load_onnx_source(source, options, out)
    return onnx_path, meta, None


def export_tensorrt(source: Path, out: Path, options: ExportOptions) -> ExportResult:
    """Checkpoint or posemum ONNX → engine at `out` + sidecar, reusing a cached engine."""
    from posemum_deploy.export.trt_networks import (
        fp16_network,
        int8_network,
        network_parity,
    )

    precision, level = precision_of(options), hardware_compat_of(options)
    trt = import_tensorrt()
    gpu_name, cc = current_gpu()
    onnx_path, meta, given_qdq = _source_network(source, options, out, precision)
    cache = cache_dir(options)
    onnx_sha = sha256_file(onnx_path)
    if precision == "fp16":
        graph_path = fp16_network(onnx_path, onnx_sha, cache)
    elif precision == "int8" and given_qdq is None:
        assert options.calib is not None  # _source_network refused int8 without --calib
        method = str(options.extra.get("calibrate_method", "minmax"))
        graph_path = int8_network(onnx_path, onnx_sha, meta, options.calib,
                                  options.calib_count, method, cache)
    else:
        graph_path = onnx_path
    if given_qdq is not None:
        from posemum_deploy.export.trt_networks import check_tensorrt_qdq

        check_tensorrt_qdq(given_qdq)
    report: dict[str, Any] = {}
    if graph_path != onnx_path:
        from posemum_deploy.export.onnx import check_crops

        crops, origin = check_crops(source, meta, options, limit=32)
        report = {**network_parity(onnx_path, graph_path, meta, crops), "crops": origin}
    key = engine_key(onnx_sha, sha256_file(graph_path), precision, options.batch, trt.__version__,
                     gpu_name, cc, level)
    cached = cache / "engines" / f"{key.digest()}.engine"
    data = load_entry(cached)
    if data is not None:
        log.info("reusing cached engine %s", cached)
    else:
        data = build_engine(trt, graph_path, key, meta.input_hw, cache)
        store_entry(cached, data, {"engine_key": asdict(key)})
    atomic_write_bytes(out, data)
    meta = ModelMetadata.from_dict(meta.to_dict())
    meta.format, meta.precision = "tensorrt", precision
    meta.artifact_sha256 = sha256_file(out)
    meta.extra = {"engine_key": asdict(key), "cache_key": key.digest(), "gpu": gpu_name,
                  "onnx_source": onnx_path.name, "network_parity": report}
    meta.tool_versions = {**meta.tool_versions, **tool_versions("tensorrt", "torch")}
    meta.save(sidecar_path(out))
    return ExportResult(out, meta, {"engine_key": asdict(key), "cached": str(cached), **report},
                        extra_files=[onnx_path])


def timing_cache_file(cache: Path, key: EngineKey) -> Path:
    """One timing cache per TensorRT version and GPU model (tactic timings are per GPU)."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", key.gpu_name).strip("-").lower() or "gpu"
    return cache / f"timing-{key.trt_version}-{gpu}-sm{key.compute_capability}.cache"


def _attach_timing_cache(config: Any, timing_file: Path) -> Any:
    """The cached timings, or a fresh cache (with a warning) when TensorRT refuses them."""
    data = load_entry(timing_file) or b""
    try:
        timing = config.create_timing_cache(data)
    except Exception as e:  # a cache from another TensorRT build TensorRT cannot read
        log.warning("%s: TensorRT cannot read this timing cache (%s); starting a fresh one",
                    timing_file, str(e).splitlines()[0][:120] if str(e) else type(e).__name__)
        data, timing = b"", config.create_timing_cache(b"")
    if timing is not None and config.set_timing_cache(timing, ignore_mismatch=False):
        return timing
    log.warning("%s: the timing cache does not match this GPU/TensorRT; starting a fresh one",
                timing_file)
    timing = config.create_timing_cache(b"")
    if not config.set_timing_cache(timing, ignore_mismatch=False):
        raise ArtifactError(f"TensorRT refused even an empty timing cache; delete {timing_file} "
                            "and report this with `posemum doctor`")
    return timing


def _parse(trt: Any, logger: Any, onnx_path: Path) -> tuple[Any, Any, Any]:
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ArtifactError(f"{onnx_path}: TensorRT cannot parse it ({errors[:300]}); "
                            "re-export the ONNX with `posemum export CKPT --format onnx`")
    return builder, network, parser


def _hardware_level(trt: Any, level: str) -> Any:
    levels = {"same_compute_capability": trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY,
              "ampere_plus": trt.HardwareCompatibilityLevel.AMPERE_PLUS}
    return levels[level]


def build_engine(trt: Any, network_path: Path, key: EngineKey, input_hw: tuple[int, int],
                 cache: Path) -> bytes:
    """A serialized strongly typed engine with one batch profile, reusing the timing cache.

    No precision flags: the types of `network_path` (fp32, FP16, or QDQ INT8) decide."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder, network, _parser = _parse(trt, logger, network_path)
    config = builder.create_builder_config()
    h, w = input_hw
    lo, opt, hi = key.profile
    profile = builder.create_optimization_profile()
    profile.set_shape(network.get_input(0).name, (lo, 3, h, w), (opt, 3, h, w), (hi, 3, h, w))
    config.add_optimization_profile(profile)
    if key.hardware_compatibility != "none":
        config.hardware_compatibility_level = _hardware_level(trt, key.hardware_compatibility)
    timing_file = timing_cache_file(cache, key)
    _attach_timing_cache(config, timing_file)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ArtifactError(f"{network_path}: TensorRT failed to build a {key.precision} engine "
                            "(see the TensorRT log above); try another precision or --batch")
    timing = config.get_timing_cache()
    if timing is not None:
        store_entry(timing_file, bytes(timing.serialize()),
                    {"trt_version": key.trt_version, "gpu_name": key.gpu_name})
    return bytes(serialized)
