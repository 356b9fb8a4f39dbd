"""MAC counting: hand-computed layers, the SimpleBaseline figure in DESIGN.md, the
sub-pixel rewrite's exact overhead."""
from __future__ import annotations

import pytest
from torch import nn

from posemum_deploy.export.onnx import runtime_graph
from posemum_deploy.models.complexity import count_macs
from posemum_deploy.models.simple_baseline import build_model


def test_hand_computed_layers() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),           # 3·9·8 per pixel, 4×5
                        nn.ConvTranspose2d(8, 4, 4, 2, 1),                 # 8·16·4 per input pixel
                        nn.Conv2d(4, 4, 3, padding=1, groups=2),           # (4/2)·9·4 per pixel, 8×10
                        nn.Flatten(), nn.Linear(4 * 8 * 10, 7))
    expected = 3 * 9 * 8 * 20 + 8 * 16 * 4 * 20 + 2 * 9 * 4 * 80 + 320 * 7
    assert count_macs(net, (4, 5)) == expected
    assert net.training  # mode restored, hooks removed
    assert all(not m._forward_hooks for m in net.modules())


def test_simple_baseline_r18_matches_design() -> None:
    # DESIGN.md: ResNet-18 SimpleBaseline at 256×192 is 5.8 GFLOP (2 × MAC).
    macs = count_macs(build_model("resnet18"), (256, 192))
    assert 2 * macs / 1e9 == pytest.approx(5.8, abs=0.1)


def test_subpixel_rewrite_costs_one_padded_row_and_column() -> None:
    model = build_model("resnet18", deconv_channels=32).eval()
    h, w = 128, 96
    plain, rewritten = count_macs(model, (h, w)), count_macs(runtime_graph(model), (h, w))
    extra = 0
    for c_in, (hi, wi) in ((512, (h // 32, w // 32)), (32, (h // 16, w // 16)), (32, (h // 8, w // 8))):
        # deconv: c_in·32·16 per input pixel; rewrite: a 2×2 conv to 4·32 on (H+1)×(W+1)
        extra += c_in * 4 * 32 * 4 * ((hi + 1) * (wi + 1) - hi * wi)
    assert rewritten - plain == extra
