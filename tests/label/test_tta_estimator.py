"""TTA and ensembles with a real (tiny, random-weight) network: an ensemble of one is the
model, flip+scale TTA of a mirror-symmetric person stays symmetric, and labeled records
carry each joint's agreement."""
from __future__ import annotations

import numpy as np
import pytest
from label_helpers import make_checkpoint, write_images

from posemum_deploy.data.codec import flip_back
from posemum_deploy.inference.backends import load_backend
from posemum_deploy.inference.pipeline import PoseEstimator, make_crops
from posemum_deploy.inference.tta import TTAEstimator, TTASpec, make_view_crops
from posemum_deploy.label.boxes import FullImageBoxes
from posemum_deploy.label.shard import ShardLabeler, StageTimes, host_stream


@pytest.fixture(scope="module")
def backend(tiny_model):
    return load_backend(tiny_model, "torch", device="cpu")


def _crops(n: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (160, 140, 3), dtype=np.uint8)
    boxes = rng.uniform([0, 0, 30, 40], [60, 60, 80, 100], (n, 4))
    return image, boxes


def test_ensemble_of_one_model_is_the_model(backend):
    image, boxes = _crops(3)
    batch = make_crops(image, boxes, np.ones(len(boxes)), (128, 96))
    plain = PoseEstimator(backend, batch_size=4).estimate(batch)
    one = TTAEstimator([PoseEstimator(backend, batch_size=4)], TTASpec()).estimate(batch)
    np.testing.assert_array_equal(one[..., :3], plain)
    np.testing.assert_array_equal(one[..., 3], 1.0)  # one view agrees with itself
    # flip-only TTA is the existing flip test (same formula; batches packed differently)
    flipped = PoseEstimator(backend, batch_size=4, flip=True).estimate(batch)
    tta = TTAEstimator([PoseEstimator(backend, batch_size=4)], TTASpec(flip=True)).estimate(batch)
    np.testing.assert_allclose(tta[..., :3], flipped, atol=1e-4)


def test_flip_scale_tta_of_a_symmetric_person_stays_symmetric(backend):
    rng = np.random.default_rng(3)
    half = rng.integers(0, 255, (2, 3, 128, 48, 3), dtype=np.uint8)
    crops = np.concatenate([half, half[:, :, :, ::-1]], axis=3)  # mirror-symmetric views
    est = TTAEstimator([PoseEstimator(backend, batch_size=8)], TTASpec(True, (0.8, 1.0, 1.25)))
    hm = est.heatmaps(crops)
    mirrored = flip_back(hm.mean, est.flip_perm)
    assert np.abs(hm.mean).max() > 0  # (a random network: small, not all zero)
    np.testing.assert_allclose(mirrored, hm.mean, atol=1e-5 * np.abs(hm.mean).max())
    # without flip views the network's own asymmetry shows
    plain = TTAEstimator([PoseEstimator(backend, batch_size=8)], TTASpec(False, (0.8, 1.0, 1.25)))
    raw = plain.heatmaps(crops).mean
    assert np.abs(flip_back(raw, est.flip_perm) - raw).max() > 100 * 1e-5 * np.abs(raw).max()


def test_ensemble_averages_members_and_measures_their_agreement(backend, tmp_path):
    other = load_backend(make_checkpoint(tmp_path / "other.pt", seed=7), "torch", device="cpu")
    image, boxes = _crops(4, seed=1)
    batch = make_crops(image, boxes, np.ones(4), (128, 96))
    a, b = PoseEstimator(backend, 4), PoseEstimator(other, 4)
    ens = TTAEstimator([a, b], TTASpec())
    vh = ens.heatmaps(batch.crops)
    np.testing.assert_allclose(vh.mean, 0.5 * (a.heatmaps(batch.crops) + b.heatmaps(batch.crops)),
                               atol=1e-6)
    kpts = ens.decode(vh, batch.inverse)
    assert ((kpts[..., 3] > 0) & (kpts[..., 3] <= 1)).all()
    assert (kpts[..., 3] < 0.999).any()  # two random networks disagree somewhere


def test_shard_labeler_records_agreement(backend, tmp_path):
    write_images(tmp_path / "img", 2)
    spec = TTASpec(True, (0.9, 1.1))
    est = TTAEstimator([PoseEstimator(backend, batch_size=3)], spec)
    times = StageTimes()
    files = sorted(p.relative_to(tmp_path / "img").as_posix() for p in (tmp_path / "img").rglob("*.*"))
    stream = host_stream(tmp_path / "img", ((0, f) for f in files), FullImageBoxes(), (128, 96),
                         1, 4, times, spec.scales)
    records = ShardLabeler(est, 0.9, times).label(p for _, p in stream)
    assert len(records) == 2
    for rec in records:
        (person,) = rec["persons"]
        assert len(person["joint_agreement"]) == 17
        assert all(0 <= a <= 1 for a in person["joint_agreement"])
    # the same person through make_view_crops + estimate gives the same numbers
    from posemum_deploy.data.images import read_image

    image = read_image(tmp_path / "img" / records[0]["file"])
    box, score = FullImageBoxes().boxes(records[0]["file"], image)
    kpts = est.estimate(make_view_crops(image, box, score, (128, 96), spec.scales))
    np.testing.assert_allclose(records[0]["persons"][0]["joint_agreement"],
                               np.round(kpts[0, :, 3], 4))
    np.testing.assert_allclose(records[0]["persons"][0]["keypoints"], np.round(kpts[0, :, :2], 2))
