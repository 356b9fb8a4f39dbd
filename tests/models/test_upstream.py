"""Importing upstream SimpleBaseline checkpoints (mmpose 1.x / 0.x, original release).

The reference networks here are written from the upstream architecture description
(PoseResNet in microsoft/human-pose-estimation.pytorch lib/models/pose_resnet.py; mmpose's
ResNet + HeatmapHead / TopdownHeatmapSimpleHead), with upstream's module names, not
from posemum's classes; each is saved the way its project saves it.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from posemum_deploy.errors import ArtifactError, ConfigError
from posemum_deploy.models.checkpoint import load_model, read_checkpoint
from posemum_deploy.models.upstream import import_checkpoint, infer_architecture

HW = (64, 64)


class Basic(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (self.downsample(x) if self.downsample is not None else x))


class Bottle(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + (self.downsample(x) if self.downsample is not None else x))


class ResNetBody(nn.Module):
    """conv1, bn1, layer1..4 (mmpose ResNet and PoseResNet's encoder share these names)."""

    def __init__(self, block: type, layers: tuple[int, ...]):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            setattr(self, f"layer{i + 1}", self._make_layer(block, planes, n, 1 if i == 0 else 2))

    def _make_layer(self, block, planes, blocks, stride):
        down = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride,
                                           bias=False), nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, down)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, None) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class Head(nn.Module):
    """deconv_layers: [ConvTranspose2d(k4, s2, p1, no bias), BN, ReLU] x 3; final_layer 1x1."""

    def __init__(self, in_ch: int, width: int = 32, joints: int = 17, kernel: int = 4):
        super().__init__()
        pad, out_pad = {4: (1, 0), 3: (1, 1), 2: (0, 0)}[kernel]
        layers = []
        for _ in range(3):
            layers += [nn.ConvTranspose2d(in_ch, width, kernel, 2, pad, out_pad, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            in_ch = width
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(width, joints, 1)

    def forward(self, x):
        return self.final_layer(self.deconv_layers(x))


class PoseResNet(ResNetBody):
    """The original release's single module."""

    def __init__(self, block=Basic, layers=(2, 2, 2, 2), **head):
        super().__init__(block, layers)
        h = Head(512 * block.expansion, **head)
        self.deconv_layers, self.final_layer = h.deconv_layers, h.final_layer

    def forward(self, x):
        return self.final_layer(self.deconv_layers(super().forward(x)))


class MMPose(nn.Module):
    """mmpose's top-down estimator: `backbone` + `head` (1.x) or `keypoint_head` (0.x)."""

    def __init__(self, head_name: str, block=Basic, layers=(2, 2, 2, 2), **head):
        super().__init__()
        self.head_name = head_name
        self.backbone = ResNetBody(block, layers)
        setattr(self, head_name, Head(512 * block.expansion, **head))

    def forward(self, x):
        return getattr(self, self.head_name)(self.backbone(x))


class Opaque:
    """A pickled object: weights_only refuses it, so it is never constructed."""


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BN statistics, so that every tensor matters to the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                if "running_var" in name:
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                elif "bn" in name or "downsample.1" in name or t.dim() == 1:
                    t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75 if "weight" in name
                            else torch.randn(t.shape, generator=g) * 0.1)
                elif "final_layer" in name:  # heatmaps of upstream's scale (peaks ~1)
                    t.copy_(torch.randn(t.shape, generator=g) * 0.002)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * (2.0 / t[0].numel()) ** 0.5)
    return model.eval()


def mmengine_meta() -> dict:
    """mmengine's `meta` as mmpose writes it: dataset_meta holds NumPy arrays."""
    return {"mmengine_version": "0.10.3", "epoch": 210, "iter": 123, "seed": 0,
            "dataset_meta": {"dataset_name": "coco", "num_keypoints": 17,
                             "sigmas": np.linspace(0.025, 0.107, 17, dtype=np.float32),
                             "dataset_keypoint_weights": np.ones(17, dtype=np.float32),
                             "keypoint_colors": np.zeros((17, 3), dtype=np.uint8),
                             "flip_indices": [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13,
                                              16, 15],
                             "keypoint_id2name": {0: "nose"}},
            "loss": np.float64(0.0012)}


