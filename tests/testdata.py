"""Where the tests' shared data lives, and the one builder of tiny checkpoints.

Plain module (not a conftest) so test modules can import the constants they need at
import time, e.g. for skip marks: `from testdata import SHARED_DATA`. pytest puts tests/ on
sys.path when it loads tests/conftest.py, which wraps these in fixtures.
"""
from __future__ import annotations

from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
COCO_MINI = SHARED_DATA / "coco_mini"
NO_SHARED_DATA = f"shared test data not found at {SHARED_DATA}"


def make_checkpoint(path: Path, input_hw: tuple[int, int] = (128, 96), seed: int = 0,
                    spread_deconv: bool = True, backbone: str = "resnet18") -> Path:
    """A posemum checkpoint (model, teacher, model_meta, config) of SimpleBaseline with
    fixed random weights, as `load_model` and `posemum train` read one.

    The head weights are scaled up from their 0.001 init so heatmaps have clear maxima
    (decoded keypoints must not hinge on float noise between runtimes). `spread_deconv`
    also spreads the deconv weights and randomises BN running stats, so folding BN is
    actually exercised (the export tests); without it only the head is touched (the
    labeling tests' model).
    """
    from posemum_deploy.artifacts import ModelMetadata
    from posemum_deploy.models.simple_baseline import build_model

    torch.manual_seed(seed)
    model = build_model(backbone)
    with torch.no_grad():
        if spread_deconv:
            for m in model.deconv.modules():
                if isinstance(m, torch.nn.ConvTranspose2d):
                    m.weight.normal_(0, 0.05)
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 2.0)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.1)
        model.final.weight.normal_(0, 0.05)
    meta = ModelMetadata(backbone=backbone, input_hw=input_hw,
                         heatmap_hw=(input_hw[0] // 4, input_hw[1] // 4))
    state = model.state_dict()
    torch.save({"model": state, "teacher": state, "model_meta": meta.to_dict(),
                "config": {"data": {"val_ann": str(COCO_MINI / "test_coco.json")}}}, path)
    return path
