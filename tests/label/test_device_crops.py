"""--decode device: nvjpeg/torchvision decode and grid_sample crops give the host path's
labels, refuse what they cannot serve, and decode heatmaps exactly like the codec.

On this CPU machine the "device" is the CPU (torchvision decodes there too), which
exercises the whole path; the CUDA run is the GPU benchmark's job.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from posemum_deploy.data.codec import HeatmapCodec
from posemum_deploy.data.synthetic import generate_dataset
from posemum_deploy.errors import ConfigError
from posemum_deploy.export.metadata import ModelMetadata
from posemum_deploy.inference.pipeline import PoseEstimator
from posemum_deploy.inference.tensor_pipeline import TensorPoseEstimator, decode_quarter_torch
from posemum_deploy.inference.torch_backend import TorchBackend
from posemum_deploy.label.runner import LabelSettings, label_folder
from posemum_deploy.label.writer import iter_indexed
from posemum_deploy.models import build_model


def _host_and_device_agree(tmp_path: Path, model: Path, backend: str | TorchBackend) -> None:
    ann = generate_dataset(tmp_path / "syn", 12, seed=3, image_size=(200, 260))
    records = {}
    for decode in ("host", "device"):
        out = tmp_path / decode
        summary = label_folder(model, tmp_path / "syn" / "images", out,
                               LabelSettings(boxes=f"gt:{ann}", decode=decode, shard_size=5),
                               backend=backend, batch_size=8, workers=2)
        assert summary.images == 12 and summary.skipped == 0
        records[decode] = [r for _, r in iter_indexed(out)]
    host, device = records["host"], records["device"]
    assert [r["file"] for r in host] == [r["file"] for r in device]
    dist = []
    for a, b in zip(host, device):
        assert len(a["persons"]) == len(b["persons"])
        for pa, pb in zip(a["persons"], b["persons"]):
            assert pa["box"] == pb["box"]
            dist.append(np.abs(np.subtract(pa["keypoints"], pb["keypoints"])).max(-1))
    dist = np.concatenate(dist)
    # cv2 warps in 1/32-pixel fixed point, grid_sample in float: crops differ by < 1 grey
    # level, which moves a random model's argmax only where two peaks nearly tie.
    assert len(dist) > 100 and (dist < 0.5).mean() > 0.95


def test_device_decode_matches_host_labels(tmp_path: Path, tiny_model: Path) -> None:
    _host_and_device_agree(tmp_path, tiny_model, "torch")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_device_decode_matches_host_labels(tmp_path: Path, tiny_model: Path) -> None:
    """nvjpeg + grid_sample on the GPU against cv2 on the host, the same CUDA model."""
    _host_and_device_agree(tmp_path, tiny_model, TorchBackend(tiny_model, device="cuda"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fast_backend_labels_like_fp32(tmp_path: Path, tiny_model: Path) -> None:
    """`--backend torch-fast --decode device`: fp16 + CUDA graphs, same people as fp32."""
    ann = generate_dataset(tmp_path / "syn", 12, seed=4, image_size=(200, 260))
    runs = {}
    for name, backend in (("fp32", TorchBackend(tiny_model, device="cuda")), ("fast", "torch-fast")):
        out = tmp_path / name
        label_folder(tiny_model, tmp_path / "syn" / "images", out,
                     LabelSettings(boxes=f"gt:{ann}", decode="device"), backend=backend,
                     batch_size=16)
        runs[name] = [r for _, r in iter_indexed(out)]
    joints = [np.abs(np.subtract(a["keypoints"], b["keypoints"])).max(-1)
              for ra, rb in zip(runs["fp32"], runs["fast"])
              for a, b in zip(ra["persons"], rb["persons"])]
    assert len(joints) > 10 and (np.concatenate(joints) < 0.5).mean() > 0.95


def test_device_decode_refuses_pixel_box_sources_and_ray(tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(ConfigError, match="--decode device works with"):
        label_folder(tiny_model, tmp_path / "images", tmp_path / "out",
                     LabelSettings(boxes="hog", decode="device"))
    with pytest.raises(ConfigError, match="--engine local"):
        label_folder(tiny_model, tmp_path / "images", tmp_path / "out2",
                     LabelSettings(decode="device"), engine="ray")
    with pytest.raises(ConfigError, match="--decode 'gpu'"):
        label_folder(tiny_model, tmp_path / "images", tmp_path / "out3", LabelSettings(decode="gpu"))


def test_quarter_decode_on_device_equals_codec() -> None:
    rng = np.random.default_rng(0)
    hm = rng.random((6, 17, 16, 12)).astype(np.float32)
    hm[0, 0] = 0.0                      # no peak: coords stay at the argmax, no shift
    hm[1, 1, 0, 0] = 5.0                # peak in a corner: out-of-map neighbours count 0
    hm[2, 2, 15, 11] = 5.0
    hm[3, 3] = -hm[3, 3]                # negative map: score ≤ 0, no shift
    codec = HeatmapCodec((64, 48), (16, 12))
    ref_xy, ref_s = codec.decode_heatmap_coords(hm)
    xy, s = decode_quarter_torch(torch.from_numpy(hm))
    np.testing.assert_allclose(xy.numpy(), ref_xy, atol=1e-6)
    np.testing.assert_allclose(s.numpy(), ref_s)


def test_tensor_estimator_equals_host_estimator_with_flip() -> None:
    torch.manual_seed(0)
    meta = ModelMetadata(input_hw=(64, 48), heatmap_hw=(16, 12))
    backend = TorchBackend(build_model("resnet18").eval(), meta, device="cpu")
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (5, 64, 48, 3), dtype=np.uint8)
    inverse = np.tile(np.array([[2.0, 0, 10], [0, 2.0, 5]]), (5, 1, 1))
    host = PoseEstimator(backend, batch_size=4, flip=True)
    ref = host.decode(host.heatmaps(crops), inverse)
    from posemum_deploy.data.transforms import normalize_numpy

    dev = TensorPoseEstimator(backend, batch_size=4, flip=True)
    x = torch.from_numpy(normalize_numpy(crops, meta.mean, meta.std))
    got = dev.decode(dev.heatmaps(x), inverse)
    np.testing.assert_allclose(got, ref, atol=1e-4)
