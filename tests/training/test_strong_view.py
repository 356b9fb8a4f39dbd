"""The strong view's θ moves images and pseudo-label heatmaps identically."""
from __future__ import annotations

import pytest
import torch

from posemum_deploy.training.strong_view import (
    StrongAffine,
    affine_matrix,
    invert,
    map_points,
    warp,
)

INPUT_HW, HEATMAP_HW = (256, 192), (64, 48)


def _blob(xy: torch.Tensor, hw: tuple[int, int], sigma: float) -> torch.Tensor:
    """Gaussian blobs [B, 1, H, W] centred at pixel coordinates xy [B, 2]."""
    ys = torch.arange(hw[0], dtype=torch.float32).view(1, -1, 1)
    xs = torch.arange(hw[1], dtype=torch.float32).view(1, 1, -1)
    d2 = (xs - xy[:, 0].view(-1, 1, 1)) ** 2 + (ys - xy[:, 1].view(-1, 1, 1)) ** 2
    return torch.exp(-d2 / (2 * sigma ** 2)).unsqueeze(1)


def _argmax_xy(x: torch.Tensor) -> torch.Tensor:
    b, _, h, w = x.shape
    flat = x.reshape(b, h * w).argmax(1)
    return torch.stack([flat % w, flat // w], dim=1).float()


def test_identity_theta_is_identity():
    x = torch.randn(2, 3, 16, 12)
    theta = affine_matrix(torch.ones(2), torch.zeros(2), (16, 12))
    assert torch.allclose(warp(x, theta), x, atol=1e-5)


def test_invert_round_trip():
    theta = StrongAffine(rotation_prob=1.0).sample(8, INPUT_HW, torch.Generator().manual_seed(0))
    pts = torch.rand(8, 5, 2) * 100
    back = map_points(map_points(pts, theta, INPUT_HW), invert(theta), INPUT_HW)
    assert torch.allclose(back, pts, atol=1e-3)


def test_closed_form_inverse_equals_the_matrix_inverse():
    theta = torch.randn(16, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    full = torch.cat([theta, theta.new_tensor([0.0, 0.0, 1.0]).expand(16, 1, 3)], 1)
    assert torch.allclose(invert(theta), torch.linalg.inv(full)[:, :2], atol=1e-10)


def test_rotation_about_centre_preserves_pixel_distances_on_non_square_crops():
    theta = affine_matrix(torch.ones(1), torch.full((1,), 37.0), INPUT_HW)
    c = torch.tensor([[[95.5, 127.5]]])  # the crop centre is fixed
    assert torch.allclose(map_points(c, theta, INPUT_HW), c, atol=1e-4)
    p = torch.tensor([[[95.5 + 40, 127.5]]])
    q = map_points(p, theta, INPUT_HW)
    assert torch.allclose((q - c).norm(), torch.tensor(40.0), atol=1e-3)


@pytest.mark.parametrize("seed", range(4))
def test_pseudo_labels_and_strong_view_stay_aligned(seed):
    g = torch.Generator().manual_seed(seed)
    b = 8
    theta = StrongAffine(rotation_prob=1.0).sample(b, INPUT_HW, g)
    # joints in the central region of the weak view, in input pixels
    joint_in = torch.rand(b, 2, generator=g) * torch.tensor([96.0, 128.0]) + torch.tensor([48.0, 64.0])
    joint_hm = (joint_in + 0.5) / 4 - 0.5  # the codec's input → heatmap mapping
    image = warp(_blob(joint_in, INPUT_HW, sigma=8.0), theta)
    heatmap = warp(_blob(joint_hm, HEATMAP_HW, sigma=2.0), theta)
    expected_in = map_points(joint_in.unsqueeze(1), theta, INPUT_HW)[:, 0]
    expected_hm = map_points(joint_hm.unsqueeze(1), theta, HEATMAP_HW)[:, 0]
    # the same θ means the same point at both resolutions
    assert torch.allclose((expected_in + 0.5) / 4 - 0.5, expected_hm, atol=1e-3)
    assert ((_argmax_xy(image) - expected_in).abs() <= 1.0).all()
    assert ((_argmax_xy(heatmap) - expected_hm).abs() <= 1.0).all()
    # and the image's peak, brought to heatmap resolution, lands within a heatmap pixel
    from_image = (_argmax_xy(image) + 0.5) / 4 - 0.5
    assert ((from_image - _argmax_xy(heatmap)).abs() <= 1.0).all()


def test_sample_ranges_and_determinism():
    aug = StrongAffine()
    a = aug.sample(256, INPUT_HW, torch.Generator().manual_seed(3))
    b = aug.sample(256, INPUT_HW, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (256, 2, 3)
    scale = torch.linalg.det(a[:, :, :2]).sqrt()
    assert scale.min() >= 0.75 - 1e-5 and scale.max() <= 1.25 + 1e-5
    unrotated = (a[:, 0, 1].abs() < 1e-7).float().mean()
    assert 0.25 < unrotated < 0.55  # rotation with p = 0.6
