"""`posemum import`, `merge --format yolo`, `convert yolo2coco` and `train --labeled
DATA.yaml` end to end on coco_mini: an imported teacher is an ordinary checkpoint."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torchvision.models import resnet18
from typer.testing import CliRunner

from posemum_deploy.cli.app import app
from posemum_deploy.errors import ArtifactError

runner = CliRunner()


def ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def mmpose_checkpoint(path: Path) -> Path:
    """An mmpose 1.x-style file: torchvision's ResNet-18 names under `backbone.`, a
    HeatmapHead (`deconv_layers` of [deconv, BN, ReLU] x 3, `final_layer`) under `head.`."""
    torch.manual_seed(0)
    body = {f"backbone.{k}": v for k, v in resnet18(weights=None).state_dict().items()
            if not k.startswith("fc.")}
    layers, c = [], 512
    for _ in range(3):
        layers += [nn.ConvTranspose2d(c, 32, 4, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU()]
        c = 32
    head = nn.ModuleDict({"deconv_layers": nn.Sequential(*layers),
                          "final_layer": nn.Conv2d(32, 17, 1)})
    state = {**body, **{f"head.{k}": v for k, v in head.state_dict().items()}}
    torch.save({"meta": {"dataset_meta": {"sigmas": np.full(17, 0.05, np.float32)}},
                "state_dict": state}, path)
    return path


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("import")
    src = mmpose_checkpoint(tmp / "td-hm_res18.pth")
    out = ok("import", str(src), "--out", str(tmp / "model.pt"), "--input-size", "64x64")
    assert "resnet18, 17 joints, input 64x64 → heatmaps 16x16; from mmpose1" in out
    return tmp / "model.pt"


@pytest.mark.slow
def test_imported_checkpoint_evaluates_labels_and_exports(imported: Path, coco_mini: Path,
                                                          tmp_path: Path) -> None:
    ann = coco_mini / "test_coco.json"
    ok("evaluate", "--model", str(imported), "--ann", str(ann), "--images", str(coco_mini),
       "--no-flip", "--json-out", str(tmp_path / "m.json"))
    assert "AP" in json.loads((tmp_path / "m.json").read_text())
    ok("export", str(imported), "--format", "onnx", "--out", str(tmp_path / "onnx"),
       "--check", str(coco_mini))
    exported = json.loads((tmp_path / "onnx" / "model.json").read_text())
    assert exported["extra"]["heatmap_offset"] == 0.0  # the decoding convention travels on
    ok("label", str(imported), str(coco_mini), "--out", str(tmp_path / "run"),
       "--boxes", f"gt:{ann}", "--workers", "1")
    # merge --format yolo: pseudo-labels straight into an Ultralytics dataset
    out = ok("merge", str(tmp_path / "run"), "--out", str(tmp_path / "yolo"), "--format", "yolo",
             "--images", str(coco_mini), "--min-joint-score", "0")
    data = tmp_path / "yolo" / "data.yaml"
    assert str(data) in out and yaml.safe_load(data.read_text())["kpt_shape"] == [17, 3]
    merged = json.loads((tmp_path / "yolo" / "train_coco.json").read_text())
    labels = sorted((tmp_path / "yolo" / "labels" / "train").glob("*.txt"))
    assert len(labels) == len(merged["images"]) == 4
    assert sum(len(p.read_text().splitlines()) for p in labels) == len(merged["annotations"])
    out = ok("convert", "yolo2coco", str(data), "--split", "train", "--out", str(tmp_path / "b.json"))
    assert f"relative to {tmp_path / 'yolo' / 'images' / 'train'}" in out
    back = json.loads((tmp_path / "b.json").read_text())
    assert len(back["annotations"]) == len(merged["annotations"])


def test_train_from_yolo_yaml_warm_started_from_import(imported: Path, coco_mini: Path,
                                                       tmp_path: Path) -> None:
    from posemum_deploy.data.yolo import write_yolo_dataset

    coco = json.loads((coco_mini / "test_coco.json").read_text())
    data = write_yolo_dataset(coco, coco_mini, tmp_path / "yolo", "train")
    run = tmp_path / "run"
    ok("train", "--labeled", str(data), "--val-ann", str(data), "--init-from", str(imported),
       "--out", str(run), "--input-size", "64x64", "--epochs", "1", "--batch-size", "4",
       "--max-steps", "1", "--workers", "0", "--precision", "fp32")
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["config"]["data"]["labeled"] == str(run / "yolo_train.json")
    assert ckpt["config"]["model"]["deconv_channels"] == 32  # adopted from --init-from
    assert ckpt["model"]["deconv.0.weight"].shape[1] == 32


def test_onnx_heatmap_import_cli(tmp_path: Path, coco_mini: Path) -> None:
    model = nn.Sequential(*list(resnet18(weights=None).children())[:-3],
                          nn.ConvTranspose2d(256, 17, 4, 4)).eval()  # stride 4
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 96, 64),), str(tmp_path / "h.onnx"),
                          dynamo=False, opset_version=17, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    out = ok("import", str(tmp_path / "h.onnx"), "--onnx-heatmap", "--input-size", "96x64",
             "--mean", "123.675,116.28,103.53", "--std", "58.395,57.12,57.375",
             "--channel-order", "rgb", "--out", str(tmp_path / "w"))
    assert "input 96x64 → heatmaps 24x16" in out
    ok("evaluate", "--model", str(tmp_path / "w" / "model.onnx"), "--backend", "openvino",
       "--ann", str(coco_mini / "test_coco.json"), "--images", str(coco_mini), "--no-flip",
       "--json-out", str(tmp_path / "m.json"))
    ok("label", str(tmp_path / "w" / "model.onnx"), str(coco_mini), "--out", str(tmp_path / "l"),
       "--backend", "onnxruntime", "--boxes", f"gt:{coco_mini / 'test_coco.json'}")
    records = [json.loads(line) for f in sorted((tmp_path / "l").rglob("*.jsonl"))
               if f.name.startswith("shard") for line in f.read_text().splitlines()]
    assert sum(len(r.get("persons", [])) for r in records) > 0


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    torch.save({"state_dict": [1, 2]}, tmp_path / "x.pth")
    r = runner.invoke(app, ["import", str(tmp_path / "x.pth"), "--out", str(tmp_path / "m.pt")])
    assert isinstance(r.exception, ArtifactError) and "not a state dict" in str(r.exception)
    r = runner.invoke(app, ["import", str(tmp_path / "x.pth"), "--out", str(tmp_path / "m.pt"),
                            "--mean", "1,2"])
    assert "--mean '1,2': expected 3 numbers" in str(r.exception)
    r = runner.invoke(app, ["convert", "coco2yolo", str(tmp_path / "d.yaml"), "--out", "x.json"])
    assert "choose yolo2coco" in str(r.exception)
