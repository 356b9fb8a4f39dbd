"""Strong augmentations: Joint Cutout near teacher joints, photometric RandAugment."""
from __future__ import annotations

import pytest
import torch

from posemum_deploy.data.strong import (
    RAND_AUGMENT_OPS,
    heatmap_argmax,
    joint_cutout,
    rand_augment,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _heatmaps_with_peaks(peaks_xy: list[tuple[int, int]], hw=(64, 48)) -> torch.Tensor:
    hm = torch.zeros(1, len(peaks_xy), *hw)
    for k, (x, y) in enumerate(peaks_xy):
        hm[0, k, y, x] = 1.0
    return hm


def test_heatmap_argmax_uses_codec_convention_and_x_along_width():
    hm = _heatmaps_with_peaks([(10, 50)])  # x=10 on the 48-wide axis, y=50 on the 64 axis
    xy = heatmap_argmax(hm, (256, 192))
    assert torch.allclose(xy, torch.tensor([[[10 * 4 + 1.5, 50 * 4 + 1.5]]]))


def test_joint_cutout_zeros_squares_near_teacher_joints():
    images = torch.ones(1, 3, 256, 192)
    hm = _heatmaps_with_peaks([(10, 50)])  # one joint → all 5 cutouts near (41.5, 201.5)
    out = joint_cutout(images, hm, _gen(1), jitter_std=0.0)
    holes = (out == 0).all(dim=1)[0]
    ys, xs = holes.nonzero(as_tuple=True)
    assert holes.any()
    assert (xs.float() - 41.5).abs().max() <= 19 and (ys.float() - 201.5).abs().max() <= 19
    assert (xs.float() - 41.5).abs().max() >= 9.5  # at least the minimum half-size
    assert torch.equal(out[:, :, ~holes], images[:, :, ~holes])  # nothing else touched


def test_joint_cutout_jitter_keeps_holes_near_and_clamps_to_image():
    images = torch.ones(16, 3, 256, 192)
    hm = _heatmaps_with_peaks([(0, 0), (47, 63)]).expand(16, -1, -1, -1)
    out = joint_cutout(images, hm, _gen(2), jitter_std=10.0)
    holes = (out == 0).all(dim=1)
    assert holes.flatten(1).any(1).all()  # centres clamped into the image: every image cut
    ys, xs = holes.nonzero(as_tuple=True)[1:]
    near_a = (xs <= 19 + 50) & (ys <= 19 + 50)
    near_b = (xs >= 190 - 19 - 50) & (ys >= 254 - 19 - 50)
    assert (near_a | near_b).all()


def test_joint_cutout_is_deterministic_per_generator():
    images = torch.randn(4, 3, 64, 48)
    hm = torch.rand(4, 17, 16, 12)
    assert torch.equal(joint_cutout(images, hm, _gen(3)), joint_cutout(images, hm, _gen(3)))


def test_rand_augment_keeps_shape_and_changes_pixels():
    images = torch.randn(8, 3, 64, 48, generator=_gen(4))
    out = rand_augment(images, _gen(5), n=2, magnitude=9)
    assert out.shape == images.shape and out.dtype == images.dtype
    changed = (out - images).abs().flatten(1).amax(1) > 1e-3
    assert changed.sum() >= 6
    assert torch.equal(out, rand_augment(images, _gen(5), n=2, magnitude=9))


@pytest.mark.parametrize("op", RAND_AUGMENT_OPS)
def test_each_rand_augment_op_keeps_range_and_pixel_positions(op):
    """Photometric only: a constant image region stays constant (no pixel moves)."""
    from posemum_deploy.data import strong
    x = torch.rand(2, 3, 16, 12, generator=_gen(6))
    x[:, :, :8] = 0.5
    out = strong._OPS[op](x, torch.full((2, 1, 1, 1), 0.6), torch.ones(2, 1, 1, 1))
    assert out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1
    top = out[:, :, :8]
    assert torch.allclose(top, top[:, :, :1, :1].expand_as(top), atol=1e-6) or op == "sharpness"
