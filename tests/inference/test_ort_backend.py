"""OrtBackend: explicit providers, and a GPU request never silently becomes a CPU run."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from posemum_deploy.artifacts import ModelMetadata
from posemum_deploy.errors import BackendUnavailableError, ConfigError
from posemum_deploy.export.onnx import export_network, finish_sidecar
from posemum_deploy.inference import ort_backend
from posemum_deploy.inference.backends import load_backend
from posemum_deploy.inference.ort_backend import (
    CPU,
    OrtBackend,
    check_providers,
    resolve_providers,
)
from posemum_deploy.models.simple_baseline import build_model

ort = pytest.importorskip("onnxruntime")
CUDA = "CUDAExecutionProvider"


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    meta = ModelMetadata(input_hw=(64, 32), heatmap_hw=(16, 8))
    out = tmp_path_factory.mktemp("ort") / "model.onnx"
    export_network(build_model("resnet18").eval(), meta, out, 17)
    finish_sidecar(out, meta, "onnx", "fp32", ("onnxruntime",))
    return out


def test_cpu_backend_runs_through_load_backend(onnx_file: Path) -> None:
    backend = load_backend(onnx_file, "onnxruntime", device="cpu")
    assert isinstance(backend, OrtBackend) and backend.providers == [CPU]
    assert backend.predict(np.zeros((2, 3, 64, 32), np.float32)).shape == (2, 17, 16, 8)
    assert OrtBackend.is_available(onnx_file) == (True, "")
    assert not OrtBackend.is_available(onnx_file.with_suffix(".engine"))[0]


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="this onnxruntime has CUDA")
@pytest.mark.parametrize("kwargs", [{"device": "cuda"}, {"providers": ["cuda"]},
                                    {"providers": ["TensorrtExecutionProvider", CPU]}])
def test_asking_for_a_missing_gpu_provider_is_an_error(onnx_file: Path, kwargs: dict) -> None:
    with pytest.raises(BackendUnavailableError, match="--device cpu"):
        OrtBackend(onnx_file, **kwargs)


def test_silent_fallback_after_session_creation_is_caught(onnx_file: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """ORT lists CUDA but the session comes up on the CPU only (e.g. cuDNN missing)."""
    available = [CUDA, CPU]
    monkeypatch.setattr(ort, "get_available_providers", lambda: available)

    class CpuOnlySession(ort.InferenceSession):
        def __init__(self, path, sess_options=None, providers=None):
            super().__init__(path, sess_options=sess_options, providers=[CPU])

    monkeypatch.setattr(ort, "InferenceSession", CpuOnlySession)
    with pytest.raises(BackendUnavailableError, match="could not use CUDAExecutionProvider.*silently"):
        OrtBackend(onnx_file, device="cuda")
    fallback = OrtBackend(onnx_file, device="cuda", allow_cpu_fallback=True)
    assert fallback.providers == [CPU]
    assert OrtBackend(onnx_file).providers == [CPU]  # auto: best effort is not a request


def test_provider_resolution() -> None:
    assert resolve_providers(None, "cpu", [CPU]) == [CPU]
    assert resolve_providers(None, "cuda", [CPU]) == [CUDA, CPU]
    assert resolve_providers(None, "auto", [CUDA, CPU]) == [CUDA, CPU]
    assert resolve_providers(None, "auto", [CPU]) == [CPU]
    assert resolve_providers(["tensorrt", "cuda"], "auto", [])[0] == "TensorrtExecutionProvider"
    with pytest.raises(ConfigError, match="device 'tpu'"):
        resolve_providers(None, "tpu", [CPU])
    check_providers([CUDA, CPU], [CUDA, CPU], Path("m.onnx"), False)
    with pytest.raises(BackendUnavailableError):
        check_providers([CUDA, CPU], [CPU], Path("m.onnx"), False)


def test_torch_backend_cuda_request_is_an_error_without_gpu(onnx_file: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    from posemum_deploy.system import resolve_device

    with pytest.raises(BackendUnavailableError, match="CUDA was requested"):
        resolve_device("cuda")
    assert ort_backend.INSTALL_HINT[CUDA].startswith("pip install 'posemum[gpu]'")


def test_a_labelers_core_share_reaches_the_runtime_unless_threads_are_chosen(
        onnx_file: Path) -> None:
    """load_backend(cpu_threads=N): ONNX Runtime sessions get N intra-op threads (several
    labeling processes share the cores); an explicit `threads` wins. (Backends without a
    thread count, torch, are opened with it by the multi-process labeling tests.)"""
    shared = load_backend(onnx_file, "onnxruntime", device="cpu", cpu_threads=1)
    assert shared.session.get_session_options().intra_op_num_threads == 1
    chosen = load_backend(onnx_file, "onnxruntime", device="cpu", cpu_threads=1, threads=2)
    assert chosen.session.get_session_options().intra_op_num_threads == 2
    auto = load_backend(onnx_file, "auto", cpu_threads=1)  # ONNX Runtime or OpenVINO
    threads = (auto.session.get_session_options().intra_op_num_threads
               if hasattr(auto, "session") else auto.config["INFERENCE_NUM_THREADS"])
    assert threads == 1


def test_a_labeler_sizes_torch_and_opencv_pools_to_its_share() -> None:
    import cv2

    from posemum_deploy.label.worker import use_cpu_share

    before = torch.get_num_threads(), cv2.getNumThreads()
    try:
        use_cpu_share(1)
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (1, 1)
        use_cpu_share(None)  # no share: pools stay as they are
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


def test_backend_asked_for_a_file_it_cannot_open(onnx_file: Path, tmp_path: Path) -> None:
    """onnxruntime given a checkpoint, torch given an ONNX file: refused with the export
    that helps, before any runtime loads (it once blamed a missing sidecar beside the .pt)."""
    ckpt = tmp_path / "last.pt"
    ckpt.write_bytes(b"never read")
    with pytest.raises(ConfigError, match=r"last.pt: the onnxruntime backend cannot open a "
                                          r"\.pt file .*posemum export .*--format onnx"):
        load_backend(ckpt, "onnxruntime")
    with pytest.raises(ConfigError, match=r"--format openvino"):
        load_backend(ckpt, "openvino")
    with pytest.raises(ConfigError, match=r"model.onnx: the torch-fast backend cannot open "
                                          r"a \.onnx file \(it opens \.pt, \.pth\)"):
        load_backend(onnx_file, "torch-fast")


TRT = "TensorrtExecutionProvider"


class RecordingSession:
    """InferenceSession stand-in: records providers/options and disable_fallback()."""

    made: ClassVar[list[RecordingSession]] = []
    fail_run = False

    def __init__(self, path: str, sess_options: object = None, providers: list | None = None
                 ) -> None:
        self.path, self.requested, self.fallback_disabled = path, providers, 0
        RecordingSession.made.append(self)

    def disable_fallback(self) -> None:
        self.fallback_disabled += 1

    def get_providers(self) -> list[str]:
        return [p[0] if isinstance(p, tuple) else p for p in self.requested]

    def get_inputs(self) -> list:
        from types import SimpleNamespace
        return [SimpleNamespace(name="input", shape=["batch", 3, 64, 32])]

    def get_outputs(self) -> list:
        from types import SimpleNamespace
        return [SimpleNamespace(name="heatmaps", shape=["batch", 17, 16, 8])]

    def run(self, names: list, feeds: dict) -> list:
        if RecordingSession.fail_run:
            raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : TensorRT EP execution context "
                               "enqueue failed.\nmore lines")
        return [np.zeros((len(feeds["input"]), 17, 16, 8), np.float32)]


@pytest.fixture()
def gpu_ort(monkeypatch: pytest.MonkeyPatch) -> type[RecordingSession]:
    RecordingSession.made, RecordingSession.fail_run = [], False
    monkeypatch.setattr(ort, "get_available_providers", lambda: [TRT, CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", RecordingSession)
    return RecordingSession


def test_tensorrt_ep_gets_precision_and_keyed_caches_beside_the_model(
        onnx_file: Path, gpu_ort: type[RecordingSession]) -> None:
    fp16 = OrtBackend(onnx_file, device="tensorrt:1", precision="fp16")
    (trt_name, trt_opts), (cuda_name, cuda_opts), cpu = gpu_ort.made[-1].requested
    assert (trt_name, cuda_name, cpu) == (TRT, CUDA, (CPU, {}))
    cache = fp16.trt_cache
    assert cache.parent == onnx_file.with_name("model.trt_cache") and cache.is_dir()
    assert trt_opts == {"device_id": "1", "trt_fp16_enable": "1", "trt_int8_enable": "0",
                        "trt_engine_cache_enable": "1", "trt_engine_cache_path": str(cache),
                        "trt_timing_cache_enable": "1", "trt_timing_cache_path": str(cache)}
    assert cuda_opts == {"device_id": "1", "cudnn_conv_algo_search": "EXHAUSTIVE",
                         "arena_extend_strategy": "kSameAsRequested",
                         "do_copy_in_default_stream": "1"}
    assert gpu_ort.made[-1].fallback_disabled == 1 and fp16.gpu
    fp32 = OrtBackend(onnx_file, device="tensorrt")  # the sidecar's precision: fp32
    opts = dict(gpu_ort.made[-1].requested[0][1])
    assert opts["trt_fp16_enable"] == "0" and opts["device_id"] == "0"
    assert fp32.trt_cache != cache  # another precision, another engine folder
    assert ort_backend.provider_options([TRT], 0, "int8", None) == [
        (TRT, {"device_id": "0", "trt_fp16_enable": "1", "trt_int8_enable": "1"})]
    with pytest.raises(ConfigError, match="precision int8 needs a QDQ model, this one is fp32"):
        OrtBackend(onnx_file, device="tensorrt", precision="int8")
    with pytest.raises(ConfigError, match="precision 'bf8'"):
        OrtBackend(onnx_file, device="tensorrt", precision="bf8")
    with pytest.raises(ConfigError, match="KIND:INDEX"):
        OrtBackend(onnx_file, device="cuda:x")


def test_every_gpu_session_disables_fallback_and_a_failing_run_is_one_line(
        onnx_file: Path, gpu_ort: type[RecordingSession]) -> None:
    cuda = OrtBackend(onnx_file, device="cuda")
    assert gpu_ort.made[-1].fallback_disabled == 1 and cuda.trt_cache is None
    assert [p[0] for p in gpu_ort.made[-1].requested] == [CUDA, CPU]
    OrtBackend(onnx_file, device="auto")  # auto picks CUDA here: a GPU session too
    assert gpu_ort.made[-1].fallback_disabled == 1
    OrtBackend(onnx_file, device="cpu")
    assert gpu_ort.made[-1].fallback_disabled == 0  # CPU sessions are left as they were
    gpu_ort.fail_run = True
    with pytest.raises(BackendUnavailableError,
                       match=r"model.onnx: CUDAExecutionProvider failed while running "
                             r"\(\[ONNXRuntimeError\].*enqueue failed.\); it was not retried "
                             r"on the CPU") as err:
        cuda.predict(np.zeros((2, 3, 64, 32), np.float32))
    assert "\n" not in str(err.value)


def test_real_sessions_accept_the_options_and_disable_fallback(onnx_file: Path) -> None:
    """The real onnxruntime takes the (name, options) form and has disable_fallback()."""
    session = ort.InferenceSession(str(onnx_file), providers=ort_backend.provider_options(
        [CPU], 0, "fp32", None))
    session.disable_fallback()
    assert session.get_providers() == [CPU]