def save_numpy1_style(obj: dict, path: Path) -> None:
    """torch.save as mmpose's tools/misc/publish_model.py does (the legacy, non-zip format:
    `_use_new_zipfile_serialization=False`), with the pickle naming
    `numpy.core.multiarray` as NumPy 1.x wrote it in every released checkpoint."""
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    path.write_bytes(buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))


def saved(kind: str, tmp_path: Path, seed: int = 0, **arch) -> tuple[nn.Module, Path]:
    path = tmp_path / f"{kind}.pth"
    if kind == "mmpose1":
        ref = randomise(MMPose("head", **arch), seed)
        save_numpy1_style({"meta": mmengine_meta(), "state_dict": ref.state_dict()}, path)
    elif kind == "mmpose0":
        ref = randomise(MMPose("keypoint_head", **arch), seed)
        torch.save({"meta": {"mmcv_version": "1.7.0", "epoch": 210},
                    "state_dict": ref.state_dict()}, path, _use_new_zipfile_serialization=False)
    elif kind == "simplebaseline":  # final_state.pth.tar: model.module.state_dict()
        ref = randomise(PoseResNet(**arch), seed)
        torch.save(ref.state_dict(), path)
    else:  # checkpoint.pth.tar: {'state_dict': DataParallel(model).state_dict(), ...}
        ref = randomise(PoseResNet(**arch), seed)
        torch.save({"epoch": 140, "model": "pose_resnet", "perf": 0.7,
                    "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    return ref, path


@pytest.mark.parametrize("kind", ["mmpose1", "mmpose0", "simplebaseline", "dataparallel"])
def test_import_equals_upstream_forward(kind: str, tmp_path: Path) -> None:
    ref, src = saved(kind, tmp_path, seed=1)
    out = tmp_path / "imported.pt"
    import_checkpoint(src, out, input_hw=HW, channel_order="rgb")
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert "model_meta" in ckpt and read_checkpoint(out)
    model, meta = load_model(out)
    assert (meta.backbone, meta.num_joints, meta.deconv_channels) == ("resnet18", 17, 32)
    assert tuple(meta.input_hw) == HW and tuple(meta.heatmap_hw) == (16, 16)
    x = torch.randn(2, 3, *HW, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want, got = ref(x), model(x)
    assert want.abs().max() > 1e-2  # a real signal, not near-zero heatmaps
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_bottleneck_resnet50_import_equals_upstream_forward(tmp_path: Path) -> None:
    """Bottleneck blocks (conv3/bn3, downsample in every first block) map as well."""
    ref, src = saved("mmpose1", tmp_path, seed=3, block=Bottle, layers=(3, 4, 6, 3))
    import_checkpoint(src, tmp_path / "r50.pt", input_hw=HW, source="mmpose")
    model, meta = load_model(tmp_path / "r50.pt")
    assert meta.backbone == "resnet50"
    x = torch.randn(1, 3, *HW, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="--from simplebaseline but the keys are a mmpose"):
        import_checkpoint(src, tmp_path / "x.pt", input_hw=HW, source="simplebaseline")


def test_bgr_release_is_exact_on_rgb_crops(tmp_path: Path) -> None:
    """The original release normalises BGR with ImageNet's RGB statistics (its default);
    the import reverses conv1's input channels so posemum's RGB crops give the same."""
    from posemum_deploy.data.transforms import normalize_numpy

    ref, src = saved("simplebaseline", tmp_path, seed=2)
    out = tmp_path / "imported.pt"
    meta = import_checkpoint(src, out, input_hw=HW)  # default for this layout: BGR
    assert meta.channel_order == "RGB" and meta.extra["imported_from"]["channel_order"] == "BGR"
    rgb = np.random.default_rng(0).integers(0, 256, (2, *HW, 3), dtype=np.uint8)
    upstream_in = (rgb[..., ::-1].astype(np.float32) / 255.0 - [0.485, 0.456, 0.406]) \
        / [0.229, 0.224, 0.225]
    upstream_in = torch.from_numpy(np.ascontiguousarray(upstream_in.transpose(0, 3, 1, 2))).float()
    model, meta = load_model(out)
    ours = torch.from_numpy(normalize_numpy(rgb, meta.mean, meta.std))
    torch.testing.assert_close(ours, upstream_in.flip(1), atol=1e-5, rtol=0)  # same values
    with torch.no_grad():
        want, got = ref(upstream_in), model(upstream_in.flip(1))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_mean_std_on_0_255_scale(tmp_path: Path) -> None:
    _, src = saved("mmpose1", tmp_path)
    meta = import_checkpoint(src, tmp_path / "m.pt", input_hw=HW,
                             mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
    np.testing.assert_allclose(meta.mean, (0.485, 0.456, 0.406), atol=1e-9)
    np.testing.assert_allclose(meta.std, (0.229, 0.224, 0.225), atol=1e-9)


@pytest.mark.parametrize(("block", "layers", "name"), [
    (Basic, (3, 4, 6, 3), "resnet34"), (Bottle, (3, 4, 6, 3), "resnet50"),
    (Bottle, (3, 4, 23, 3), "resnet101"), (Bottle, (3, 8, 36, 3), "resnet152")])
def test_depth_and_head_inferred_from_shapes(block, layers, name: str) -> None:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        state = PoseResNet(block, layers, width=256, joints=17).state_dict()
    arch = infer_architecture(state, Path("x.pth"))
    assert (arch.backbone, arch.deconv_widths, arch.deconv_kernels, arch.num_joints) == \
        (name, (256, 256, 256), (4, 4, 4), 17)


def test_unsupported_head_refused_with_what_was_found(tmp_path: Path) -> None:
    _, src = saved("simplebaseline", tmp_path, kernel=3)
    with pytest.raises(ArtifactError, match=r"kernels \[3, 3, 3\] \(posemum: 3 of kernel 4\)"):
        import_checkpoint(src, tmp_path / "m.pt", input_hw=HW)


def test_missing_and_extra_keys_named(tmp_path: Path) -> None:
    ref = randomise(MMPose("head"))
    state = ref.state_dict()
    del state["backbone.layer2.0.bn1.running_mean"]
    state["head.extra_scale"] = torch.ones(1)
    state["neck.proj.weight"] = torch.ones(2, 2)
    torch.save({"meta": {}, "state_dict": state}, tmp_path / "bad.pth")
    with pytest.raises(ArtifactError) as info:
        import_checkpoint(tmp_path / "bad.pth", tmp_path / "m.pt", input_hw=HW)
    msg = str(info.value)
    assert "\n" not in msg
    assert "not a heatmap head (parts: extra_scale)" in msg
    del state["head.extra_scale"]
    torch.save({"meta": {}, "state_dict": state}, tmp_path / "bad.pth")
    with pytest.raises(ArtifactError, match=r"missing: backbone\.layer2\.0\.bn1\.running_mean; "
                                            r"unexpected: neck\.proj\.weight"):
        import_checkpoint(tmp_path / "bad.pth", tmp_path / "m.pt", input_hw=HW)


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ArtifactError, match="not a state dict \\(found list\\)"):
        import_checkpoint(tmp_path / "list.pth", tmp_path / "m.pt")
    torch.save({"meta": {}, "state_dict": {"backbone.conv1.weight": torch.zeros(1),
                                           "head.fc.weight": torch.zeros(34, 512)}},
               tmp_path / "rle.pth")
    with pytest.raises(ArtifactError, match="not a heatmap head \\(parts: fc\\)"):
        import_checkpoint(tmp_path / "rle.pth", tmp_path / "m.pt")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(ArtifactError, match="not a torch checkpoint"):
        import_checkpoint(tmp_path / "text.pth", tmp_path / "m.pt")
    torch.save({"state_dict": {}, "obj": Opaque()}, tmp_path / "obj.pth")
    with pytest.raises(ArtifactError, match="beyond tensors"):
        import_checkpoint(tmp_path / "obj.pth", tmp_path / "m.pt")


def test_imported_heatmaps_decode_in_upstream_convention(tmp_path: Path) -> None:
    """Upstream (MSRA) targets put a crop point x at heatmap x / stride; the imported
    model's codec reads them back there, where posemum's own convention would add
    (stride - 1) / 2 = 1.5 crop pixels."""
    from posemum_deploy.data.codec import HeatmapCodec
    from posemum_deploy.inference.pipeline import codec_for

    _, src = saved("mmpose1", tmp_path)
    meta = import_checkpoint(src, tmp_path / "m.pt", input_hw=HW)
    _, loaded = load_model(tmp_path / "m.pt")
    codec = codec_for(loaded)
    assert meta.extra["heatmap_offset"] == 0.0 and codec.offset == 0.0
    crop_xy = np.array([[[20.0, 36.0], [44.0, 8.0]]])  # on the 4-px grid: exact peaks
    yy, xx = np.mgrid[0:16, 0:16]
    mu = crop_xy / 4.0  # MSRA encoding: keypoint / stride
    heatmaps = np.exp(-((xx - mu[..., 0, None, None]) ** 2 + (yy - mu[..., 1, None, None]) ** 2)
                      / (2 * 2.0 ** 2)).astype(np.float32)
    np.testing.assert_allclose(codec.decode(heatmaps)[0], crop_xy, atol=1e-9)
    posemum = HeatmapCodec(HW, (16, 16))  # the default convention, unchanged
    np.testing.assert_allclose(posemum.decode(heatmaps)[0], crop_xy + 1.5, atol=1e-9)


class MsraBackend:
    """A stand-in teacher trained in upstream's convention: each crop holds one bright
    pixel u, the heatmap a Gaussian at u / stride for every joint (MSRA encoding)."""

    name = "fake"

    def __init__(self, meta) -> None:
        self.metadata = meta

    def predict(self, batch: np.ndarray) -> np.ndarray:
        h, w = self.metadata.heatmap_hw
        stride = self.metadata.input_hw[0] / h
        yy, xx = np.mgrid[0:h, 0:w]
        out = []
        for crop in batch:
            v, u = np.unravel_index(crop[0].argmax(), crop[0].shape)
            g = np.exp(-((xx - u / stride) ** 2 + (yy - v / stride) ** 2) / (2 * 2.0 ** 2))
            out.append(np.repeat(g[None], self.metadata.num_joints, 0))
        return np.asarray(out, np.float32)


@pytest.mark.parametrize("flip", [False, True])
def test_flip_test_lines_up_in_upstream_convention(flip: bool, tmp_path: Path) -> None:
    """Mirrored upstream heatmaps are (stride - 1)/stride pixels off once mirrored back;
    flip_back moves them by HeatmapCodec.flip_shift, so flip test decodes where the
    unflipped view does (DARK: sub-pixel), instead of 1.5 crop pixels to the left."""
    from posemum_deploy.inference.pipeline import PoseEstimator

    _, src = saved("mmpose1", tmp_path)
    import_checkpoint(src, tmp_path / "m.pt", input_hw=(128, 128))  # DARK away from borders
    _, meta = load_model(tmp_path / "m.pt")
    crops = np.zeros((3, 128, 128, 3), np.uint8)
    points = np.array([[41, 60], [77, 38], [53, 87]])  # (x, y) crop pixels
    for crop, (x, y) in zip(crops, points, strict=True):
        crop[y, x] = 255
    est = PoseEstimator(MsraBackend(meta), batch_size=4, flip=flip, dark=True)
    xy, _ = est.codec.decode(est.heatmaps(crops), dark=True)
    assert np.abs(xy - points[:, None, :]).max() < 0.2


def test_flip_back_shift_same_in_numpy_and_torch() -> None:
    from posemum_deploy.data.codec import flip_back

    hm = np.random.default_rng(0).random((2, 17, 8, 6)).astype(np.float32)
    perm = np.arange(17)[::-1].copy()
    for shift in (0.0, 0.75, -0.5):
        want = flip_back(hm, perm, shift)
        got = flip_back(torch.from_numpy(hm), perm, shift).numpy()
        np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_array_equal(flip_back(hm, perm), hm[:, perm, :, ::-1])  # unchanged
    np.testing.assert_allclose(flip_back(hm, perm, 0.75)[..., 1:],
                               0.25 * hm[:, perm, :, ::-1][..., 1:]
                               + 0.75 * hm[:, perm, :, ::-1][..., :-1], atol=1e-6)
