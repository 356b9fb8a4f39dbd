"""label_folder: bad inputs never crash a run, batching never changes numbers, shards resume."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from label_helpers import SHARED, write_images
from PIL import Image

from posemum_deploy.label.runner import LabelSettings, RunSettings, label_folder
from posemum_deploy.label.writer import ERRORS_NAME, ResumeError, iter_indexed


def _bad_corpus(folder: Path) -> dict[str, str | None]:
    """Every awkward input we know of → the expected error word (None = labeled)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (60, 40, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "good.jpg"), rgb)
    data = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image\n")
    cv2.imwrite(str(folder / "alpha.png"), rng.integers(0, 255, (50, 30, 4), dtype=np.uint8))
    cv2.imwrite(str(folder / "deep16.png"), rng.integers(0, 65535, (50, 30, 3), dtype=np.uint16))
    cv2.imwrite(str(folder / "gray.png"), rng.integers(0, 255, (50, 30), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    Image.fromarray(rgb).save(folder / "rotated.JPG", exif=exif.tobytes())
    cv2.imwrite(str(folder / "one_pixel.bmp"), np.full((1, 1, 3), 200, np.uint8))
    cv2.imwrite(str(folder / "huge.jpg"), np.full((8000, 10000, 3), 90, np.uint8))
    cv2.imwrite(str(folder / "nobody.webp"), rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    return {"good.jpg": None, "truncated.jpg": "truncated", "empty.jpg": "empty",
            "text.jpg": "not a decodable", "alpha.png": None, "deep16.png": None,
            "gray.png": None, "rotated.JPG": None, "one_pixel.bmp": None, "huge.jpg": None,
            "nobody.webp": None}


def _gt_for(folder: Path, names: list[str], skip: str) -> Path:
    """GT boxes covering each image except `skip` (an image where nobody is found)."""
    images, anns = [], []
    for i, name in enumerate(names):
        images.append({"id": i + 1, "file_name": name, "width": 10000, "height": 10000})
        if name != skip:
            anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                         "bbox": [0, 0, 30, 40]})
    path = folder.parent / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": []}))
    return path


@pytest.mark.parametrize("decode,processes", [("host", 1), ("device", 1),
                                              pytest.param("host", 2, marks=pytest.mark.slow)])
def test_bad_inputs_land_in_output_or_errors(tmp_path: Path, tiny_model: Path, decode: str,
                                             processes: int) -> None:
    expected = _bad_corpus(tmp_path / "images")
    gt = _gt_for(tmp_path / "images", list(expected), skip="nobody.webp")
    out = tmp_path / "out"
    summary = label_folder(tiny_model, tmp_path / "images", out,
                           LabelSettings(boxes=f"gt:{gt}", shard_size=4, decode=decode),
                           RunSettings(batch_size=4, workers=2, processes=processes))
    records = {r["file"]: r for _, r in iter_indexed(out)}
    assert sorted(records) == sorted(expected)  # each file exactly once
    errors = [json.loads(line) for line in (out / ERRORS_NAME).read_text().splitlines()]
    assert sorted(e["file"] for e in errors) == sorted(k for k, v in expected.items() if v)
    for name, word in expected.items():
        if word:
            assert word in records[name]["error"] and name in records[name]["error"]
        else:
            assert "error" not in records[name], records[name]
    assert (records["rotated.JPG"]["width"], records["rotated.JPG"]["height"]) == (60, 40)
    assert (records["huge.jpg"]["width"], records["huge.jpg"]["height"]) == (10000, 8000)
    assert records["nobody.webp"]["persons"] == []
    assert len(records["alpha.png"]["persons"]) == 1
    assert summary.skipped == 3 and summary.images == len(expected)
    person = records["good.jpg"]["persons"][0]
    assert len(person["keypoints"]) == 17 and len(person["joint_scores"]) == 17
    assert set(person) >= {"box", "score", "box_score", "keypoints", "joint_scores"}


def test_batch_size_and_workers_do_not_change_results(tmp_path: Path, tiny_model: Path) -> None:
    write_images(tmp_path / "images", 7)
    outs = []
    for i, (batch, workers) in enumerate([(3, 1), (8, 3)]):
        out = tmp_path / f"out{i}"
        label_folder(tiny_model, tmp_path / "images", out, LabelSettings(shard_size=3),
                     RunSettings(batch_size=batch, workers=workers))
        outs.append([r for _, r in iter_indexed(out)])
    assert [r["file"] for r in outs[0]] == [r["file"] for r in outs[1]]
    for a, b in zip(*outs, strict=True):
        for pa, pb in zip(a["persons"], b["persons"], strict=True):
            np.testing.assert_allclose(pa["keypoints"], pb["keypoints"], atol=0.011)
            np.testing.assert_allclose(pa["joint_scores"], pb["joint_scores"], atol=1e-4)


@pytest.mark.slow
def test_processes_write_the_same_shards_as_one_process(tmp_path: Path, tiny_model: Path) -> None:
    """--processes 2: spawned labelers, each with its own model, take whole shards; the
    shard files are byte for byte those of a one-process run, and a resume mixes both."""
    write_images(tmp_path / "images", 7)
    settings = LabelSettings(shard_size=2)
    one, two = tmp_path / "one", tmp_path / "two"
    label_folder(tiny_model, tmp_path / "images", one, settings,
                 RunSettings(batch_size=3, backend="torch"))
    (one / "shard-00002.jsonl").unlink()
    summary = label_folder(tiny_model, tmp_path / "images", two, settings,
                           RunSettings(batch_size=3, backend="torch", processes=2))
    assert (summary.images, summary.shards_written) == (7, 4)
    assert sum(len(v["shards"]) for v in summary.labelers.values()) == 4
    assert all(v["cpu_s"] > 0 and v["ready_at"] >= v["started_at"]
               for v in summary.labelers.values())
    shards = {p.name: p.read_bytes() for p in two.glob("shard-*.jsonl")}
    assert len(shards) == 4
    resumed = label_folder(tiny_model, tmp_path / "images", one, settings,
                           RunSettings(batch_size=3, backend="torch", processes=2, resume=True))
    assert resumed.shards_written == 1
    assert {p.name: p.read_bytes() for p in one.glob("shard-*.jsonl")} == shards


def test_processes_need_a_backend_name_and_report_load_errors(tmp_path: Path,
                                                              tiny_model: Path) -> None:
    from posemum_deploy.errors import ConfigError
    from posemum_deploy.inference.torch_backend import TorchBackend

    write_images(tmp_path / "images", 2)
    with pytest.raises(ConfigError, match="--processes"):
        label_folder(tiny_model, tmp_path / "images", tmp_path / "a",
                     run=RunSettings(processes=2, backend=TorchBackend(tiny_model, device="cpu")))
    with pytest.raises(ConfigError, match="unknown backend 'nope'"):  # raised in the labeler
        label_folder(tiny_model, tmp_path / "images", tmp_path / "b",
                     run=RunSettings(processes=2, backend="nope"))


def test_resume_redoes_only_missing_shards_and_refuses_changes(tmp_path: Path,
                                                               tiny_model: Path) -> None:
    write_images(tmp_path / "images", 5)
    out = tmp_path / "out"
    settings = LabelSettings(shard_size=2)
    label_folder(tiny_model, tmp_path / "images", out, settings, RunSettings(batch_size=4))
    before = {p.name: p.read_bytes() for p in out.glob("shard-*.jsonl")}
    (out / "shard-00001.jsonl").unlink()
    summary = label_folder(tiny_model, tmp_path / "images", out, settings,
                           RunSettings(batch_size=4, resume=True))
    assert (summary.shards_written, summary.shards_resumed) == (1, 2)
    assert {p.name: p.read_bytes() for p in out.glob("shard-*.jsonl")} == before
    with pytest.raises(ResumeError, match="--resume"):
        label_folder(tiny_model, tmp_path / "images", out, settings)
    with pytest.raises(ResumeError, match="flip"):
        label_folder(tiny_model, tmp_path / "images", out, LabelSettings(shard_size=2, flip=True),
                     RunSettings(resume=True))
    write_images(tmp_path / "images" / "more", 1, seed=5)
    with pytest.raises(ResumeError, match="images.count: 5 -> 6"):
        label_folder(tiny_model, tmp_path / "images", out, settings, RunSettings(resume=True))


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data not found at {SHARED}")
def test_real_photos_full_boxes(tmp_path: Path, tiny_model: Path) -> None:
    out = tmp_path / "out"
    summary = label_folder(tiny_model, SHARED / "unlabeled", out, LabelSettings(shard_size=3))
    records = [r for _, r in iter_indexed(out)]
    assert len(records) == 4 and summary.skipped == 0
    assert all(len(r["persons"]) == 1 for r in records)
    assert {(r["width"], r["height"]) for r in records} >= {(1920, 1080), (298, 299)}


def test_one_stream_over_several_shards_matches_shards_labeled_alone(tmp_path: Path,
                                                                     tiny_model: Path) -> None:
    """A labeling process runs several shards as one decode stream (`label_many`); each
    shard must still come out byte for byte as if labeled alone, with its own counts."""
    from posemum_deploy.label.boxes import parse_box_source
    from posemum_deploy.label.worker import ShardWorker, WorkerSpec

    root = tmp_path / "images"
    files = sorted(p.relative_to(root).as_posix() for p in write_images(root, 7))
    worker = ShardWorker(WorkerSpec(model=str(tiny_model), root=str(tmp_path / "images"),
                                    boxes=parse_box_source("full"), backend="torch",
                                    batch_size=3))
    jobs = [(4, files[:3]), (5, files[3:5]), (6, files[5:])]
    together = list(worker.label_many(jobs))
    alone = [worker.label(index, names) for index, names in jobs]
    assert [r.index for r in together] == [4, 5, 6]
    assert [r.shard.text for r in together] == [r.shard.text for r in alone]
    assert [r.crops for r in together] == [r.crops for r in alone] == [3, 2, 2]
    assert all("infer" in r.seconds for r in together)  # each carries its own stage times


def test_process_tasks_are_long_runs_that_still_balance() -> None:
    from posemum_deploy.label.processes import process_tasks
    from posemum_deploy.label.runner import ShardJob

    todo = [ShardJob(i, [f"{i}.jpg"]) for i in range(100)]
    tasks = process_tasks(todo, processes=4)
    assert [j.index for t in tasks for j in t] == list(range(100))  # in order, each once
    assert len(tasks) == 15 and max(len(t) for t in tasks) == 7  # ~4 runs per labeler
    assert max(len(t) for t in process_tasks(todo * 100, 2)) == 64  # capped
    assert process_tasks([], 3) == []


def test_steady_rate_skips_start_up_and_uses_labeling_time() -> None:
    from posemum_deploy.label.runner import LabelSummary

    # 10 shards of 100 images / 200 crops: the first after a 60 s start-up, then one a
    # second, delivered in any order.
    marks = [(1000.0 + 60 + i, 100, 200) for i in range(10)]
    summary = LabelSummary(images=1000, crops=2000, shard_marks=marks[::-1])
    assert summary.steady_crops_per_s() == pytest.approx(200.0)  # 8 shards in 8 s
    assert LabelSummary(images=100, shard_marks=marks[:1]).steady_crops_per_s() == 0.0


def test_a_gpu_labeler_infers_on_its_own_stream(tiny_model: Path) -> None:
    """Off the default stream, where torchvision's nvjpeg would serialise decode and
    inference; CPU backends need no stream."""
    import torch

    from posemum_deploy.inference.torch_backend import TorchBackend
    from posemum_deploy.label.worker import inference_stream

    assert inference_stream(TorchBackend(tiny_model, device="cpu")) is None
    if torch.cuda.is_available():
        stream = inference_stream(TorchBackend(tiny_model, device="cuda"))
        assert stream is not None and stream != torch.cuda.default_stream()


@pytest.mark.slow
def test_a_labeler_that_dies_ends_the_run_with_an_error_and_keeps_finished_shards(
        tmp_path: Path, tiny_model: Path, monkeypatch) -> None:
    """A spawned labeler killed mid-run (OOM, segfault) must end `label_folder` with an
    error, not a hang; shards written before stay, and a resume redoes only the rest."""
    from concurrent.futures.process import BrokenProcessPool

    from label_helpers import DyingBoxes

    import posemum_deploy.label.runner as runner

    root = tmp_path / "images"
    files = sorted(p.relative_to(root).as_posix() for p in write_images(root, 8))
    monkeypatch.setattr(runner, "parse_box_source", lambda *a, **k: DyingBoxes(files[6]))
    out = tmp_path / "out"
    with pytest.raises(BrokenProcessPool):
        label_folder(tiny_model, root, out, LabelSettings(shard_size=2),
                     RunSettings(backend="torch", processes=2, shards_per_task=1))
    monkeypatch.setattr(runner, "parse_box_source", lambda *a, **k: DyingBoxes("none"))
    resumed = label_folder(tiny_model, root, out, LabelSettings(shard_size=2),
                           RunSettings(backend="torch", processes=2, resume=True))
    assert resumed.shards_written + resumed.shards_resumed == 4
    assert len(list(iter_indexed(out))) == 8


@pytest.mark.slow
def test_a_labeler_error_reaches_the_caller_while_the_others_finish(
        tmp_path: Path, tiny_model: Path, monkeypatch) -> None:
    """An exception in one labeling process (not a bad file: those become error records)
    is raised by `label_folder`; the other processes' shards are still written while it
    stops, and a resume finishes the run."""
    from label_helpers import FailingBoxes

    import posemum_deploy.label.runner as runner

    root = tmp_path / "images"
    files = sorted(p.relative_to(root).as_posix() for p in write_images(root, 12))
    out = tmp_path / "out"
    monkeypatch.setattr(runner, "parse_box_source", lambda *a, **k: FailingBoxes(fatal=files[9]))
    settings = LabelSettings(shard_size=1, decode="device")
    with pytest.raises(RuntimeError, match="box source failed"):
        label_folder(tiny_model, root, out, settings,
                     RunSettings(backend="torch", processes=2, shards_per_task=1))
    monkeypatch.setattr(runner, "parse_box_source", lambda *a, **k: FailingBoxes())
    resumed = label_folder(tiny_model, root, out, settings,
                           RunSettings(backend="torch", processes=2, resume=True))
    assert resumed.shards_resumed >= 1 and len(list(iter_indexed(out))) == 12


def test_run_log_has_a_line_per_shard_and_a_resume_appends(tmp_path: Path,
                                                            tiny_model: Path) -> None:
    """label_log.jsonl: start, one line per written shard (counts, running rate), end; a
    resume appends its own start/shards/end, so the whole job's rate can be plotted."""
    write_images(tmp_path / "images", 7)
    out = tmp_path / "out"
    first = label_folder(tiny_model, tmp_path / "images", out, LabelSettings(shard_size=2),
                         RunSettings(batch_size=3, backend="torch"))
    (out / "shard-00001.jsonl").unlink()
    label_folder(tiny_model, tmp_path / "images", out, LabelSettings(shard_size=2),
                 RunSettings(batch_size=3, backend="torch", resume=True))
    lines = [json.loads(line) for line in (out / "label_log.jsonl").read_text().splitlines()]
    assert [line["event"] for line in lines] == ["start"] + ["shard"] * 4 + ["end",
                                                 "start", "shard", "end"]
    shards = lines[1:5]
    assert [s["shard"] for s in shards] == [0, 1, 2, 3]
    assert [s["images"] for s in shards] == [2, 2, 2, 1]
    assert sum(s["crops"] for s in shards) == first.crops == shards[-1]["done_crops"]
    assert [s["done_images"] for s in shards] == [2, 4, 6, 7]
    assert all(s["images_per_s"] > 0 and s["elapsed_s"] >= 0 for s in shards)
    assert lines[0]["todo"] == 4 and lines[6]["todo"] == 1 and lines[6]["backend"] == "torch"
    assert lines[7]["shard"] == 1 and lines[7]["images"] == 2
    assert lines[8]["images"] == 7 and lines[8]["done_images"] == 2 and lines[8]["complete"]


@pytest.mark.slow
def test_labelers_are_spread_over_gpus_round_robin(tmp_path: Path, tiny_model: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """--processes N --gpus ...: labeler k takes GPU k mod len(gpus) as its only visible
    device, set before anything touches CUDA; the shards are those of any other run."""
    import multiprocessing
    import os
    import queue

    from posemum_deploy.errors import ConfigError
    from posemum_deploy.label import worker
    from posemum_deploy.label.boxes import FullImageBoxes
    from posemum_deploy.label.processes import gpu_slots

    context = multiprocessing.get_context("spawn")
    spec = worker.WorkerSpec(model=str(tiny_model), root=str(tmp_path), boxes=FullImageBoxes(),
                             backend="torch")
    slots = gpu_slots(spec, 5, ["2", "3"], context)
    assert [slots.get(timeout=5) for _ in range(5)] == ["2", "3", "2", "3", "2"]
    assert gpu_slots(spec, 2, [], context) is None  # no GPU: nothing to spread
    pinned = worker.WorkerSpec(model=str(tiny_model), root=str(tmp_path), boxes=FullImageBoxes(),
                               backend="torch", backend_options={"device": "cuda:1"})
    # one device named: keep the view
    assert gpu_slots(pinned, 2, ["0", "1"], context) is None

    # The initializer, in this process: the model is a stand-in that notes what it saw,
    # so nothing here touches CUDA under the narrowed view; the variable is restored.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    monkeypatch.setattr(worker, "_PROCESS_WORKER", {})
    monkeypatch.setattr(worker, "ShardWorker",
                        lambda spec: os.environ["CUDA_VISIBLE_DEVICES"])
    given: queue.Queue = queue.Queue()
    given.put("3")
    worker.init_process(spec, queue.Queue(), given)
    assert worker._PROCESS_WORKER["worker"] == "3"
    monkeypatch.undo()

    write_images(tmp_path / "images", 7)
    settings = LabelSettings(shard_size=2)
    summary = label_folder(tiny_model, tmp_path / "images", tmp_path / "two", settings,
                           RunSettings(batch_size=3, backend="torch", processes=2, gpus=["0", "1"]))
    assert summary.labelers and {v["gpu"] for v in summary.labelers.values()} <= {"0", "1"}
    label_folder(tiny_model, tmp_path / "images", tmp_path / "one", settings,
                 RunSettings(batch_size=3, backend="torch"))
    assert ({p.name: p.read_bytes() for p in (tmp_path / "one").glob("shard-*")} ==
            {p.name: p.read_bytes() for p in (tmp_path / "two").glob("shard-*")})
    with pytest.raises(ConfigError, match="--gpus 0,1 spreads --processes"):
        label_folder(tiny_model, tmp_path / "images", tmp_path / "x",
                     run=RunSettings(gpus=["0", "1"]))
    with pytest.raises(ConfigError, match="Ray gives each of its actors a GPU"):
        label_folder(tiny_model, tmp_path / "images", tmp_path / "x",
                     run=RunSettings(gpus=["0"], engine="ray"))
