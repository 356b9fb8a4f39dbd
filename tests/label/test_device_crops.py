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

from posemum_deploy.artifacts import ModelMetadata
from posemum_deploy.data.synthetic import generate_dataset
from posemum_deploy.inference.pipeline import PoseEstimator
from posemum_deploy.inference.tensor_pipeline import TensorPoseEstimator
from posemum_deploy.inference.torch_backend import TorchBackend
from posemum_deploy.label.runner import LabelSettings, RunSettings, label_folder
from posemum_deploy.label.writer import iter_indexed
from posemum_deploy.models import build_model


def png_copy(root: Path, seed: int) -> Path:
    """A synthetic set saved as PNG: both paths then decode identical pixels with cv2
    (decoders of JPEG differ: nvjpeg upsamples chroma unlike libjpeg), so what is
    compared is the device crops and heatmap decoding alone."""
    import json

    import cv2

    ann = generate_dataset(root / "jpg", 12, seed=seed, image_size=(200, 260))
    coco = json.loads(ann.read_text())
    (root / "png" / "images").mkdir(parents=True)
    for im in coco["images"]:
        name = Path(im["file_name"]).with_suffix(".png").name
        cv2.imwrite(str(root / "png" / "images" / name),
                    cv2.imread(str(ann.parent / "images" / im["file_name"])))
        im["file_name"] = name
    out = root / "png" / "annotations.json"
    out.write_text(json.dumps(coco))
    return out


def _host_and_device_agree(tmp_path: Path, model: Path, backend: str | TorchBackend) -> None:
    ann = png_copy(tmp_path, seed=3)
    records = {}
    for decode in ("host", "device"):
        out = tmp_path / decode
        summary = label_folder(model, ann.parent / "images", out,
                               LabelSettings(boxes=f"gt:{ann}", decode=decode, shard_size=5),
                               RunSettings(backend=backend, batch_size=8, workers=2))
        assert summary.images == 12 and summary.skipped == 0
        records[decode] = [r for _, r in iter_indexed(out)]
    host, device = records["host"], records["device"]
    assert [r["file"] for r in host] == [r["file"] for r in device]
    dist = []
    for a, b in zip(host, device, strict=True):
        assert len(a["persons"]) == len(b["persons"])
        for pa, pb in zip(a["persons"], b["persons"], strict=True):
            assert pa["box"] == pb["box"]
            dist.append(np.abs(np.subtract(pa["keypoints"], pb["keypoints"])).max(-1))
    dist = np.concatenate(dist)
    # cv2 warps in 1/32-pixel fixed point, grid_sample in float: crops differ by < 1 grey
    # level, which moves a random model's argmax only where two peaks nearly tie.
    agree = (dist < 0.5).mean()
    assert len(dist) > 100 and agree > 0.95, f"{agree:.3f} of joints within 0.5 px"


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
                     LabelSettings(boxes=f"gt:{ann}", decode="device"),
                     RunSettings(backend=backend, batch_size=16))
        runs[name] = [r for _, r in iter_indexed(out)]
    joints = [np.abs(np.subtract(a["keypoints"], b["keypoints"])).max(-1)
              for ra, rb in zip(runs["fp32"], runs["fast"], strict=True)
              for a, b in zip(ra["persons"], rb["persons"], strict=True)]
    agree = (np.concatenate(joints) < 0.5).mean()
    assert len(joints) > 10 and agree > 0.95, f"{agree:.3f} of joints within 0.5 px"


def _crop_differences(ann: Path, device: torch.device) -> np.ndarray:
    """|device crops − host crops| in grey levels over every person of the set."""
    from posemum_deploy.data.images import read_image
    from posemum_deploy.inference.pipeline import make_crops
    from posemum_deploy.label.boxes import parse_box_source
    from posemum_deploy.label.device_crops import DeviceCropper, read_bytes
    from posemum_deploy.label.shard import StageTimes

    root = ann.parent / "images"
    meta = ModelMetadata(input_hw=(128, 96), heatmap_hw=(32, 24))
    boxes = parse_box_source(f"gt:{ann}")
    cropper = DeviceCropper(root, boxes, meta, device, StageTimes())
    files = sorted(p.name for p in root.iterdir())
    diffs = []
    prepared = cropper.prepare([(0, read_bytes(root, f)) for f in files])
    for (_, item), name in zip(prepared, files, strict=True):
        image = read_image(root / name)
        ref = make_crops(image, *boxes.boxes(name, image), (128, 96))
        got = item.crops.crops.float().cpu().numpy().transpose(0, 2, 3, 1)
        got = got * (np.array(meta.std) * 255) + np.array(meta.mean) * 255
        np.testing.assert_allclose(item.crops.inverse, ref.inverse, atol=1e-9)
        diffs.append(np.abs(got - ref.crops.astype(np.float32)).ravel())
    return np.concatenate(diffs)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_device_crops_match_cv2_crops_on_the_same_pixels(tmp_path: Path, device: str) -> None:
    """grid_sample warps against cv2.warpAffine (1/32-pixel fixed point): < 1 grey level."""
    diffs = _crop_differences(png_copy(tmp_path, seed=5), torch.device(device))
    assert diffs.mean() < 0.5 and np.percentile(diffs, 99) < 3, (diffs.mean(),
                                                                 np.percentile(diffs, 99))


@pytest.mark.parametrize("device", DEVICES)
def test_device_jpeg_decode_is_close_to_cv2(tmp_path: Path, device: str) -> None:
    """nvjpeg (or torchvision's CPU libjpeg) vs cv2 on JPEG crops: same orientation and
    colours, differing only where chroma upsampling and IDCTs differ (sharp colour edges
    of the synthetic people: 2.0 grey levels mean on an H100)."""
    ann = generate_dataset(tmp_path / "syn", 6, seed=5, image_size=(200, 260))
    diffs = _crop_differences(ann, torch.device(device))
    assert diffs.mean() < 4.0, (diffs.mean(), np.percentile(diffs, 99))


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
