"""OrtBackend: explicit providers, and a GPU request never silently becomes a CPU run."""
from __future__ import annotations

from pathlib import Path

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
