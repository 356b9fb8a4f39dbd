import pytest
import torch

from posemum_deploy.errors import ArtifactError, ConfigError
from posemum_deploy.models import BACKBONES, STAGE_NAMES, build_model


@pytest.mark.parametrize("backbone", BACKBONES)
def test_output_shape_and_stages(backbone):
    model = build_model(backbone).eval()
    x = torch.randn(1, 3, 64, 64)
    seen = []
    with torch.no_grad():
        y = model(x, after_stage=lambda name, t: seen.append((name, t.shape[-2:])) or t)
    assert y.shape == (1, 17, 16, 16)
    assert [n for n, _ in seen] == list(STAGE_NAMES) + ["head"]
    assert [tuple(s) for _, s in seen[:5]] == [(16, 16), (16, 16), (8, 8), (4, 4), (2, 2)]


def test_resnet18_size_and_head_init():
    model = build_model("resnet18")
    n = sum(p.numel() for p in model.parameters())
    assert 15.0e6 < n < 15.8e6
    assert model.final.bias.abs().max() == 0
    assert model.final.weight.std() < 0.002


def test_pretrained_from_local_file(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    model = build_model("resnet18", pretrained=tmp_path / "r18.pth")
    assert torch.equal(model.stages[0][0].weight, ref.conv1.weight)
    assert torch.equal(model.stages[4][1].conv2.weight, ref.layer4[1].conv2.weight)
    with pytest.raises(ArtifactError, match="not a resnet50 state_dict"):
        build_model("resnet50", pretrained=tmp_path / "r18.pth")
    with pytest.raises(ArtifactError, match="not found"):
        build_model("resnet18", pretrained=tmp_path / "nope.pth")


def test_unknown_backbone():
    with pytest.raises(ConfigError, match="unknown backbone"):
        build_model("vgg16")
