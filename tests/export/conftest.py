"""Fixtures for export tests: artifacts exported through the CLI from `tiny_ckpt`."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

# tiny_ckpt, coco_mini_dir and the checkpoint builder come from tests/conftest.py.


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
