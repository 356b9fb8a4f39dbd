"""A rounds run resumed into its RUN_DIR with other settings is refused: its finished
stages (labels, students) are reused by folder and were made for the old settings."""
import json
import subprocess
import sys

import pytest

from posemum_deploy.data.synthetic import generate_dataset
from posemum_deploy.errors import ConfigError
from posemum_deploy.rounds import RoundsConfig, check_same_run, run_rounds
from posemum_deploy.training.config import TrainConfig


def _cfg(out, unlabeled="unl", schedule="restart", **kw) -> RoundsConfig:
    return RoundsConfig(out=str(out), unlabeled=str(unlabeled), schedule=schedule,
                        train=TrainConfig(), **kw)


def test_same_settings_or_speed_knobs_resume(tmp_path):
    cfg = _cfg(tmp_path / "run")
    check_same_run(cfg, tmp_path / "run" / "rounds.yaml")  # nothing saved yet: fine
    (tmp_path / "run").mkdir()
    cfg.save(tmp_path / "run" / "rounds.yaml")
    check_same_run(cfg, tmp_path / "run" / "rounds.yaml")
    faster = _cfg(tmp_path / "moved", label_batch_size=128, rounds=3)
    faster.train.data.workers, faster.train.runtime.device = 4, "cuda"
    check_same_run(faster, tmp_path / "run" / "rounds.yaml")


@pytest.mark.parametrize(("change", "named"), [
    ({"unlabeled": "other"}, "unlabeled: 'unl' -> 'other'"),
    ({"min_joint_score": 0.3}, "min_joint_score: 0.5 -> 0.3"),
    ({"train.optim.lr": 0.01}, "train.optim.lr: 0.001 -> 0.01"),
    ({"schedule": "continue", "rounds": 2}, "rounds: 1 -> 2"),  # continued: rounds split epochs
])
def test_other_settings_are_refused_naming_them(tmp_path, change, named):
    saved = tmp_path / "run" / "rounds.yaml"
    saved.parent.mkdir()
    _cfg(tmp_path / "run", schedule="continue" if "schedule" in change else "restart").save(saved)
    cfg = _cfg(tmp_path / "run")
    for key, value in change.items():
        target = cfg
        *path, last = key.split(".")
        for part in path:
            target = getattr(target, part)
        setattr(target, last, value)
    with pytest.raises(ConfigError) as err:
        check_same_run(cfg, saved)
    message = str(err.value)
    assert "\n" not in message
    assert named in message and str(saved.parent) in message and "new --out" in message


def test_a_run_saved_by_an_older_version_resumes(tmp_path):
    """Settings added since the run was saved are not in its rounds.yaml: not a change."""
    import yaml

    saved = tmp_path / "rounds.yaml"
    data = _cfg(tmp_path).to_dict()
    del data["pseudo_loss_weight"], data["train"]["pseudo"]
    saved.write_text(yaml.safe_dump(data))
    check_same_run(_cfg(tmp_path), saved)


def test_unreadable_rounds_yaml_is_a_clear_error(tmp_path):
    saved = tmp_path / "rounds.yaml"
    saved.write_text("a: [unclosed\n")
    with pytest.raises(ConfigError, match="rounds.yaml: not readable YAML"):
        check_same_run(_cfg(tmp_path), saved)


def test_run_rounds_refuses_before_touching_the_folder(synthetic_small, tmp_path):
    """The refusal comes before rounds.yaml is rewritten or any stage runs."""
    images = synthetic_small.parent / "images"
    train = TrainConfig()
    train.data.labeled = train.data.val_ann = str(synthetic_small)
    train.data.images = train.data.val_images = str(images)
    out = tmp_path / "run"
    out.mkdir()
    RoundsConfig(out=str(out), unlabeled=str(images), schedule="restart",
                 train=train).save(out / "rounds.yaml")
    before = (out / "rounds.yaml").read_text()
    other = RoundsConfig(out=str(out), unlabeled=str(images), schedule="restart",
                         min_joints=2, train=train)
    with pytest.raises(ConfigError, match="min_joints: 6 -> 2"):
        run_rounds(other)
    assert (out / "rounds.yaml").read_text() == before
    assert sorted(p.name for p in out.iterdir()) == ["rounds.yaml"]


@pytest.mark.slow
def test_cli_rerun_with_another_filter_is_refused_and_loses_nothing(synthetic_small, tmp_path):
    """A real tiny run; the same command with another --min-joint-score fails in one line
    naming the folder and leaves every stage as it was; with other --workers (speed
    only) it resumes and reuses every stage."""
    unlabeled = generate_dataset(tmp_path / "unl", 4, seed=5).parent / "images"
    images = str(synthetic_small.parent / "images")
    out = tmp_path / "rounds"

    def cmd(workers: str = "0", *more: str) -> list[str]:
        return [sys.executable, "-m", "posemum_deploy.cli", "rounds", "--labeled",
                str(synthetic_small), "--images", images, "--unlabeled", str(unlabeled),
                "--val-ann", str(synthetic_small), "--val-images", images, "--out", str(out),
                "--rounds", "1", "--backend", "torch", "--boxes", "full", "--input-size", "64x64",
                "--epochs", "1", "--batch-size", "8", "--max-steps", "2", "--workers", workers,
                "--min-instance-score", "0.0", "--min-joints", "1", "--deconv-channels", "64",
                "--no-calibrate", "--tta", "none", *more]

    first = subprocess.run(cmd(), capture_output=True, text=True, timeout=600, check=False)
    assert first.returncode == 0, first.stderr[-3000:]
    stages = (out / "round_1" / "stages.json").read_text()
    assert set(json.loads((out / "inputs.json").read_text())) == {"--labeled", "--val-ann"}
    ckpt = (out / "round_1" / "train" / "checkpoints" / "best.pt").stat().st_mtime_ns

    refused = subprocess.run(cmd("0", "--min-joint-score", "0.3"), capture_output=True, text=True,
                             timeout=600, check=False)
    assert refused.returncode != 0
    line = [ln for ln in refused.stderr.splitlines() if "other settings" in ln]
    assert len(line) == 1 and "min_joint_score: 0.5 -> 0.3" in line[0], refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr
    assert (out / "round_1" / "stages.json").read_text() == stages

    again = subprocess.run(cmd("1"), capture_output=True, text=True,
                           timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "round_1" / "stages.json").read_text()) == json.loads(stages)
    assert (out / "round_1" / "train" / "checkpoints" / "best.pt").stat().st_mtime_ns == ckpt
