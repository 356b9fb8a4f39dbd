"""`label --tta / --model` end to end: one process and several write the same shards,
the TTA settings and ensemble are part of the run (resume refuses a change, and resumes
exactly after a SIGKILL), and bad options are one-line errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from label_helpers import make_checkpoint, write_images

from posemum_deploy.errors import ArtifactError, ConfigError
from posemum_deploy.label.runner import LabelSettings, RunSettings, label_folder
from posemum_deploy.label.writer import ResumeError

REPO = Path(__file__).resolve().parents[2]


def _shards(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.glob("shard-*.jsonl")}


@pytest.mark.slow
def test_tta_ensemble_shards_same_for_one_and_two_processes(tmp_path, tiny_model):
    write_images(tmp_path / "images", 5)
    second = make_checkpoint(tmp_path / "second.pt", seed=3)
    settings = LabelSettings(shard_size=2, tta="flip,scales=0.9,1.2", ensemble=[str(second)])
    one, two = tmp_path / "one", tmp_path / "two"
    label_folder(tiny_model, tmp_path / "images", one, settings,
                 RunSettings(batch_size=3, backend="torch"))
    label_folder(tiny_model, tmp_path / "images", two, settings,
                 RunSettings(batch_size=2, backend="torch", processes=2))
    assert _shards(one) == _shards(two) and len(_shards(one)) == 3
    record = json.loads((one / "shard-00000.jsonl").read_text().splitlines()[0])
    assert len(record["persons"][0]["joint_agreement"]) == 17
    manifest = json.loads((one / "manifest.json").read_text())
    assert manifest["settings"]["tta"] == "flip,scales=0.9,1.2"
    assert manifest["model"]["ensemble"][0]["file"] == "second.pt"
    # the views are part of the run: a resume with other views or teachers is refused
    for changed, word in ((LabelSettings(shard_size=2, tta="flip", ensemble=[str(second)]), "tta"),
                          (LabelSettings(shard_size=2, tta="flip,scales=0.9,1.2"), "ensemble")):
        with pytest.raises(ResumeError, match=word):
            label_folder(tiny_model, tmp_path / "images", one, changed, RunSettings(resume=True))


def test_labels_without_tta_keep_their_manifest(tmp_path, tiny_model):
    write_images(tmp_path / "images", 1)
    label_folder(tiny_model, tmp_path / "images", tmp_path / "out", LabelSettings(),
                 RunSettings(batch_size=2, backend="torch"))
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "tta" not in manifest["settings"] and "ensemble" not in manifest["model"]
    record = json.loads((tmp_path / "out" / "shard-00000.jsonl").read_text().splitlines()[0])
    assert "joint_agreement" not in record["persons"][0]


def test_bad_tta_and_ensemble_options_are_one_line_errors(tmp_path, tiny_model):
    write_images(tmp_path / "images", 1)
    images = tmp_path / "images"
    cases = [(LabelSettings(tta="flip,scales=0"), ConfigError, "--tta.*must be > 0"),
             (LabelSettings(tta="mirror"), ConfigError, "--tta 'mirror': cannot read"),
             (LabelSettings(tta="flip", decode="device"), ConfigError, "--decode host"),
             (LabelSettings(ensemble=[str(tmp_path / "nope.pt")]), ArtifactError,
              "--model .*nope.pt: model file not found")]
    for settings, error, words in cases:
        with pytest.raises(error, match=words) as e:
            label_folder(tiny_model, images, tmp_path / "out", settings, RunSettings(backend="torch"))
        assert "\n" not in str(e.value)
    import torch

    from posemum_deploy.artifacts import ModelMetadata
    from posemum_deploy.models.simple_baseline import build_model

    meta = ModelMetadata(input_hw=(64, 48), heatmap_hw=(16, 12))
    torch.save({"model": build_model("resnet18", 17).state_dict(), "teacher": None,
                "model_meta": meta.to_dict()}, tmp_path / "small.pt")
    with pytest.raises(ConfigError, match=r"--model small\.pt: its input size \(64, 48\) differs"):
        label_folder(tiny_model, images, tmp_path / "out2",
                     LabelSettings(ensemble=[str(tmp_path / "small.pt")]),
                     RunSettings(backend="torch"))


def _label_cmd(model: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "posemum_deploy.cli", "label", str(model), str(images),
            "--out", str(out), "--shard-size", "2", "--batch-size", "2", "--workers", "2",
            "--tta", "flip,scales=0.8,1.0,1.25", *extra]


@pytest.mark.slow
def test_sigkill_and_resume_of_a_tta_run_is_exact(tmp_path, tiny_model):
    images = tmp_path / "images"
    write_images(images, 8)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    reference, out = tmp_path / "reference", tmp_path / "out"
    label_folder(tiny_model, images, reference,
                 LabelSettings(shard_size=2, tta="flip,scales=0.8,1.0,1.25"),
                 RunSettings(batch_size=2, workers=2))
    proc = subprocess.Popen(_label_cmd(tiny_model, images, out), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and len(list(out.glob("shard-*.jsonl"))) < 1:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=120) == -signal.SIGKILL  # died mid-run
    assert len(list(out.glob("shard-*.jsonl"))) < 4
    done = subprocess.run(_label_cmd(tiny_model, images, out, "--resume"), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _shards(out) == _shards(reference) and len(_shards(out)) == 4
    assert json.loads((out / "manifest.json").read_text())["complete"] is True


@pytest.mark.slow
def test_ray_engine_labels_tta_ensembles_like_the_local_engine(tmp_path, tiny_model):
    import numpy as np

    ray = pytest.importorskip("ray", reason="ray not installed (pip install 'ray[data]')")
    from posemum_deploy.label.writer import iter_indexed

    write_images(tmp_path / "images", 4)
    second = make_checkpoint(tmp_path / "second.pt", seed=3)
    settings = LabelSettings(shard_size=2, tta="flip,scales=0.9,1.2", ensemble=[str(second)])
    local, cluster = tmp_path / "local", tmp_path / "ray"
    label_folder(tiny_model, tmp_path / "images", local, settings, RunSettings(batch_size=3))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        label_folder(tiny_model, tmp_path / "images", cluster, settings,
                     RunSettings(batch_size=3, engine="ray", ray_actors=1))
    finally:
        ray.shutdown()
    a, b = [r for _, r in iter_indexed(local)], [r for _, r in iter_indexed(cluster)]
    assert [r["file"] for r in a] == [r["file"] for r in b] and len(a) == 4
    for ra, rb in zip(a, b, strict=True):
        for pa, pb in zip(ra["persons"], rb["persons"], strict=True):
            for key in ("keypoints", "joint_scores", "joint_agreement"):
                np.testing.assert_allclose(pa[key], pb[key], atol=1e-4)
