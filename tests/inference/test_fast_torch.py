import numpy as np
import pytest
import torch

from posemum_deploy.artifacts import ModelMetadata
from posemum_deploy.data.transforms import (
    affine_matrices,
    box_to_center_scale,
    warp_crops,
)
from posemum_deploy.inference.fast_torch import FastTorchBackend
from posemum_deploy.inference.gpu_crops import warp_crops_torch
from posemum_deploy.inference.torch_backend import TorchBackend
from posemum_deploy.models import build_model

META = dict(input_hw=(64, 48), heatmap_hw=(16, 12))


def test_grid_sample_crops_match_cv2_warp():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    c, s = box_to_center_scale(np.array([[20, 10, 60, 90], [100, 50, 80, 60]]), 0.75)
    rot = np.array([0.0, 20.0])
    fwd = affine_matrices(c, s, rot, (64, 48))
    inv = affine_matrices(c, s, rot, (64, 48), inverse=True)
    ref = warp_crops(image, fwd, (64, 48)).astype(np.float32)
    got = warp_crops_torch(torch.from_numpy(image).permute(2, 0, 1), inv, (64, 48))
    got = got.permute(0, 2, 3, 1).numpy()
    inside = ref.sum(-1) > 0  # the border rows can differ by the interpolation of the edge
    assert np.abs(got - ref)[inside].mean() < 1.0
    assert np.median(np.abs(got - ref)[inside]) <= 1.0


def test_fast_mode_on_cpu_runs_bf16_close_to_fp32():
    torch.manual_seed(0)
    model = build_model("resnet18").eval()
    x = np.random.default_rng(0).standard_normal((4, 3, 64, 48)).astype(np.float32)
    ref = TorchBackend(model, ModelMetadata(**META), device="cpu").predict(x)
    fast = FastTorchBackend(build_model("resnet18").eval(), ModelMetadata(**META), device="cpu",
                            precision="fp16", batch_size=4)
    fast.model.load_state_dict(model.state_dict())
    assert fast.metadata.precision == "bf16"  # fp16 is not a CPU mode
    out = fast.predict(x)
    assert out.shape == ref.shape and out.dtype == np.float32
    assert np.abs(out - ref).max() < 0.05 * max(np.abs(ref).max(), 1e-3) + 1e-3


def test_fast_mode_rejects_fp32():
    from posemum_deploy.errors import ConfigError

    with pytest.raises(ConfigError, match="fp16 or bf16"):
        FastTorchBackend(build_model("resnet18"), ModelMetadata(**META), device="cpu",
                         precision="fp32")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_fp16_matches_fp32_on_gpu():
    torch.manual_seed(0)
    model = build_model("resnet18").eval()
    x = np.random.default_rng(0).standard_normal((32, 3, 256, 192)).astype(np.float32)
    meta = ModelMetadata()
    ref = TorchBackend(model, meta, device="cuda").predict(x)
    fast = FastTorchBackend(model, ModelMetadata(), device="cuda", precision="fp16",
                            batch_size=32, cuda_graphs=True)
    assert np.abs(fast.predict(x) - ref).max() <= 1e-2


def test_batched_warp_of_mixed_sizes_equals_each_image_alone():
    """Neighbours on the shared canvas never bleed into a crop, whatever the grouping."""
    from posemum_deploy.inference.gpu_crops import warp_crops_batched

    rng = np.random.default_rng(1)
    shapes = [(120, 160), (90, 200), (120, 160), (40, 30)]
    images = [torch.from_numpy(rng.integers(0, 255, (*s, 3), dtype=np.uint8)).permute(2, 0, 1)
              for s in shapes]
    owner, inverse, alone = [], [], []
    for i, (h, w) in enumerate(shapes):
        boxes = np.array([[-20, 10, w * 0.6, h * 0.9], [w * 0.5, -10, w * 0.7, h * 1.2]])
        c, s = box_to_center_scale(boxes, 0.75)
        inv = affine_matrices(c, s, np.array([0.0, 25.0]), (64, 48), inverse=True)
        alone.append(warp_crops_torch(images[i], inv, (64, 48)))
        owner += [i, i]
        inverse.append(inv)
    ref = torch.cat(alone)
    order = np.array([5, 0, 7, 2, 1, 6, 3, 4])  # crops need not be grouped by image
    for budget in (64_000_000, 40_000, 1):
        got = warp_crops_batched(images, np.array(owner)[order],
                                 np.concatenate(inverse)[order], (64, 48), budget)
        assert (got - ref[order]).abs().max() < 0.05
        assert got.shape == (8, 3, 64, 48)
