import numpy as np
import pytest

from posemum_deploy.data.codec import HeatmapCodec, flip_back
from posemum_deploy.data.coco import flip_permutation
from posemum_deploy.data.transforms import (affine_matrices, box_to_center_scale,
                                            transform_points)

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
