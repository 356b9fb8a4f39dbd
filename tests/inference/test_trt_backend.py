"""TensorRT on a GPU: FP16 engine parity with torch (heatmaps, AP). Skips without one."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from testdata import COCO_MINI, make_checkpoint

from posemum_deploy.data.coco import load_coco_keypoints
from posemum_deploy.export.calibration import calibration_crops
from posemum_deploy.export.formats import ExportOptions, export_model
from posemum_deploy.inference.trt_backend import TrtBackend

SHARED = COCO_MINI
AVAILABLE, WHY = TrtBackend.is_available()
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not AVAILABLE, reason=f"TensorRT/GPU unavailable: {WHY}"),
              pytest.mark.skipif(not SHARED.is_dir(), reason=f"no shared data at {SHARED}")]


def _checkpoint(path: Path) -> Path:
    """SimpleBaseline-R18 at 256x192 with fixed random weights (peaky head)."""
    return make_checkpoint(path, input_hw=(256, 192), spread_deconv=False)


@pytest.fixture(scope="module")
def fp16_engine(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("trt")
    ckpt = _checkpoint(root / "r18.pt")
    result = export_model(ckpt, "tensorrt", root / "model.engine",
                          ExportOptions(fp16=True, batch=(1, 8, 16), cache_dir=root / "cache",
                                        check=SHARED / "test_coco.json"))
    return ckpt, result


def test_fp16_heatmap_parity(fp16_engine) -> None:
    from posemum_deploy.inference.pipeline import PoseEstimator
    from posemum_deploy.inference.torch_backend import TorchBackend

    ckpt, result = fp16_engine
    crops = calibration_crops(SHARED / "test_coco.json", (256, 192))
    trt_est = PoseEstimator(TrtBackend(result.artifact), batch_size=8)
    ref_est = PoseEstimator(TorchBackend(ckpt, device="cuda"), batch_size=8)
    assert np.abs(trt_est.heatmaps(crops) - ref_est.heatmaps(crops)).max() <= 1e-2


def test_fp16_ap_parity_and_engine_cache(fp16_engine, tmp_path: Path) -> None:
    from posemum_deploy.evaluation.coco_eval import evaluate_results
    from posemum_deploy.inference.predict import predict_coco

    ckpt, result = fp16_engine
    ann = SHARED / "test_coco.json"
    load_coco_keypoints(ann)
    aps = [evaluate_results(ann, predict_coco(m, ann, SHARED, batch_size=8))["AP"]
           for m in (ckpt, result.artifact)]
    assert abs(aps[0] - aps[1]) <= 0.005
    again = export_model(result.artifact.with_name("model.fp32.onnx"), "tensorrt",
                         tmp_path / "again.engine",
                         ExportOptions(fp16=True, batch=(1, 8, 16),
                                       cache_dir=Path(result.report["cached"]).parents[1]))
    assert again.report["cached"] == result.report["cached"]  # same key: no rebuild
    assert torch.cuda.is_available()
