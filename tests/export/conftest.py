"""Fixtures for export tests: a fixed random-weights checkpoint with a tiny input."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from posemum_deploy.artifacts import ModelMetadata
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


@dataclass
class Exported:
    """An artifact exported through the CLI, with what the CLI printed."""

    artifact: Path
    output: str

    @property
    def sidecar(self) -> Path:
        return self.artifact.with_suffix(".json")

    @property
    def meta(self) -> dict:
        return json.loads(self.sidecar.read_text())

    @property
    def report(self) -> dict:
        return self.meta["extra"].get("parity") or self.meta["extra"].get("accuracy")


def cli_export(*args: str) -> str:
    from typer.testing import CliRunner

    from posemum_deploy.cli.app import app

    result = CliRunner().invoke(app, ["export", *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


@pytest.fixture(scope="session")
def tiny_onnx(tiny_ckpt: Path, coco_mini_dir: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Exported:
    """`posemum export tiny.pt --format onnx`, parity-checked on coco_mini's GT crops."""
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    output = cli_export(str(tiny_ckpt), "--format", "onnx", "--out", str(out), "--opset", "17",
                        "--check", str(coco_mini_dir / "test_coco.json"))
    return Exported(out, output)


@pytest.fixture(scope="session")
def tiny_int8(tiny_onnx: Exported, coco_mini_dir: Path) -> Exported:
    """`posemum export model.onnx --format onnx-int8 --calib coco_mini/test_coco.json`."""
    out = tiny_onnx.artifact.with_name("model_int8.onnx")
    output = cli_export(str(tiny_onnx.artifact), "--format", "onnx-int8", "--out", str(out),
                        "--calib", str(coco_mini_dir / "test_coco.json"))
    return Exported(out, output)
