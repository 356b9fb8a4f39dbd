"""TrtBackend without a GPU: a recording fake of TensorRT 11.4 and of torch's CUDA device
guard and streams. Checks the device discipline (every engine/context call under the
backend's device), the stream (its own, never the legacy default) and the output dtype
(the engine's). Real buffers: the fake engine reads the bound input by address and writes
the bound output, so a wrong binding or dtype shows up in the numbers."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fake_tensorrt import FakeTrt

from posemum_deploy.artifacts import ModelMetadata, sha256_file, sidecar_path
from posemum_deploy.errors import ArtifactError, ConfigError
from posemum_deploy.inference import trt_backend
from posemum_deploy.inference.trt_backend import TrtBackend
from posemum_deploy.inference.trt_engine import engine_key

GPU = ("NVIDIA H200", "9.0")


class FakeStream:
    """torch.cuda.Stream stand-in: a handle, and which streams it waited on."""

    count = 0

    def __init__(self, device: Any = None, handle: int | None = None) -> None:
        FakeStream.count += 1
        self.device, self.waited = device, []
        self.cuda_stream = handle if handle is not None else 0x5000 + FakeStream.count

    def wait_stream(self, other: FakeStream) -> None:
        self.waited.append(other)


@pytest.fixture()
def cuda(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeTrt, dict]:
    """Fake TensorRT (fp16 output) + torch.cuda.device/Stream/current_stream/stream."""
    trt = FakeTrt(version="11.4.0.106", out_dtype="HALF", out_khw=(17, 8, 6))
    state: dict[str, Any] = {"caller": FakeStream(handle=0), "active": [], "gpu_index": []}

    class Guard:
        def __init__(self, device: Any) -> None:
            self.device = torch.device(device)

        def __enter__(self) -> None:
            trt.device_stack.append(self.device)

        def __exit__(self, *exc: object) -> None:
            trt.device_stack.pop()

    class StreamContext:
        def __init__(self, stream: FakeStream) -> None:
            self.stream = stream

        def __enter__(self) -> None:
            state["active"].append(self.stream)

        def __exit__(self, *exc: object) -> None:
            state["active"].pop()

    def gpu(index: int = 0) -> tuple[str, str]:
        state["gpu_index"].append(index)
        return GPU

    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(trt_backend, "current_gpu", gpu)
    monkeypatch.setattr(torch.cuda, "device", Guard)
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: state["caller"])
    monkeypatch.setattr(torch.cuda, "stream", StreamContext)
    return trt, state


def _engine(tmp_path: Path, trt_version: str = "11.4.0.106") -> Path:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"serialized plan")
    key = engine_key("ab" * 32, "cd" * 32, "fp16", (1, 4, 8), trt_version, *GPU)
    ModelMetadata(format="tensorrt", precision="fp16", input_hw=(32, 24), heatmap_hw=(8, 6),
                  artifact_sha256=sha256_file(engine),
                  extra={"engine_key": dataclasses.asdict(key)}).save(sidecar_path(engine))
    return engine


def test_engine_and_context_are_made_under_the_requested_device(cuda, tmp_path: Path) -> None:
    trt, state = cuda
    backend = TrtBackend(_engine(tmp_path), device="cuda:1")
    assert state["gpu_index"] == [1]  # the key is checked against GPU 1, not GPU 0
    assert trt.on_device == [("deserialize_cuda_engine", torch.device("cuda", 1)),
                             ("create_execution_context", torch.device("cuda", 1))]
    assert backend.stream.device == torch.device("cuda", 1) and backend.stream.cuda_stream != 0
    assert (backend.input_dtype, backend.output_dtype) == (torch.float32, torch.float16)
    assert not trt.device_stack  # the guard was left


def test_predict_runs_on_its_own_stream_into_a_buffer_of_the_engines_dtype(
        cuda, tmp_path: Path) -> None:
    trt, state = cuda
    backend = TrtBackend(_engine(tmp_path), device="cuda:1")
    backend.device = torch.device("cpu")  # no GPU here: buffers live in host memory
    x = np.random.default_rng(0).normal(size=(3, 3, 32, 24)).astype(np.float32)
    out_t = backend.predict_tensor(torch.from_numpy(x))
    assert out_t.dtype == torch.float16 and tuple(out_t.shape) == (3, 17, 8, 6)
    handles = [args[0] for _, name, args in trt.calls if name == "execute_async_v3"]
    assert handles == [backend.stream.cuda_stream] and handles[0] != 0  # not the legacy stream
    assert trt.on_device[-1] == ("execute_async_v3", torch.device("cpu"))  # under the guard
    # Ordered both ways with the caller's stream: input ready before, output after.
    assert backend.stream.waited == [state["caller"]] and state["caller"].waited == [backend.stream]
    out = backend.predict(x)
    assert out.dtype == np.float32 and out.shape == (3, 17, 8, 6)
    expected = x.reshape(3, -1).sum(1).astype(np.float16).astype(np.float32)
    assert np.array_equal(out[:, 0, 0, 0], expected) and np.all(out == out[:, :1, :1, :1])
    with pytest.raises(ConfigError, match=r"batch 9 outside the engine's profile 1..8"):
        backend.predict(np.zeros((9, 3, 32, 24), np.float32))


def test_an_engine_from_another_tensorrt_is_refused_before_deserializing(cuda,
                                                                         tmp_path: Path) -> None:
    trt, _ = cuda
    with pytest.raises(ArtifactError, match=r"trt_version 10.16.1 ≠ 11.4.0.106 here"):
        TrtBackend(_engine(tmp_path, trt_version="10.16.1"), device="cuda:0")
    assert not trt.on_device
    with pytest.raises(ConfigError, match="TensorRT runs on CUDA only"):
        TrtBackend(_engine(tmp_path), device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the GPU tests run")
@pytest.mark.parametrize("version", ["10.16.1.11", "11.4.0.106"])
def test_gpu_tests_skip_with_their_reason_on_both_tensorrt_majors(version: str) -> None:
    """With TensorRT importable (either major) but no GPU, the GPU test module is
    collected and skips with the reason, instead of erroring on a missing name."""
    import subprocess
    import sys

    tests = Path(__file__).resolve().parents[1]
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from fake_tensorrt import FakeTrt; "
            "sys.modules['tensorrt'] = FakeTrt(sys.argv[2]); import pytest; "
            "sys.exit(pytest.main(['-q', '-rs', '-p', 'no:cacheprovider', sys.argv[3]]))")
    proc = subprocess.run([sys.executable, "-c", code, str(tests), version,
                           str(tests / "inference" / "test_trt_backend.py")],
                          capture_output=True, text=True, timeout=300, check=False,
                          cwd=tests.parent)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "2 skipped" in proc.stdout and "error" not in proc.stdout.lower()
    assert "TensorRT/GPU unavailable: TensorRT needs a CUDA GPU" in proc.stdout
