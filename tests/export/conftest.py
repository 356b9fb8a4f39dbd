"""Fixtures for export tests: a fixed random-weights checkpoint with a tiny input."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from posemum_deploy.export.metadata import ModelMetadata
from posemum_deploy.models.simple_baseline import build_model

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
COCO_MINI = SHARED / "coco_mini"


def make_checkpoint(path: Path, input_hw: tuple[int, int] = (128, 96), seed: int = 0) -> Path:
    """A posemum checkpoint of SimpleBaseline-R18 with fixed random weights.

    Head weights are scaled up from their 0.001 init so heatmaps have clear maxima
    (decoded keypoints must not hinge on float noise between runtimes), and BN running
    stats are randomised so folding them is actually exercised.
    """
    torch.manual_seed(seed)
    model = build_model("resnet18")
    with torch.no_grad():
        for m in model.deconv.modules():
            if isinstance(m, torch.nn.ConvTranspose2d):
                m.weight.normal_(0, 0.05)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
        model.final.weight.normal_(0, 0.05)
    meta = ModelMetadata(backbone="resnet18", input_hw=input_hw,
                         heatmap_hw=(input_hw[0] // 4, input_hw[1] // 4))
    state = model.state_dict()
    torch.save({"model": state, "teacher": state, "model_meta": meta.to_dict(),
                "config": {"data": {"val_ann": str(COCO_MINI / "test_coco.json")}}}, path)
    return path


@pytest.fixture(scope="session")
def coco_mini_dir() -> Path:
    if not COCO_MINI.is_dir():
        pytest.skip(f"shared test data not found at {COCO_MINI}")
    return COCO_MINI


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="session")
def tiny_onnx(tiny_ckpt: Path, coco_mini_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """(ExportResult) of the tiny checkpoint exported to ONNX, parity-checked on coco_mini."""
    from posemum_deploy.export.formats import ExportOptions, export_model

    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return export_model(tiny_ckpt, "onnx", out,
                        ExportOptions(check=coco_mini_dir / "test_coco.json"))
