import numpy as np
import pytest

from posemum_deploy.data.coco import flip_permutation
from posemum_deploy.data.codec import HeatmapCodec, flip_back
from posemum_deploy.data.transforms import affine_matrices, box_to_center_scale, transform_points

CODEC = HeatmapCodec((256, 192), (64, 48), 2.0)


def _random_joints(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform([0, 0], [191, 255], size=(n, 17, 2))


def test_encode_decode_within_quarter_heatmap_pixel():
    kp = _random_joints(100)
    hm, w = CODEC.encode(kp, np.full((100, 17), 2))
    xy, scores = CODEC.decode(hm)
    err_hm = np.abs(CODEC.to_heatmap(xy) - CODEC.to_heatmap(kp))[w > 0]
    assert w.sum() > 0.9 * w.size
    assert err_hm.max() <= 0.25 + 1e-9
    assert np.abs(xy - kp)[w > 0].max() <= 1.0 + 1e-9
    assert np.all(scores[w > 0] > 0.9)


def test_dark_refinement_is_nearly_exact_inside_the_map():
    rng = np.random.default_rng(1)
    kp = rng.uniform([40, 40], [150, 215], size=(30, 17, 2))
    hm, w = CODEC.encode(kp, np.ones((30, 17)))
    xy, _ = CODEC.decode(hm, dark=True)
    assert np.abs(CODEC.to_heatmap(xy) - CODEC.to_heatmap(kp)).max() < 0.05


def test_invisible_and_outside_joints_get_zero_weight_and_empty_maps():
    kp = np.array([[[50.0, 60.0], [500.0, 60.0], [50.0, 60.0]]])
    hm, w = CODEC.encode(kp, np.array([[2, 2, 0]]))
    assert w.tolist() == [[1.0, 0.0, 0.0]]
    assert hm[0, 1].max() == 0 and hm[0, 2].max() == 0 and hm[0, 0].max() == pytest.approx(1, abs=0.1)


def test_roundtrip_through_inverse_affine_within_one_input_pixel():
    rng = np.random.default_rng(2)
    boxes = np.array([[30.0, 40.0, 120.0, 260.0], [300.0, 10.0, 60.0, 90.0]])
    center, scale = box_to_center_scale(boxes, 192 / 256)
    fwd = affine_matrices(center, scale, np.array([25.0, -40.0]), (256, 192))
    inv = affine_matrices(center, scale, np.array([25.0, -40.0]), (256, 192), inverse=True)
    img_pts = np.stack([rng.uniform(b[:2] + 10, b[:2] + b[2:] - 10, size=(17, 2)) for b in boxes])
    crop_pts = transform_points(img_pts, fwd)
    hm, w = CODEC.encode(crop_pts, np.ones((2, 17)))
    xy, _ = CODEC.decode(hm)
    back = transform_points(xy, inv)
    px_per_input = scale[:, 0] * 200 / 192  # image pixels per crop pixel
    err = np.linalg.norm(back - img_pts, axis=-1) / px_per_input[:, None]
    assert err[w > 0].max() <= np.sqrt(2) + 1e-9  # ≤ 1 input pixel per axis
    assert np.abs(transform_points(crop_pts, inv) - img_pts).max() < 1e-9


def test_flip_back_of_symmetric_input_is_symmetric():
    perm = flip_permutation()
    kp = _random_joints(4, seed=5)
    mirrored = kp.copy()
    mirrored[..., 0] = 191 - kp[..., 0]
    hm, _ = CODEC.encode(kp, np.ones((4, 17)))
    hm_of_flipped, _ = CODEC.encode(mirrored[:, perm], np.ones((4, 17)))
    np.testing.assert_allclose(flip_back(hm_of_flipped, perm), hm, atol=1e-6)


def test_flip_back_torch_matches_numpy():
    torch = pytest.importorskip("torch")
    hm = np.random.default_rng(0).random((2, 17, 8, 6)).astype(np.float32)
    perm = flip_permutation()
    np.testing.assert_allclose(flip_back(torch.from_numpy(hm), perm).numpy(), flip_back(hm, perm))


def test_numpy_and_torch_decodes_agree_on_the_same_heatmaps():
    """The decode's two implementations (NumPy on the host, torch on the device) on one
    set of heatmaps with every awkward case: argmax, the quarter step, the input-pixel
    conversion and Joint Cutout's argmax must agree."""
    import torch

    from posemum_deploy.data.codec import argmax_numpy, argmax_torch, decode_quarter_torch, to_input_torch
    from posemum_deploy.data.strong import heatmap_argmax

    rng = np.random.default_rng(0)
    hm = rng.random((7, 17, 16, 12)).astype(np.float32)
    hm[0, 0] = 0.0                      # no peak: coords stay at the argmax, no shift
    hm[1, 1, 0, 0] = 5.0                # peak in a corner: out-of-map neighbours count 0
    hm[2, 2, 15, 11] = 5.0
    hm[3, 3] = -hm[3, 3]                # negative map: score ≤ 0, no shift
    hm[4, 4, 3, 7] = hm[4, 4, 9, 2] = 5.0  # a tie: the first in row-major order wins
    hm[5, 5, 8, 6], hm[5, 5, 8, 7] = 5.0, 4.0  # neighbours decide the step's sign
    hm[5, 5, 8, 5], hm[5, 5, 7, 6], hm[5, 5, 9, 6] = 1.0, 3.0, 2.0
    codec = HeatmapCodec((64, 48), (16, 12))
    t = torch.from_numpy(hm)

    x, y, s = argmax_numpy(hm)
    tx, ty, ts = argmax_torch(t)
    np.testing.assert_array_equal(tx.numpy(), x)
    np.testing.assert_array_equal(ty.numpy(), y)
    np.testing.assert_array_equal(ts.numpy(), s)
    assert (x[4, 4], y[4, 4]) == (7, 3) and (x[1, 1], y[1, 1]) == (0, 0)

    ref_xy, ref_s = codec.decode_heatmap_coords(hm)
    xy, scores = decode_quarter_torch(t)
    np.testing.assert_allclose(xy.numpy(), ref_xy, atol=1e-6)
    np.testing.assert_array_equal(scores.numpy(), ref_s)
    np.testing.assert_array_equal(ref_xy[5, 5], [6.25, 7.75])  # toward (7, 8) and (6, 7)
    np.testing.assert_array_equal(ref_xy[0, 0], [x[0, 0], y[0, 0]])
    np.testing.assert_array_equal(ref_xy[3, 3], [x[3, 3], y[3, 3]])

    image_xy = to_input_torch(xy, codec.input_hw, codec.heatmap_hw)
    np.testing.assert_allclose(image_xy.numpy(), codec.to_input(ref_xy), atol=1e-5)
    np.testing.assert_allclose(codec.decode(hm)[0], codec.to_input(ref_xy))
    cutout_xy = heatmap_argmax(t, codec.input_hw)
    np.testing.assert_allclose(cutout_xy.numpy(), codec.to_input(np.stack([x, y], -1)),
                               atol=1e-5)
