"""TTA core: spec parsing, view crops, the heatmap warp back to the common frame and the
per-joint agreement, on real arrays (no model needed)."""
from __future__ import annotations

import numpy as np
import pytest

from posemum_deploy.artifacts import ModelMetadata
from posemum_deploy.data.codec import HeatmapCodec
from posemum_deploy.data.transforms import transform_points
from posemum_deploy.errors import ConfigError
from posemum_deploy.inference.pipeline import make_crops
from posemum_deploy.inference.tta import (
    TTASpec,
    ViewHeatmaps,
    check_ensemble,
    make_view_crops,
    parse_tta,
    read_model_list,
    view_matrices,
    zoom_heatmaps,
    zoom_plan,
)


@pytest.mark.parametrize("text, spec", [
    ("flip", TTASpec(True, (1.0,))),
    ("flip,scales=0.8,1.0,1.2", TTASpec(True, (0.8, 1.0, 1.2))),
    ("scales=1.2,0.8", TTASpec(False, (1.2, 0.8))),
    ("scales=0.8, 1 ,1.25,flip", TTASpec(True, (0.8, 1.0, 1.25))),
    ("none", TTASpec()),
    (None, TTASpec()),
])
def test_parse_tta(text, spec):
    assert parse_tta(text) == spec
    assert parse_tta(str(spec)) == spec  # the canonical form (manifest) reads back


@pytest.mark.parametrize("text, words", [
    ("flop", "cannot read 'flop'"),
    ("flip,1.2", "cannot read '1.2'"),
    ("scales=0.8,abc", "cannot read 'abc'"),
    ("scales=", "cannot read 'scales='"),
    ("scales=1.0,0", "scale 0 must be > 0"),
    ("scales=-0.5", "must be > 0"),
])
def test_parse_tta_refuses(text, words):
    with pytest.raises(ConfigError) as e:
        parse_tta(text)
    msg = str(e.value)
    assert "--tta" in msg and words in msg and "\n" not in msg and "--tta flip" in msg


def test_views_order():
    assert TTASpec(True, (0.8, 1.2)).views == ((0.8, False), (0.8, True), (1.2, False), (1.2, True))
    assert TTASpec().trivial and not TTASpec(True).trivial


def _gaussian(codec: HeatmapCodec, hm_xy: np.ndarray) -> np.ndarray:
    """One Gaussian heatmap per point, the point given in heatmap coordinates."""
    crop_xy = codec.to_input(hm_xy)[None]
    maps, _ = codec.encode(crop_xy, np.ones(crop_xy.shape[:2]))
    return maps[0][None]  # [1, K, h, w]


def _peak(heatmaps: np.ndarray) -> np.ndarray:
    """Sub-pixel peak [N, K, 2] by a parabola through the log of the argmax and its
    neighbours: exact for a Gaussian, so what it reads off is the warp's own error
    (the codec's quarter-pixel decode would add its ±0.25 step)."""
    n, k, _, w = heatmaps.shape
    idx = heatmaps.reshape(n, k, -1).argmax(-1)
    x, y = idx % w, idx // w
    logm = np.log(np.maximum(heatmaps, 1e-12))
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")

    def offset(dx: int, dy: int) -> np.ndarray:
        lo, mid = logm[ni, ki, y - dy, x - dx], logm[ni, ki, y, x]
        hi = logm[ni, ki, y + dy, x + dx]
        return 0.5 * (lo - hi) / (lo - 2 * mid + hi)

    return np.stack([x + offset(1, 0), y + offset(0, 1)], axis=-1)


@pytest.mark.parametrize("scale", [0.8, 1.2, 1.5])
def test_zoom_there_and_back_lands_within_quarter_pixel(scale):
    codec = HeatmapCodec((256, 192), (64, 48), 2.0)
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(10, 38, 100), rng.uniform(12, 52, 100)])
    hm = _gaussian(codec, pts)
    assert np.abs(_peak(hm)[0] - pts).max() < 1e-5  # the reader is exact
    back = zoom_heatmaps(zoom_heatmaps(hm, scale), 1.0 / scale)
    assert np.abs(_peak(back)[0] - pts).max() <= 0.25
    # a heatmap made in the view frame (where the view network would put the peak)
    c = np.array([23.5, 31.5])
    in_view = _gaussian(codec, c + (pts - c) / scale)
    assert np.abs(_peak(zoom_heatmaps(in_view, 1.0 / scale))[0] - pts).max() <= 0.25
    # and the codec's own decode of it stays within its quarter-pixel step of that
    got, _ = codec.decode_heatmap_coords(zoom_heatmaps(in_view, 1.0 / scale))
    assert np.abs(got[0] - pts).max() <= 0.25 + 0.25


