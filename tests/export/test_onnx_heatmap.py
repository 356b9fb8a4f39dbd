"""`posemum import --onnx-heatmap`: a foreign ONNX heatmap network labels and evaluates
through ONNX Runtime and OpenVINO exactly as the network itself does in torch."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from posemum_deploy.artifacts import read_sidecar
from posemum_deploy.errors import ArtifactError
from posemum_deploy.export.onnx_heatmap import import_onnx_heatmap

HW = (128, 96)
# A BGR network normalised on the 0..255 scale, as mmpose-style exports often are.
MEAN_255, STD_255 = (103.53, 116.28, 123.675), (57.375, 57.12, 58.395)


class ForeignPose(nn.Module):
    """Not posemum's: a torchvision ResNet-18 trunk to stride 16, one upsampling, stride 8."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(*list(resnet18(weights=None).children())[:-3])
        self.upsample = nn.ConvTranspose2d(256, 64, 4, 2, 1)
        self.act = nn.ReLU()
        self.to_maps = nn.Conv2d(64, 17, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.to_maps(self.act(self.upsample(self.trunk(image))))


def export(module: nn.Module, path: Path, inputs: int = 1) -> Path:
    """TorchScript ONNX export with a fixed batch of 1 and foreign tensor names."""
    sample = tuple(torch.zeros(1, 3, *HW) for _ in range(inputs))
    names = ["image", "extra"][:inputs]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, sample, str(path), dynamo=False, opset_version=17,
                          input_names=names, output_names=["maps"])
    return path


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    module = ForeignPose().eval()
    with torch.no_grad():
        module.to_maps.weight.mul_(20)  # clear peaks, so decoded keypoints mean something
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return module, export(module, tmp_path_factory.mktemp("foreign") / "pose.onnx")


@pytest.fixture(scope="module")
def imported(foreign, tmp_path_factory) -> Path:
    _, src = foreign
    out = tmp_path_factory.mktemp("imported")
    mean, std = (tuple(x / 255 for x in v) for v in (MEAN_255, STD_255))
    import_onnx_heatmap(src, out, HW, mean, std, "bgr")
    return out / "model.onnx"


class BgrReference(nn.Module):
    """The foreign module fed as its own pipeline feeds it: posemum's RGB crops reversed."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.flip(1))


def test_sidecar_reads_sizes_from_graph(imported: Path) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(imported), providers=["CPUExecutionProvider"])
    (x,), (y,) = session.get_inputs(), session.get_outputs()
    assert (x.name, y.name) == ("input", "heatmaps")  # as posemum's exports (INT8 readers)
    assert x.shape == ["batch", 3, *HW] and y.shape == ["batch", 17, 16, 12]
    meta = read_sidecar(imported)
    assert tuple(meta.input_hw) == HW and tuple(meta.heatmap_hw) == (16, 12)  # stride 8
    assert meta.channel_order == "RGB" and meta.extra["imported_from"]["channel_order"] == "BGR"
    assert meta.extra["heatmap_offset"] == 0.0  # mmpose's MSRA convention, the default
    np.testing.assert_allclose(meta.mean, (0.485, 0.456, 0.406), atol=1e-9)


@pytest.mark.parametrize("kind", ["onnxruntime", "openvino"])
def test_labels_and_evaluates_as_the_module_does(kind: str, foreign, imported: Path,
                                                 coco_mini: Path) -> None:
    from posemum_deploy.evaluation.coco_eval import evaluate_results
    from posemum_deploy.inference.backends import load_backend
    from posemum_deploy.inference.predict import predict_coco
    from posemum_deploy.inference.torch_backend import TorchBackend

    module, _ = foreign
    be = load_backend(imported, kind, **({"device": "cpu"} if kind == "onnxruntime" else {}))
    reference = TorchBackend(BgrReference(module), read_sidecar(imported), device="cpu")
    x = np.random.default_rng(1).normal(size=(3, 3, *HW)).astype(np.float32)
    np.testing.assert_allclose(be.predict(x), reference.predict(x), atol=1e-4)
    ann = coco_mini / "test_coco.json"
    got = predict_coco(be, ann, coco_mini, batch_size=4)
    want = predict_coco(reference, ann, coco_mini, batch_size=4)
    assert len(got) == len(want) > 0
    kp_got = np.array([d["keypoints"] for d in got]).reshape(len(got), 17, 3)
    kp_want = np.array([d["keypoints"] for d in want]).reshape(len(want), 17, 3)
    assert np.abs(kp_got[..., :2] - kp_want[..., :2]).max() < 1e-2
    np.testing.assert_allclose(kp_got[..., 2], kp_want[..., 2], atol=1e-4)
    assert evaluate_results(ann, got)["AP"] == pytest.approx(evaluate_results(ann, want)["AP"],
                                                             abs=1e-6)


def test_two_inputs_refused(tmp_path: Path) -> None:
    class Two(nn.Module):
        def forward(self, a, b):
            return a + b

    src = export(Two(), tmp_path / "two.onnx", inputs=2)
    with pytest.raises(ArtifactError, match=r"2 input\(s\) \(image \[1, 3, 128, 96\], extra "
                                            r"\[1, 3, 128, 96\]\).*supported: one input"):
        import_onnx_heatmap(src, tmp_path / "out", HW, (0.5,) * 3, (0.25,) * 3, "rgb")


def test_wrong_size_and_rank_refused(foreign, tmp_path: Path) -> None:
    _, src = foreign
    with pytest.raises(ArtifactError, match=r"input image \[1, 3, 128, 96\].*--input-size"):
        import_onnx_heatmap(src, tmp_path / "out", (256, 192), (0.5,) * 3, (0.25,) * 3, "rgb")

    class Flat(nn.Module):
        def forward(self, image):
            return image.flatten(1)

    flat = export(Flat(), tmp_path / "flat.onnx")
    with pytest.raises(ArtifactError, match=r"output maps \[1, 36864\]"):
        import_onnx_heatmap(flat, tmp_path / "out2", HW, (0.5,) * 3, (0.25,) * 3, "rgb")
