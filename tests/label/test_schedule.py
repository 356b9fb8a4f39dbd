"""The CPU labeling schedule (inference on its own thread, `ShardLabeler(pipelined=True)`)
writes byte-identical shards to the sequential path it replaced, for ONNX Runtime and
OpenVINO, on real COCO images with several batches per shard and crops packed across
images; and the runtimes' threads are the ones asked for."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from posemum_deploy.artifacts import ModelMetadata
from posemum_deploy.export.onnx import export_network, finish_sidecar
from posemum_deploy.label.runner import LabelSettings, RunSettings, label_folder
from posemum_deploy.models.simple_baseline import build_model

COCO_MINI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "coco_mini"
HW = (128, 96)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One random network as ONNX Runtime's graph and as OpenVINO's (fp32 ONNX + sidecar)."""
    if not COCO_MINI.is_dir():
        pytest.skip(f"shared test data not found at {COCO_MINI}")
    torch.manual_seed(0)
    model = build_model("resnet18", 17).eval()
    torch.nn.init.normal_(model.final.weight, std=0.05)  # clear maxima, like a trained head
    meta = ModelMetadata(input_hw=HW, heatmap_hw=(HW[0] // 4, HW[1] // 4))
    work = tmp_path_factory.mktemp("schedule")
    paths = {}
    for kind, graph in (("onnxruntime", "subpixel-deconv"), ("openvino", "convtranspose")):
        path = work / f"{graph}.onnx"
        export_network(model, meta, path, 17, graph)
        finish_sidecar(path, meta, "onnx", "fp32", ("torch", "onnx"))
        paths[kind] = path
    return paths


def _label(model: Path, backend: str, out: Path, pipeline: bool, **options):
    settings = LabelSettings(boxes=f"gt:{COCO_MINI / 'test_coco.json'}", shard_size=3)
    run = RunSettings(backend=backend, backend_options={"threads": 2, **options}, batch_size=5,
                      workers=1, pipeline=pipeline)
    return label_folder(model, COCO_MINI, out, settings, run)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_pipelined_inference_writes_the_same_shards(exports, backend, tmp_path) -> None:
    pytest.importorskip(backend)
    model = exports[backend]
    before = _label(model, backend, tmp_path / "sequential", pipeline=False)
    after = _label(model, backend, tmp_path / "pipelined", pipeline=True)
    assert "wait_for_infer" in after.stage_seconds  # the new path really ran
    assert "wait_for_infer" not in before.stage_seconds
    assert (after.images, after.crops) == (before.images, before.crops) == (4, 14)
    old = {p.name: p.read_bytes() for p in (tmp_path / "sequential").glob("shard-*.jsonl")}
    new = {p.name: p.read_bytes() for p in (tmp_path / "pipelined").glob("shard-*.jsonl")}
    assert len(old) == 2 and new == old
    assert b'"persons": []' not in b"".join(old.values())  # people were labeled


def test_two_openvino_streams_label_two_batches_at_once_with_the_same_shards(exports, tmp_path
                                                                            ) -> None:
    """streams=2 (one thread each): the labeler keeps a batch in each stream, each calling
    thread with its own request; the shards equal the sequential path's on that backend."""
    pytest.importorskip("openvino")
    from posemum_deploy.label.boxes import FullImageBoxes
    from posemum_deploy.label.worker import ShardWorker, WorkerSpec

    spec = WorkerSpec(model=str(exports["openvino"]), root=str(COCO_MINI), boxes=FullImageBoxes(),
                      backend="openvino", backend_options={"threads": 2, "streams": 2})
    assert ShardWorker(spec).inflight == 2
    model = exports["openvino"]
    before = _label(model, "openvino", tmp_path / "sequential", False, streams=2)
    after = _label(model, "openvino", tmp_path / "pipelined", True, streams=2)
    assert "wait_for_infer" in after.stage_seconds and after.crops == before.crops == 14
    old = {p.name: p.read_bytes() for p in (tmp_path / "sequential").glob("shard-*.jsonl")}
    new = {p.name: p.read_bytes() for p in (tmp_path / "pipelined").glob("shard-*.jsonl")}
    assert len(old) == 2 and new == old


def test_hours_per_million_images_from_the_steady_rate() -> None:
    from posemum_deploy.label.summary import LabelSummary, hours_per_million_images

    # 10 shards of 100 images: the first after a 60 s start-up, then one every 2 s.
    marks = [(1000.0 + 60 + 2 * i, 100, 150) for i in range(10)]
    summary = LabelSummary(images=1000, crops=1500, shard_marks=marks[::-1])
    assert summary.steady_images_per_s() == pytest.approx(50.0)  # 800 images in 16 s
    assert summary.steady_crops_per_s() == pytest.approx(75.0)
    assert hours_per_million_images(summary.steady_images_per_s()) == pytest.approx(1e6 / 50 / 3600)
    assert hours_per_million_images(0.0) == float("inf")
