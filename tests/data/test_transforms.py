import numpy as np

from posemum_deploy.data.transforms import (
    AffineAugment,
    affine_matrices,
    box_to_center_scale,
    flip_matrices,
    normalize_numpy,
    transform_points,
    warp_crops,
)


def test_box_to_center_scale_fixes_aspect_and_pads():
    c, s = box_to_center_scale(np.array([[10, 20, 30, 200], [0, 0, 300, 100]]), 0.75)
    np.testing.assert_allclose(c, [[25, 120], [150, 50]])
    np.testing.assert_allclose(s[0], [150 / 200 * 1.25, 200 / 200 * 1.25])
    np.testing.assert_allclose(s[1], [300 / 200 * 1.25, 400 / 200 * 1.25])


def test_affine_maps_box_center_to_crop_center_and_inverts():
    c, s = box_to_center_scale(np.array([[50, 60, 80, 120]]), 0.75)
    m = affine_matrices(c, s, 30.0, (256, 192))
    mi = affine_matrices(c, s, 30.0, (256, 192), inverse=True)
    np.testing.assert_allclose(transform_points(c[:, None], m)[0, 0], [96, 128])
    pts = np.random.default_rng(0).uniform(0, 300, (1, 9, 2))
    np.testing.assert_allclose(transform_points(transform_points(pts, m), mi), pts, atol=1e-9)


def test_warp_crops_puts_a_bright_pixel_where_the_affine_says():
    img = np.zeros((200, 300, 3), np.uint8)
    img[100, 150] = 255
    c, s = box_to_center_scale(np.array([[100, 50, 100, 100]]), 0.75)
    m = affine_matrices(c, s, 0.0, (64, 48))
    crop = warp_crops(img, m, (64, 48))[0, ..., 0]
    y, x = np.unravel_index(crop.argmax(), crop.shape)
    ex, ey = transform_points(np.array([[[150.0, 100.0]]]), m)[0, 0]
    assert abs(x - ex) <= 1 and abs(y - ey) <= 1


def test_flip_matrices_mirror_the_crop():
    c, s = box_to_center_scale(np.array([[0, 0, 100, 100]]), 0.75)
    m = affine_matrices(c, s, 0.0, (64, 48))
    p = transform_points(np.array([[[10.0, 20.0]]]), m)
    pf = transform_points(np.array([[[10.0, 20.0]]]), flip_matrices(m, 48))
    np.testing.assert_allclose(pf[0, 0], [47 - p[0, 0, 0], p[0, 0, 1]])


def test_affine_augment_ranges():
    s, r, f = AffineAugment().sample(np.random.default_rng(0), 2000)
    assert s.min() >= 0.75 and s.max() <= 1.25
    assert np.abs(r).max() <= 60 and 0.3 < (r != 0).mean() < 0.7
    assert 0.4 < f.mean() < 0.6


def test_normalize_numpy_layout():
    x = normalize_numpy(np.full((2, 4, 3, 3), 255, np.uint8))
    assert x.shape == (2, 3, 4, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224,
                                              (1 - 0.406) / 0.225], rtol=1e-5)
