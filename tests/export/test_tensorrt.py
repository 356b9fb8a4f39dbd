"""TensorRT export logic that runs without TensorRT: cache key, profile, engine refusal."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from posemum_deploy.artifacts import ModelMetadata, sha256_file, sidecar_path
from posemum_deploy.errors import ArtifactError, BackendUnavailableError, ConfigError
from posemum_deploy.export.formats import ExportOptions, export_model, parse_profile
from posemum_deploy.export.tensorrt import cache_dir, precision_of
from posemum_deploy.inference.trt_backend import TrtBackend, verify_engine
from posemum_deploy.inference.trt_engine import EngineKey, check_engine, engine_key

KEY = dict(onnx_sha256="ab" * 32, trt_version="10.3.0", compute_capability=(8, 9),
           precision="fp16", profile=(1, 32, 64))


def test_engine_key_is_a_pure_function_of_its_parts() -> None:
    key = engine_key(**KEY)
    assert key.compute_capability == "8.9"
    assert key == engine_key(**KEY) and key.digest() == engine_key(**KEY).digest()
    assert EngineKey.from_dict(json.loads(json.dumps(dataclasses.asdict(key)))) == key
    changed = [dict(KEY, onnx_sha256="cd" * 32), dict(KEY, trt_version="10.4.0"),
               dict(KEY, compute_capability="9.0"), dict(KEY, precision="int8"),
               dict(KEY, profile=(1, 16, 64))]
    digests = {engine_key(**kw).digest() for kw in changed} | {key.digest()}
    assert len(digests) == 6  # every part changes the cache file
    with pytest.raises(ConfigError, match="precision"):
        engine_key(**dict(KEY, precision="bf16"))


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
    assert check_engine(stored, "10.3.0", "8.9", engine) == engine_key(**KEY)
    with pytest.raises(ArtifactError, match=r"trt_version 10.3.0 ≠ 10.5.0.*rebuild.*--format tensorrt"):
        check_engine(stored, "10.5.0", "8.9", engine)
    with pytest.raises(ArtifactError, match=r"compute_capability 8.9 ≠ 9.0 here.*not portable"):
        check_engine(stored, "10.3.0", "9.0", engine)
    with pytest.raises(ArtifactError, match="no engine key.*rebuild"):
        check_engine(None, "10.3.0", "8.9", engine)


def test_stale_engine_whose_onnx_changed_is_refused(tmp_path: Path) -> None:
    onnx_file, engine = tmp_path / "model.fp32.onnx", tmp_path / "model.engine"
    onnx_file.write_bytes(b"onnx v1")
    engine.write_bytes(b"engine")
    key = engine_key(**dict(KEY, onnx_sha256=sha256_file(onnx_file)))
    meta = ModelMetadata(format="tensorrt", precision="fp16", artifact_sha256=sha256_file(engine),
                         extra={"engine_key": dataclasses.asdict(key), "onnx_source": onnx_file.name})
    assert verify_engine(engine, meta, "10.3.0", "8.9") == key
    onnx_file.write_bytes(b"onnx v2")
    with pytest.raises(ArtifactError, match="stale.*model.fp32.onnx changed.*rebuild"):
        verify_engine(engine, meta, "10.3.0", "8.9")


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
