import json
import os
import signal
import subprocess
import sys
import time

import pytest

from posemum_deploy.data.synthetic import generate_dataset


def _cmd(labeled, unlabeled_dir, out):
    images = str(labeled.parent / "images")
    return [sys.executable, "-m", "posemum_deploy.cli", "rounds", "--labeled", str(labeled),
            "--images", images, "--unlabeled", str(unlabeled_dir), "--val-ann", str(labeled),
            "--val-images", images, "--out", str(out), "--rounds", "2", "--backend", "torch",
            "--boxes", "full", "--input-size", "64x64", "--epochs", "1", "--batch-size", "8",
            "--max-steps", "2", "--workers", "0", "--min-joint-score", "0.0",
            "--min-instance-score", "0.0", "--min-joints", "1", "--deconv-channels", "64",
            "--lr", "2e-3", "--no-calibrate", "--tta", "none"]


def _wait_for(path, key, proc, timeout=600):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if path.is_file():
            try:
                if key in json.loads(path.read_text()):
                    return True
            except json.JSONDecodeError:
                pass
        if proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_rounds_killed_between_stages_resume_and_reuse(synthetic_small, tmp_path):
    unlabeled = generate_dataset(tmp_path / "unl", 8, seed=11).parent / "images"
    out = tmp_path / "rounds"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen(_cmd(synthetic_small, unlabeled, out), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    reached = _wait_for(out / "round_1" / "stages.json", "label", proc)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert reached, proc.stderr.read().decode()[-2000:]
    before = json.loads((out / "round_1" / "stages.json").read_text())
    manifest_mtime = (out / "round_1" / "labels" / "manifest.json").stat().st_mtime_ns
    round0_ckpt = (out / "round_0" / "train" / "checkpoints" / "best.pt").stat().st_mtime_ns

    done = subprocess.run(_cmd(synthetic_small, unlabeled, out), env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    after = json.loads((out / "round_1" / "stages.json").read_text())
    assert after["label"] == before["label"]  # not redone
    assert (out / "round_1" / "labels" / "manifest.json").stat().st_mtime_ns == manifest_mtime
    assert (out / "round_0" / "train" / "checkpoints" / "best.pt").stat().st_mtime_ns == round0_ckpt
    for k in (1, 2):
        stages = json.loads((out / f"round_{k}" / "stages.json").read_text())
        assert set(stages) == {"export", "label", "merge", "train", "evaluate"}  # no calibrate
        assert (out / f"round_{k}" / "pseudo.json").is_file()
        assert (out / f"round_{k}" / "metrics.json").is_file()
        assert (out / f"round_{k}" / "train" / "checkpoints" / "best.pt").is_file()
    # round 2's teacher is round 1's retrained checkpoint
    r2 = json.loads((out / "round_2" / "stages.json").read_text())
    assert r2["export"]["artifact"].endswith("round_1/train/checkpoints/best.pt")
    rows = json.loads((out / "rounds.json").read_text())
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert (out / "rounds.png").stat().st_size > 1000
    assert "round 2: val AP" in done.stderr + done.stdout


def _coco(n_images, persons_per_image):
    images = [{"id": i + 1, "file_name": f"{i:03d}.jpg", "width": 64, "height": 64}
              for i in range(n_images)]
    anns = [{"id": i * persons_per_image + j + 1, "image_id": i + 1,
             "category_id": 1, "bbox": [1, 1, 10, 20], "area": 200.0, "iscrowd": 0,
             "num_keypoints": 17, "keypoints": [5, 5, 2] * 17}
            for i in range(n_images) for j in range(persons_per_image)]
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person"}]}


@pytest.mark.parametrize("repeat, expected_labeled", [(1, 2), (3, 6), (None, 6)])
def test_combined_set_repeats_labeled_persons(tmp_path, repeat, expected_labeled):
    from posemum_deploy.rounds import combine_labeled_and_pseudo

    (tmp_path / "l.json").write_text(json.dumps(_coco(2, 1)))   # 2 labeled persons
    (tmp_path / "p.json").write_text(json.dumps(_coco(3, 2)))   # 6 pseudo-labeled persons
    out = combine_labeled_and_pseudo(tmp_path / "l.json", tmp_path / "li", tmp_path / "p.json",
                                     tmp_path / "pi", tmp_path / "c.json", labeled_repeat=repeat)
    coco = json.loads(out.read_text())
    labeled_ids = {im["id"] for im in coco["images"] if "/li/" in im["file_name"]}
    n_labeled = sum(a["image_id"] in labeled_ids for a in coco["annotations"])
    assert n_labeled == expected_labeled
    assert len(coco["annotations"]) == expected_labeled + 6
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    assert len(coco["images"]) == 5


@pytest.mark.parametrize("max_steps,epochs", [(700, 120), (700, 40), (2040, 120), (5, 30), (701, 7)])
def test_retraining_schedule_trains_exactly_max_steps(max_steps, epochs):
    from posemum_deploy.rounds import fit_schedule
    from posemum_deploy.training.config import OptimConfig

    base = OptimConfig(epochs=epochs, milestones=(round(epochs * 0.75), round(epochs * 0.92)))
    fit = fit_schedule(base, max_steps)
    per, n = fit.steps_per_epoch, fit.epochs
    # the trainer runs min(epochs × steps/epoch, max_steps) steps: exactly max_steps, with
    # only the last epoch partial, and the milestones at the same fractions of the run
    assert fit.max_steps == max_steps and n * per >= max_steps > (n - 1) * per
    for old, new in zip(base.milestones, fit.milestones, strict=True):
        assert abs(new / n - old / epochs) <= 0.5 / n + 1e-9 or new == 1
    assert base.steps_per_epoch is None and base.max_steps is None  # the input is untouched
    kept = fit_schedule(OptimConfig(steps_per_epoch=3), 100)
    assert (kept.steps_per_epoch, kept.epochs, kept.max_steps) == (3, 30, 100)


def test_rounds_refuse_bad_inputs_before_run_dir(synthetic_small, tmp_path):
    """A wrong path fails at once, naming its option, and makes no RUN_DIR (it failed only
    at round 1's label stage, after round 0 trained)."""
    from posemum_deploy.errors import ConfigError
    from posemum_deploy.rounds import RoundsConfig, run_rounds
    from posemum_deploy.training.config import TrainConfig

    (tmp_path / "empty" / "sub").mkdir(parents=True)
    train = TrainConfig()
    train.data.labeled = train.data.val_ann = str(synthetic_small)
    train.data.images = train.data.val_images = str(synthetic_small.parent / "images")
    cases = {"nodir": "not a folder \\(given as --unlabeled\\)",
             str(tmp_path / "empty"): "no images .* nothing to pseudo-label"}
    for unlabeled, message in cases.items():
        cfg = RoundsConfig(out=str(tmp_path / "run"), unlabeled=unlabeled, train=train)
        with pytest.raises(ConfigError, match=message):
            run_rounds(cfg)
    train.data.val_ann = str(tmp_path / "val.json")
    cfg = RoundsConfig(out=str(tmp_path / "run"), unlabeled=str(train.data.images), train=train)
    with pytest.raises(ConfigError, match="val.json: file not found \\(given as --val-ann\\)"):
        run_rounds(cfg)
    train.data.val_ann = str(synthetic_small)
    for bad, message in (({"calibrate_search": "both"}, "--calibrate-search both: use each"),
                         ({"calibrate_z": -1.0}, "--calibrate-z -1.0: standard errors"),
                         ({"calibrate_precision": 0.0}, "--calibrate-precision 0.0: must be")):
        cfg = RoundsConfig(out=str(tmp_path / "run"), unlabeled=str(train.data.images),
                           train=train, **bad)
        with pytest.raises(ConfigError, match=message):
            run_rounds(cfg)
    assert not (tmp_path / "run").exists()
