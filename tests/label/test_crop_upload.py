"""Host crops for a torch network on a GPU: uint8 upload through pinned memory,
normalised, flipped and decoded on the device, must give the host path's labels.

On this CPU machine the upload target is the CPU, which runs every step but the pinned
copy; the CUDA test (skipped without a GPU) covers that."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from posemum_deploy.data.synthetic import generate_dataset
from posemum_deploy.data.transforms import normalize_numpy
from posemum_deploy.inference.pipeline import PoseEstimator
from posemum_deploy.inference.tensor_pipeline import CropUploader, UploadingPoseEstimator
from posemum_deploy.inference.torch_backend import TorchBackend
from posemum_deploy.label.boxes import parse_box_source
from posemum_deploy.label.worker import ShardWorker, WorkerSpec, host_crops_estimator

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _crops(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 128, 96, 3), dtype=np.uint8)


def test_upload_normalises_exactly_like_the_host() -> None:
    crops = _crops(5)
    up = CropUploader(torch.device("cpu"), MEAN, STD)
    out = up(crops)
    assert out.shape == (5, 3, 128, 96) and out.dtype == torch.float32 and out.is_contiguous()
    assert np.array_equal(out.numpy(), normalize_numpy(crops, MEAN, STD))


def test_uploading_estimator_matches_the_numpy_estimator(tiny_model: Path) -> None:
    backend = TorchBackend(tiny_model, device="cpu")
    crops = _crops(11, seed=1)  # 11 = one full batch of 8 and a padded one of 3
    ref = PoseEstimator(backend, batch_size=8, flip=True)
    new = UploadingPoseEstimator(backend, batch_size=8, flip=True)
    hm_ref, hm_new = ref.heatmaps(crops), new.heatmaps(crops)
    assert isinstance(hm_new, torch.Tensor)
    np.testing.assert_allclose(hm_new.numpy(), hm_ref, rtol=0, atol=1e-6)
    inverse = np.tile(np.array([[2.0, 0, 5], [0, 2.0, 7]]), (11, 1, 1))
    assert np.array_equal(new.decode(hm_new, inverse), ref.decode(hm_ref, inverse))


def test_shard_labels_are_identical_through_the_upload_path(tiny_model: Path, tmp_path: Path) -> None:
    ann = generate_dataset(tmp_path / "set", 6, seed=4, image_size=(160, 200))
    spec = WorkerSpec(model=str(tiny_model), root=str(ann.parent / "images"),
                      boxes=parse_box_source(f"gt:{ann}"), batch_size=4, workers=2, flip=True)
    backend = TorchBackend(tiny_model, device="cpu")
    worker = ShardWorker(spec, backend)
    assert type(worker.estimator) is PoseEstimator  # a CPU network takes NumPy batches
    files = sorted(p.name for p in (ann.parent / "images").iterdir())
    host = worker.label(0, files)
    worker.estimator = UploadingPoseEstimator(backend, spec.batch_size, spec.flip, spec.dark)
    uploaded = worker.label(0, files)
    assert host.crops == uploaded.crops > 0
    assert uploaded.shard.text == host.shard.text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_upload_goes_through_pinned_memory_without_a_sync(tiny_model: Path) -> None:
    up = CropUploader(torch.device("cuda"), MEAN, STD)
    for n, seed in ((9, 0), (4, 1), (12, 2)):  # varying batch sizes
        crops = _crops(n, seed)
        torch.cuda.set_sync_debug_mode("error")  # a pageable copy would have to sync
        try:
            out = up(crops)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert out.device.type == "cuda"
        np.testing.assert_array_equal(out.cpu().numpy(), normalize_numpy(crops, MEAN, STD))
    backend = TorchBackend(tiny_model, device="cuda")
    spec = WorkerSpec(model=str(tiny_model), root=".", boxes=parse_box_source("full"))
    assert isinstance(host_crops_estimator(backend, spec), UploadingPoseEstimator)
