"""SimpleBaseline (Xiao et al. 2018): a torchvision ResNet and three deconvolutions.

The backbone is kept as a list of stages (stem, layer1..layer4) so that Pose-MUM can
mix and unmix features between them from the outside, through `after_stage`, without
the model knowing anything about training.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import resnet

from posemum_deploy.errors import ArtifactError, ConfigError

STAGE_NAMES: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4")
_RESNETS: dict[str, Callable[..., resnet.ResNet]] = {
    "resnet18": resnet.resnet18, "resnet34": resnet.resnet34, "resnet50": resnet.resnet50,
    "resnet101": resnet.resnet101, "resnet152": resnet.resnet152,
}
BACKBONES: tuple[str, ...] = tuple(_RESNETS)
# Called after each stage (and after the head, name "head"); returns the tensor to go on with.
StageHook = Callable[[str, Tensor], Tensor]
# torchvision ResNet parameter names → SimpleBaseline's `stages` (stem = conv1 + bn1).
TORCHVISION_TO_STAGES: dict[str, str] = {"conv1.": "stages.0.0.", "bn1.": "stages.0.1.",
                                         **{f"layer{i}.": f"stages.{i}." for i in range(1, 5)}}


def rename_prefixes(state: dict[str, Tensor], mapping: dict[str, str]) -> dict[str, Tensor]:
    """The entries of `state` whose key starts with a prefix in `mapping`, renamed."""
    out = {}
    for key, value in state.items():
        for src, dst in mapping.items():
            if key.startswith(src):
                out[dst + key[len(src):]] = value
    return out


ENCODER_STRIDE = 32  # the ResNet encoder; inputs must be multiples of it


def check_input_hw(input_hw: tuple[int, int]) -> None:
    """The encoder downsamples by 32 and the head upsamples by 8: any other input size gives
    heatmaps that are not input/4, the size of the targets (a shape error mid-step)."""
    if input_hw[0] % ENCODER_STRIDE or input_hw[1] % ENCODER_STRIDE:
        raise ConfigError(f"input size {input_hw[0]}x{input_hw[1]}: both sides must be "
                          f"multiples of {ENCODER_STRIDE} (e.g. 256x192, 128x96); set "
                          "--input-size accordingly")


class SimpleBaseline(nn.Module):
    """ResNet encoder (output stride 32) + 3 × (deconv 4×4 s2, BN, ReLU) + 1×1 conv.

    Input [N, 3, H, W] normalised RGB → heatmaps [N, K, H/4, W/4].
    """

    def __init__(self, backbone: str = "resnet18", num_joints: int = 17,
                 deconv_channels: int = 256, num_deconv: int = 3) -> None:
        super().__init__()
        if backbone not in _RESNETS:
            raise ConfigError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
        net = _RESNETS[backbone](weights=None)
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleList([stem, net.layer1, net.layer2, net.layer3, net.layer4])
        self.backbone_name = backbone
        self.num_joints = num_joints
        in_ch = net.fc.in_features
        layers: list[nn.Module] = []
        for _ in range(num_deconv):
            layers += [nn.ConvTranspose2d(in_ch, deconv_channels, 4, stride=2, padding=1,
                                          output_padding=0, bias=False),
                       nn.BatchNorm2d(deconv_channels), nn.ReLU(inplace=True)]
            in_ch = deconv_channels
        self.deconv = nn.Sequential(*layers)
        self.final = nn.Conv2d(in_ch, num_joints, kernel_size=1)
        self._init_head()

    def _init_head(self) -> None:
        for m in self.deconv.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.final.weight, std=0.001)
        assert self.final.bias is not None  # built with bias=True above
        nn.init.zeros_(self.final.bias)

    def forward_features(self, x: Tensor, after_stage: StageHook | None = None) -> Tensor:
        """Run the encoder stage by stage; `after_stage(name, x)` may replace each output."""
        for name, stage in zip(STAGE_NAMES, self.stages, strict=True):
            x = stage(x)
            if after_stage is not None:
                x = after_stage(name, x)
        return x

    def head(self, features: Tensor) -> Tensor:
        """Deconvolution head: encoder features [N, C, H/32, W/32] → heatmaps [N, K, H/4, W/4]."""
        return self.final(self.deconv(features))

    def forward(self, x: Tensor, after_stage: StageHook | None = None) -> Tensor:
        out = self.head(self.forward_features(x, after_stage))
        if after_stage is not None:
            out = after_stage("head", out)
        return out

    def load_backbone_weights(self, path: str | Path) -> None:
        """Load ImageNet weights for the ResNet from a local torchvision state_dict file."""
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"{path}: pretrained weights not found; pass a local torchvision "
                                f"{self.backbone_name} state_dict (.pth)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        own = rename_prefixes(state, TORCHVISION_TO_STAGES)
        expected = {k: v.shape for k, v in self.state_dict().items() if k.startswith("stages.")}
        missing_backbone = [k for k, shape in expected.items()
                            if k not in own or own[k].shape != shape]
        if missing_backbone:
            raise ArtifactError(f"{path}: not a {self.backbone_name} state_dict "
                                f"({len(missing_backbone)} backbone tensors missing or mis-shaped, e.g. "
                                f"{missing_backbone[0]}); pass torchvision's ImageNet weights file")
        self.load_state_dict(own, strict=False)


def build_model(backbone: str = "resnet18", num_joints: int = 17,
                pretrained: str | Path | None = None,
                deconv_channels: int = 256) -> SimpleBaseline:
    """Create SimpleBaseline-<backbone>, optionally with ImageNet weights from a local file.

    `deconv_channels` (paper: 256) sets the head's width; at small inputs the head costs
    more than the ResNet, so a narrower head is the cheap lever for CPU training.
    """
    model = SimpleBaseline(backbone, num_joints, deconv_channels)
    if pretrained:
        model.load_backbone_weights(pretrained)
    return model
