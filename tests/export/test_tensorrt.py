"""TensorRT export without TensorRT: the key, the refusals, and `export_tensorrt` /
`build_engine` run against a recording fake of the 11.4 module (tests/fake_tensorrt.py)."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from fake_tensorrt import FakeTrt
from onnx import TensorProto, numpy_helper

from posemum_deploy.artifacts import ModelMetadata, sha256_file, sidecar_path
from posemum_deploy.errors import ArtifactError, BackendUnavailableError, ConfigError
from posemum_deploy.export import tensorrt as trt_export
from posemum_deploy.export.formats import ExportOptions, export_model, parse_profile
from posemum_deploy.export.tensorrt import cache_dir, precision_of
from posemum_deploy.export.trt_cache import entry_sidecar
from posemum_deploy.inference.trt_backend import TrtBackend, verify_engine
from posemum_deploy.inference.trt_engine import EngineKey, check_engine, engine_key

KEY = {"onnx_sha256": "ab" * 32, "network_sha256": "ef" * 32, "precision": "fp16",
       "profile": (1, 32, 64), "trt_version": "10.16.1", "gpu_name": "NVIDIA L4",
       "compute_capability": (8, 9), "hardware_compatibility": "none"}
GPU = ("NVIDIA H200", "9.0")


def test_engine_key_is_a_pure_function_of_each_of_its_parts() -> None:
    key = engine_key(**KEY)
    assert key.compute_capability == "8.9"
    assert key == engine_key(**KEY) and key.digest() == engine_key(**KEY).digest()
    assert EngineKey.from_dict(json.loads(json.dumps(dataclasses.asdict(key)))) == key
    changed = [dict(KEY, onnx_sha256="cd" * 32), dict(KEY, network_sha256="01" * 32),
               dict(KEY, precision="int8"), dict(KEY, profile=(1, 16, 64)),
               dict(KEY, trt_version="11.4.0"), dict(KEY, gpu_name="NVIDIA L40S"),
               dict(KEY, compute_capability="9.0"), dict(KEY, hardware_compatibility="ampere_plus")]
    assert {f.name for f in dataclasses.fields(EngineKey)} == set(KEY)  # every part is varied
    digests = {engine_key(**kw).digest() for kw in changed} | {key.digest()}
    assert len(digests) == len(changed) + 1  # every part changes the cache file
    with pytest.raises(ConfigError, match="precision"):
        engine_key(**dict(KEY, precision="bf16"))
    with pytest.raises(ConfigError, match="hardware compatibility 'turing'"):
        engine_key(**dict(KEY, hardware_compatibility="turing"))


@pytest.mark.parametrize("text, expected", [("1,32,64", (1, 32, 64)), ("8", (8, 8, 8)),
                                            (" 1, 1, 4 ", (1, 1, 4))])
def test_parse_profile(text: str, expected: tuple[int, int, int]) -> None:
    assert parse_profile(text) == expected


@pytest.mark.parametrize("text", ["0,1,2", "4,2,8", "1,2", "a,b,c", "1,2,3,4"])
def test_parse_profile_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="MIN,OPT,MAX"):
        parse_profile(text)


def test_precision_and_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert precision_of(ExportOptions()) == "fp32"
    assert precision_of(ExportOptions(fp16=True)) == "fp16"
    assert precision_of(ExportOptions(int8=True)) == "int8"
    with pytest.raises(ConfigError, match="one of --fp16 and --int8"):
        precision_of(ExportOptions(fp16=True, int8=True))
    assert cache_dir(ExportOptions(cache_dir=tmp_path)) == tmp_path
    monkeypatch.setenv("POSEMUM_CACHE", str(tmp_path))
    assert cache_dir(ExportOptions()) == tmp_path / "tensorrt"


def test_foreign_or_keyless_engines_are_refused(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    stored = dataclasses.asdict(engine_key(**KEY))
    assert check_engine(stored, "10.16.1", "NVIDIA L4", "8.9", engine) == engine_key(**KEY)
    with pytest.raises(ArtifactError, match=r"trt_version 10.16.1 ≠ 11.4.0.*rebuild.*tensorrt"):
        check_engine(stored, "11.4.0", "NVIDIA L4", "8.9", engine)
    with pytest.raises(ArtifactError, match=r"compute_capability 8.9 ≠ 9.0 here.*not portable"):
        check_engine(stored, "10.16.1", "NVIDIA L4", "9.0", engine)
    # Same architecture, another GPU model: TensorRT plans are tied to the model.
    with pytest.raises(ArtifactError, match=r"gpu_name NVIDIA L4 ≠ NVIDIA L40S here"):
        check_engine(stored, "10.16.1", "NVIDIA L40S", "8.9", engine)
    same_cc = dataclasses.asdict(engine_key(**dict(KEY, hardware_compatibility=
                                                    "same_compute_capability")))
    check_engine(same_cc, "10.16.1", "NVIDIA L40S", "8.9", engine)
    with pytest.raises(ArtifactError, match="compute_capability"):
        check_engine(same_cc, "10.16.1", "NVIDIA H100", "9.0", engine)
    ampere = dataclasses.asdict(engine_key(**dict(KEY, hardware_compatibility="ampere_plus")))
    check_engine(ampere, "10.16.1", "NVIDIA H100", "9.0", engine)
    with pytest.raises(ArtifactError, match="ampere_plus needs compute capability ≥ 8.0, 7.5"):
        check_engine(ampere, "10.16.1", "Tesla T4", "7.5", engine)
    with pytest.raises(ArtifactError, match="no engine key.*rebuild"):
        check_engine(None, "10.16.1", "NVIDIA L4", "8.9", engine)
    old = {k: v for k, v in stored.items() if k not in ("gpu_name", "network_sha256")}
    with pytest.raises(ArtifactError, match="incomplete.*older posemum.*rebuild"):
        check_engine(old, "10.16.1", "NVIDIA L4", "8.9", engine)


def test_stale_engine_whose_onnx_changed_is_refused(tmp_path: Path) -> None:
    onnx_file, engine = tmp_path / "model.fp32.onnx", tmp_path / "model.engine"
    onnx_file.write_bytes(b"onnx v1")
    engine.write_bytes(b"engine")
    key = engine_key(**dict(KEY, onnx_sha256=sha256_file(onnx_file)))
    meta = ModelMetadata(format="tensorrt", precision="fp16", artifact_sha256=sha256_file(engine),
                         extra={"engine_key": dataclasses.asdict(key), "onnx_source": onnx_file.name})
    assert verify_engine(engine, meta, "10.16.1", "NVIDIA L4", "8.9") == key
    onnx_file.write_bytes(b"onnx v2")
    with pytest.raises(ArtifactError, match="stale.*model.fp32.onnx changed.*rebuild"):
        verify_engine(engine, meta, "10.16.1", "NVIDIA L4", "8.9")


def test_export_and_backend_say_why_tensorrt_is_unavailable(tiny_onnx, tmp_path: Path) -> None:
    try:
        import tensorrt  # noqa: F401
        import torch
        if torch.cuda.is_available():
            pytest.skip("TensorRT and a GPU are present: covered by the GPU tests")
    except ImportError:
        pass
    with pytest.raises(BackendUnavailableError, match="TensorRT|CUDA"):
        export_model(tiny_onnx.artifact, "tensorrt", tmp_path / "m.engine",
                     ExportOptions(fp16=True, cache_dir=tmp_path))
    ok, why = TrtBackend.is_available(tmp_path / "m.engine")
    assert not ok and ("TensorRT" in why or "CUDA" in why) and "posemum doctor" in why
    assert not (tmp_path / "m.engine").exists() and not sidecar_path(tmp_path / "m.engine").exists()


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTrt:
    """The fake 11.4 module and a named GPU, where export_tensorrt looks them up."""
    trt = FakeTrt()
    monkeypatch.setattr(trt_export, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(trt_export, "current_gpu", lambda index=0: GPU)
    return trt


def _calls(trt: FakeTrt, name: str) -> list[tuple]:
    return [args for _, n, args in trt.calls if n == name]


def test_fp16_build_is_strongly_typed_with_no_precision_flags(
        fake: FakeTrt, tiny_onnx, coco_mini_dir: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    opts = ExportOptions(fp16=True, batch=(1, 8, 16), cache_dir=tmp_path / "cache",
                         check=coco_mini_dir / "test_coco.json")
    result = export_model(tiny_onnx.artifact, "tensorrt", tmp_path / "a.engine", opts)
    assert _calls(fake, "create_network") == [(1 << 0,)]  # 1 << STRONGLY_TYPED
    assert not _calls(fake, "set_flag") and not [c for c in fake.calls if "int8" in c[1]]
    assert _calls(fake, "set_shape") == [("input", (1, 3, 128, 96), (8, 3, 128, 96),
                                          (16, 3, 128, 96))]
    # TensorRT parsed the FP16 graph: fp32 interface, fp16 weights.
    parsed = onnx.load(str(fake.parsed[-1]))
    assert parsed.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert parsed.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert {t.data_type for t in parsed.graph.initializer if t.dims} >= {TensorProto.FLOAT16}
    key = result.metadata.extra["engine_key"]
    assert key["network_sha256"] == sha256_file(fake.parsed[-1]) != key["onnx_sha256"]
    assert key["gpu_name"] == GPU[0] and key["trt_version"] == "11.4.0.106"
    assert result.artifact.read_bytes() == f"engine of {key['network_sha256']}".encode()
    parity = result.metadata.extra["network_parity"]
    assert parity["num_crops"] > 0 and parity["crops"].endswith("test_coco.json")
    assert parity["max_keypoint_px"] <= 1.0 and parity["max_rel_heatmap_diff"] < 2e-2
    # Timing cache: started empty, saved after the build as a verified entry.
    assert _calls(fake, "set_timing_cache") == [(b"", False)]
    timing = Path(result.report["cached"]).parents[1] / "timing-11.4.0.106-nvidia-h200-sm9.0.cache"
    assert timing.read_bytes() == b"+timings" and entry_sidecar(timing).is_file()

    # Same inputs: the cached engine is reused, nothing is built.
    again = export_model(tiny_onnx.artifact, "tensorrt", tmp_path / "b.engine", opts)
    assert fake.builds == 1 and again.report["cached"] == result.report["cached"]
    assert again.artifact.read_bytes() == result.artifact.read_bytes()
    # A damaged cache entry is not reused: rebuilt (with the saved timings) and replaced.
    cached = Path(result.report["cached"])
    cached.write_bytes(cached.read_bytes()[:5])
    with caplog.at_level(logging.WARNING, logger="posemum_deploy.export.tensorrt"):
        third = export_model(tiny_onnx.artifact, "tensorrt", tmp_path / "c.engine", opts)
    assert fake.builds == 2 and "size/sha256 differ" in caplog.text
    assert third.artifact.read_bytes() == result.artifact.read_bytes() == cached.read_bytes()
    assert _calls(fake, "set_timing_cache")[-1] == (b"+timings", False)


def test_timing_cache_mismatch_or_garbage_falls_back_to_a_fresh_cache(
        tiny_onnx, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from posemum_deploy.export.trt_cache import store_entry

    key = engine_key(**dict(KEY, trt_version="11.4.0.106"))
    timing = trt_export.timing_cache_file(tmp_path, key)
    store_entry(timing, b"from another GPU")
    trt = FakeTrt(timing_mismatch=True)
    with caplog.at_level(logging.WARNING, logger="posemum_deploy.export.tensorrt"):
        engine = trt_export.build_engine(trt, tiny_onnx.artifact, key, (128, 96), tmp_path)
    assert engine.startswith(b"engine of ")
    assert _calls(trt, "set_timing_cache") == [(b"from another GPU", False), (b"", False)]
    assert "does not match this GPU/TensorRT; starting a fresh one" in caplog.text
    assert timing.read_bytes() == b"+timings"  # the fresh cache replaced the foreign one
    store_entry(timing, b"garbage")
    trt = FakeTrt()
    caplog.clear()
    # at_level: another test may have raised the logger's level
    with caplog.at_level(logging.WARNING, logger="posemum_deploy.export.tensorrt"):
        trt_export.build_engine(trt, tiny_onnx.artifact, key, (128, 96), tmp_path)
    assert "cannot read this timing cache" in caplog.text
    assert _calls(trt, "set_timing_cache") == [(b"", False)]


def test_hardware_compat_level_is_set_on_the_config(tiny_onnx, tmp_path: Path) -> None:
    trt = FakeTrt()
    key = engine_key(**dict(KEY, hardware_compatibility="ampere_plus"))
    trt_export.build_engine(trt, tiny_onnx.artifact, key, (128, 96), tmp_path)
    assert _calls(trt, "set hardware_compatibility_level") == [("AMPERE_PLUS",)]
    trt = FakeTrt()
    trt_export.build_engine(trt, tiny_onnx.artifact, engine_key(**KEY), (128, 96), tmp_path)
    assert not _calls(trt, "set hardware_compatibility_level")


@pytest.mark.slow
def test_int8_build_parses_a_symmetric_qdq_graph_keyed_by_its_calibration(
        fake: FakeTrt, tiny_onnx, tiny_int8, coco_mini_dir: Path, tmp_path: Path) -> None:
    calib = coco_mini_dir / "test_coco.json"
    opts = ExportOptions(int8=True, calib=calib, calib_count=12, cache_dir=tmp_path / "cache")
    result = export_model(tiny_onnx.artifact, "tensorrt", tmp_path / "i.engine", opts)
    assert _calls(fake, "create_network") == [(1,)] and not _calls(fake, "set_flag")
    qdq = onnx.load(str(fake.parsed[-1]))
    zero_points = [numpy_helper.to_array(t) for t in qdq.graph.initializer
                   if t.name.endswith("zero_point")]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    key = result.metadata.extra["engine_key"]
    assert key["network_sha256"] == sha256_file(fake.parsed[-1])
    info = result.report["network_info"]
    assert info["calibration_crops"] == 12 and info["source_sha256"] == key["onnx_sha256"]
    # INT8 vs fp32 on real crops (both on ORT CPU), as close as the onnx-int8 model is
    # (random weights: flat heatmaps, so argmaxes of both INT8 models move alike).
    assert result.report["max_abs_heatmap_diff"] <= 1.5 * tiny_int8.report["max_abs_heatmap_diff"]
    assert result.report["mean_keypoint_px"] <= 2.0 * tiny_int8.report["mean_px"]
    # Other calibration crops → another QDQ model → another engine key.
    other = export_model(tiny_onnx.artifact, "tensorrt", tmp_path / "j.engine",
                         dataclasses.replace(opts, calib_count=8))
    assert other.metadata.extra["engine_key"]["network_sha256"] != key["network_sha256"]
    assert other.report["cached"] != result.report["cached"] and fake.builds == 2
    # The onnx-int8 export (uint8, asymmetric: ORT CPU) is refused with what to do.
    with pytest.raises(ArtifactError, match=r"zero point.*TensorRT rejects.*--int8 --calib"):
        export_model(tiny_int8.artifact, "tensorrt", tmp_path / "k.engine", opts)
    with pytest.raises(ConfigError, match="--int8 needs --calib"):
        export_model(tiny_onnx.artifact, "tensorrt", tmp_path / "l.engine",
                     ExportOptions(int8=True, cache_dir=tmp_path / "cache"))