def test_view_crops_zoom_the_common_crop_about_its_centre():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (200, 160, 3), dtype=np.uint8)
    boxes = np.array([[30.0, 20.0, 60.0, 120.0], [5.0, 50.0, 100.0, 80.0]])
    plain = make_crops(image, boxes, np.ones(2), (128, 96))
    views = make_view_crops(image, boxes, np.ones(2), (128, 96), (1.0, 1.3))
    assert views.crops.shape == (2, 2, 128, 96, 3)
    np.testing.assert_array_equal(views.crops[:, 0], plain.crops)
    np.testing.assert_allclose(views.inverse, plain.inverse)
    np.testing.assert_allclose(views.areas, plain.areas)
    inverse, mats, _ = view_matrices(boxes, (128, 96), (1.3,))
    u = rng.uniform(0, 96, (2, 5, 2))
    image_pts = transform_points(u, inverse)
    v = transform_points(image_pts, mats[:, 0])
    pivot = np.array([47.5, 63.5])
    np.testing.assert_allclose(v, pivot + (u - pivot) / 1.3, atol=1e-9)



def test_agreement_follows_the_oks_formula():
    from posemum_deploy.inference.tta import TTAEstimator

    meta = ModelMetadata(input_hw=(128, 96), heatmap_hw=(32, 24))
    codec = HeatmapCodec((128, 96), (32, 24), 2.0)
    est = TTAEstimator.__new__(TTAEstimator)
    est.codec, est.dark, est.meta = codec, False, meta
    from posemum_deploy.data.coco import OKS_SIGMAS

    s2 = 128 * 96 / 1.25 ** 2
    est.inv_var = 1.0 / (2 * s2 * (2 * OKS_SIGMAS) ** 2)
    hm_pts = np.tile([[12.0, 16.0]], (17, 1))
    mean = _gaussian(codec, hm_pts)
    consensus = codec.to_input(hm_pts)
    # distance at which the OKS term is 0.5: d² = 2 ln2 s² k²
    d = np.sqrt(2 * np.log(2) * s2) * 2 * OKS_SIGMAS
    off = consensus.copy()
    off[:, 0] += d
    views = np.stack([consensus, off])[:, None]  # [V=2, N=1, K, 2]
    inverse = np.array([[[2.0, 0.0, 10.0], [0.0, 2.0, 5.0]]])
    out = est.decode(ViewHeatmaps(mean, views), inverse)
    assert out.shape == (1, 17, 4)
    np.testing.assert_allclose(out[0, :, 3], 0.75, atol=1e-9)
    np.testing.assert_allclose(out[0, :, :2], consensus * 2 + [10.0, 5.0])
    same = est.decode(ViewHeatmaps(mean, np.stack([consensus, consensus])[:, None]), inverse)
    np.testing.assert_allclose(same[0, :, 3], 1.0)


def test_ensemble_members_must_match():
    a = ModelMetadata(input_hw=(256, 192), heatmap_hw=(64, 48))
    check_ensemble([a, ModelMetadata(input_hw=(256, 192), heatmap_hw=(64, 48))], ["a.pt", "b.pt"])
    with pytest.raises(ConfigError, match=r"--model b\.onnx: its input size \(128, 96\) differs"):
        check_ensemble([a, ModelMetadata(input_hw=(128, 96), heatmap_hw=(32, 24))],
                       ["a.pt", "b.onnx"])
    other = ModelMetadata(num_joints=3, keypoint_names=("a", "b", "c"), flip_pairs=())
    with pytest.raises(ConfigError, match="keypoint set"):
        check_ensemble([a, other], ["a.pt", "c.pt"])


def test_read_model_list(tmp_path):
    f = tmp_path / "models.txt"
    f.write_text("# teachers\nr18.pt\n\n/abs/r50.onnx\n")
    assert read_model_list(f) == [str(tmp_path / "r18.pt"), "/abs/r50.onnx"]
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(ConfigError, match="--models .*no model paths"):
        read_model_list(tmp_path / "empty.txt")
    with pytest.raises(ConfigError, match="--models .*cannot read"):
        read_model_list(tmp_path / "missing.txt")


@pytest.mark.parametrize("offset", [0.5, 0.0])
def test_views_come_back_in_either_heatmap_convention(offset):
    """A joint at crop point p is at pivot + (p - pivot)/s in the view crop; its view
    heatmap, zoomed back about the crop centre in the codec's heatmap frame, peaks where
    p's heatmap would (pixel-centre codecs and imported offset-0 teachers alike)."""
    codec = HeatmapCodec((128, 96), (32, 24), 2.0, offset=offset)
    rng = np.random.default_rng(2)
    p = np.column_stack([rng.uniform(15, 80, 30), rng.uniform(20, 110, 30)])  # crop pixels
    pivot = np.array([47.5, 63.5])
    center = codec.to_heatmap(pivot)
    for scale in (0.8, 1.25):
        maps, _ = codec.encode((pivot + (p - pivot) / scale)[None], np.ones((1, 30)))
        back = zoom_heatmaps(maps, 1.0 / scale, zoom_plan((32, 24), 1.0 / scale, center))
        err = _peak(back)[0] - codec.to_heatmap(p)
        assert np.abs(err).max() <= 0.25
        # no bias: zooming about the wrong centre (offset 0 with the pixel-centre one)
        # shifts every joint by (c' - c)(1 - 1/s), 0.07-0.11 px here
        assert np.abs(err.mean(axis=0)).max() < 0.05
