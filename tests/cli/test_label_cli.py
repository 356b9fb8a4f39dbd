"""`posemum label/merge/visualize` end to end, including SIGKILL at random points + --resume."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from posemum_deploy.cli.app import app, main
from posemum_deploy.data.datasets import load_instances
from posemum_deploy.label.runner import LabelSettings, RunSettings, label_folder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "label"))
from label_helpers import SHARED, make_checkpoint, write_images  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


def _label_cmd(model: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "posemum_deploy.cli", "label", str(model), str(images),
            "--out", str(out), "--shard-size", "3", "--batch-size", "2", "--workers", "2", *extra]


def _run_and_kill(cmd: list[str], out: Path, shards_seen: int | None, delay: float) -> int:
    """Start the CLI, SIGKILL it once `shards_seen` shard files exist (+ delay); -> rc."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    start = len(list(out.glob("shard-*.jsonl")))
    while proc.poll() is None:
        if shards_seen is None or len(list(out.glob("shard-*.jsonl"))) >= start + shards_seen:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    return proc.wait(timeout=120)


@pytest.mark.slow
def test_sigkill_and_resume_is_exact(tmp_path: Path, model: Path) -> None:
    images = tmp_path / "images"
    write_images(images, 14)
    (images / "part0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    reference = tmp_path / "reference"
    label_folder(model, images, reference, LabelSettings(shard_size=3),
                 RunSettings(batch_size=2, workers=2))
    out = tmp_path / "out"
    rng = random.Random(0)
    kills = []
    # right after the 1st shard appears, then (resumed) at a random moment after the 2nd
    # appears: mid-shard, or between a shard's rename and its manifest entry
    for resume, seen, delay in [(False, 1, 0.0), (True, 1, rng.uniform(0.0, 0.4))]:
        rc = _run_and_kill(_label_cmd(model, images, out, *(["--resume"] if resume else [])),
                           out, seen, delay)
        kills.append(rc)
    assert -signal.SIGKILL in kills, kills  # at least one run really died mid-way
    done = subprocess.run(_label_cmd(model, images, out, "--resume"), cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in reference.glob("shard-*.jsonl"))
    assert names == sorted(p.name for p in out.glob("shard-*.jsonl")) and len(names) == 5
    for name in names:  # identical image for image: nothing lost, nothing duplicated
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert (out / "errors.jsonl").read_text() == (reference / "errors.jsonl").read_text()
    assert "broken.jpg" in (out / "errors.jsonl").read_text()
    assert json.loads((out / "manifest.json").read_text())["complete"] is True
    assert not list(out.glob(".*tmp*"))


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data not found at {SHARED}")
def test_coco_mini_detections_label_merge_visualize(tmp_path: Path, model: Path) -> None:
    mini = SHARED / "coco_mini"
    out, runner = tmp_path / "out", CliRunner()
    result = runner.invoke(app, ["label", str(model), str(mini), "--out", str(out),
                                 "--boxes", f"det:{mini / 'test_coco_det_AP_H_56.json'}",
                                 "--boxes-ann", str(mini / "test_coco.json"), "--box-score", "0.5",
                                 "--max-people", "4", "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    assert "crops/s" in result.output and "skipped" in result.output
    assert "hours per million images" in result.output
    pseudo, results = tmp_path / "pseudo.json", tmp_path / "results.json"
    result = runner.invoke(app, ["merge", str(out), "--out", str(pseudo), "--min-joint-score", "0",
                                 "--min-joints", "1", "--results-out", str(results)])
    assert result.exit_code == 0, result.output
    coco = json.loads(pseudo.read_text())
    assert len(coco["images"]) == 4 and len(coco["annotations"]) >= 4
    ann = coco["annotations"][0]
    assert ann["iscrowd"] == 0 and ann["area"] == pytest.approx(ann["bbox"][2] * ann["bbox"][3])
    assert ann["num_keypoints"] == sum(v == 2 for v in ann["keypoints"][2::3]) and "score" in ann
    instances = load_instances(pseudo, mini, require_keypoints=False)
    assert len(instances) == len(coco["annotations"]) and instances[0].image_path.is_file()
    assert len(json.loads(results.read_text())) == len(coco["annotations"])
    strict = tmp_path / "strict.json"
    runner.invoke(app, ["merge", str(out), "--out", str(strict), "--min-joint-score", "2"])
    assert json.loads(strict.read_text())["annotations"] == []
    vis = tmp_path / "vis"
    result = runner.invoke(app, ["visualize", str(out), "--images", str(mini), "--out", str(vis),
                                 "--n", "2"])
    assert result.exit_code == 0, result.output
    assert len(list(vis.glob("*.jpg"))) == 2


def test_resume_mismatch_is_one_line_error(tmp_path: Path, model: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    write_images(tmp_path / "images", 2)
    out = tmp_path / "out"
    label_folder(model, tmp_path / "images", out, LabelSettings(shard_size=3))
    argv = _label_cmd(model, tmp_path / "images", out, "--resume", "--flip")[2:]
    monkeypatch.setattr(sys, "argv", ["posemum", *argv[1:]])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "cannot resume" in err and "settings.flip: False -> True" in err
    assert "Traceback" not in err
