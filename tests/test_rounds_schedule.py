"""`rounds --schedule continue`: the rounds together train one LR schedule (round 0 up to
its first milestone, the rounds on the decayed epochs), checked step by step against the
schedule itself, then on a tiny real run."""
import json

import pytest

from posemum_deploy.errors import ConfigError
from posemum_deploy.rounds import (
    RoundsConfig,
    continued_schedule,
    resolve_schedule,
    run_rounds,
)
from posemum_deploy.rounds.schedule import fit_schedule
from posemum_deploy.training.config import OptimConfig, TrainConfig


def _lrs(optim: OptimConfig) -> list[float]:
    """The LR of every step the trainer runs under `optim`: MultiStepLR stepped once per
    epoch, min(epochs × steps/epoch, max_steps) steps."""
    per = optim.steps_per_epoch
    total = optim.epochs * per if not optim.max_steps else min(optim.epochs * per,
                                                                optim.max_steps)
    return [optim.lr * optim.gamma ** sum(m <= s // per for m in optim.milestones)
            for s in range(total)]


@pytest.mark.parametrize("epochs,milestones,max_steps,rounds", [
    (6, (4, 5), 2400, 1), (6, (4, 5), 2400, 2), (30, (20, 25), 700, 3), (7, (3,), 701, 2),
    (30, (20, 25), 95, 1), (12, (5, 9, 11), 1000, 4)])
def test_the_rounds_together_train_the_schedule_once(epochs, milestones, max_steps, rounds):
    optim = OptimConfig(lr=2e-3, epochs=epochs, milestones=milestones, max_steps=max_steps)
    parts = continued_schedule(optim, rounds)
    assert len(parts) == rounds + 1
    whole = _lrs(fit_schedule(optim, max_steps))
    assert [lr for p in parts for lr in _lrs(p)] == pytest.approx(whole)
    assert sum(p.max_steps for p in parts) == max_steps
    # round 0 ends where the LR first decays: every round after it trains below the peak
    assert _lrs(parts[0]) == pytest.approx([2e-3] * len(_lrs(parts[0])))
    assert all(max(_lrs(p)) < 2e-3 for p in parts[1:] if p.max_steps)
    assert optim.max_steps == max_steps and optim.steps_per_epoch is None  # untouched


def test_epoch_length_comes_from_round_0_without_max_steps():
    """No --max-steps: an epoch is one pass over the labeled set, which round 0 measures;
    until it has, only round 0's part exists."""
    optim = OptimConfig(lr=1e-3, epochs=30, milestones=(20, 25))
    first = continued_schedule(optim, 2)
    assert len(first) == 1 and first[0].epochs == 20 and first[0].milestones == ()
    assert first[0].steps_per_epoch is None and first[0].max_steps is None
    r1, r2 = continued_schedule(optim, 2, round0_steps=20 * 7)[1:]
    assert (r1.epochs, r1.steps_per_epoch, r1.milestones, r1.lr) == (5, 7, (), pytest.approx(1e-4))
    assert (r2.epochs, r2.milestones, r2.lr) == (5, (), pytest.approx(1e-5))


def test_a_continued_schedule_warms_up_once_at_its_start():
    """--warmup-steps with --schedule continue: the rounds are one schedule, so round 0
    warms up and the rounds that continue it at the decayed LR do not."""
    optim = OptimConfig(lr=1e-3, epochs=30, milestones=(20, 25), max_steps=600, warmup_steps=50)
    parts = continued_schedule(optim, 2)
    assert [p.warmup_steps for p in parts] == [50, 0, 0]
    assert optim.warmup_steps == 50  # untouched


@pytest.mark.parametrize("optim,rounds,words", [
    (OptimConfig(schedule="cosine"), 1, "step LR schedule"),
    (OptimConfig(epochs=6, milestones=(6,)), 1, "have none inside the 6 epochs"),
    (OptimConfig(epochs=6, milestones=()), 1, "have none inside"),
    (OptimConfig(epochs=6, milestones=(4, 5)), 3, "--rounds 3 needs one each")])
def test_schedules_that_cannot_be_continued_are_refused(optim, rounds, words):
    with pytest.raises(ConfigError, match=words):
        continued_schedule(optim, rounds)


def _cfg(labeled, unlabeled, out, **kw) -> RoundsConfig:
    t = TrainConfig()
    t.data.labeled = t.data.val_ann = str(labeled)
    t.data.images = t.data.val_images = str(labeled.parent / "images")
    t.data.input_hw, t.data.workers = (64, 64), 0
    t.optim.batch_size, t.optim.lr, t.optim.epochs, t.optim.milestones = 4, 1e-3, 3, (2,)
    t.optim.max_steps = 6
    t.runtime.precision, t.runtime.val_every, t.runtime.log_every = "fp32", 0, 1
    kw.setdefault("schedule", "continue")
    return RoundsConfig(out=str(out), unlabeled=str(unlabeled), rounds=1, boxes="full",
                        backend="torch", min_joint_score=0.0, min_instance_score=0.0,
                        min_joints=1, label_batch_size=8, label_flip=False, calibrate=False,
                        label_tta="none", train=t, **kw)


@pytest.mark.parametrize("kw,words", [
    ({"schedule": "resume"}, "--schedule must be one of auto, restart, continue"),
    ({"retrain_max_steps": 5}, "--retrain-max-steps does not apply"),
    ({"init": "scratch"}, "--init scratch does not apply"),
    ({"initial_checkpoint": "x.pt", "max_steps": None}, "needs --max-steps")])
def test_continue_refuses_options_it_cannot_honour(synthetic_small, tmp_path, kw, words):
    max_steps = kw.pop("max_steps", 6)
    cfg = _cfg(synthetic_small, tmp_path, tmp_path / "run", **kw)
    cfg.train.optim.max_steps = max_steps
    with pytest.raises(ConfigError, match=words):
        run_rounds(cfg)
    assert not (tmp_path / "run").exists()


def test_default_schedule_is_auto_and_pseudo_loss_pulls_less():
    """The defaults are the recipe that beat the labeled-only control."""
    cfg = RoundsConfig(out="", unlabeled="")
    assert (cfg.schedule, cfg.pseudo_loss_weight, cfg.rounds) == ("auto", 0.3, 1)


@pytest.mark.parametrize("kw,optim,expected,reason", [
    ({}, {}, "continue", "continue (round 0 trains to the first LR milestone)"),
    ({"schedule": "restart"}, {}, "restart", None),
    ({"initial_checkpoint": "teacher.pt"}, {}, "restart", "a given round-0 teacher"),
    ({"teacher_backbone": "resnet50"}, {}, "continue", "continue"),  # its own round 0
    ({"init": "scratch"}, {}, "restart", "--init scratch"),
    ({"init": "previous"}, {}, "continue", "continue"),
    ({"retrain_max_steps": 5}, {}, "restart", "--retrain-max-steps"),
    ({}, {"schedule": "cosine"}, "restart", "the cosine LR schedule"),
    ({}, {"milestones": ()}, "restart", "no milestone"),
    ({"rounds": 2}, {"epochs": 3, "milestones": (2,)}, "restart", "each of 2 round(s)"),
    ({"rounds": 2}, {"epochs": 4, "milestones": (2,)}, "continue", "continue")])
def test_auto_schedule_continues_wherever_the_run_can_be_one_schedule(
        kw, optim, expected, reason, caplog, tmp_path):
    t = TrainConfig()
    t.model.backbone, t.optim.epochs, t.optim.milestones = "resnet18", 3, (2,)
    for key, value in optim.items():
        setattr(t.optim, key, value)
    cfg = RoundsConfig(out=str(tmp_path), unlabeled=str(tmp_path), train=t, **kw)
    with caplog.at_level("INFO", logger="posemum_deploy.rounds.retrain"):
        assert resolve_schedule(cfg) == expected
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert (reason in logged) if reason else not logged


@pytest.mark.slow
def test_continued_rounds_train_round_0_to_the_milestone_then_decay(synthetic_small, tmp_path):
    """3 epochs of 2 steps (6 steps), LR ×0.1 after epoch 2: round 0 trains 4 steps at
    1e-3, round 1 the last 2 at 1e-4, starting from round 0's model. The default `auto`
    schedule chooses this, and the run's rounds.yaml records `continue`."""
    import yaml

    from posemum_deploy.data.synthetic import generate_dataset

    unlabeled = generate_dataset(tmp_path / "unl", 4, seed=5).parent / "images"
    cfg = _cfg(synthetic_small, unlabeled, tmp_path / "run", schedule="auto")
    records = run_rounds(cfg)
    assert yaml.safe_load((tmp_path / "run" / "rounds.yaml").read_text())["schedule"] == "continue"
    assert cfg.schedule == "auto"  # the caller's config is left as given

    def train_rows(k):
        lines = (tmp_path / "run" / f"round_{k}" / "train" / "metrics.jsonl").read_text()
        return [r for r in map(json.loads, lines.splitlines()) if r["kind"] == "train"]

    r0, r1 = train_rows(0), train_rows(1)
    assert [r["step"] for r in r0] == [1, 2, 3, 4] and {r["lr"] for r in r0} == {1e-3}
    assert [r["step"] for r in r1] == [1, 2] and [r["lr"] for r in r1] == pytest.approx([1e-4] * 2)
    saved = TrainConfig.load(tmp_path / "run" / "round_1" / "train" / "config.yaml")
    assert saved.ssl.init_from == records[0].checkpoint
    assert saved.pseudo.labels  # round 1 trained on mixed batches


def test_cli_schedule_reaches_the_rounds(synthetic_small, tmp_path):
    """`posemum rounds --schedule continue` with one epoch has no LR milestone to end
    round 0 at: exit 2 and one line saying so, before --out is made."""
    import subprocess
    import sys

    images = str(synthetic_small.parent / "images")
    out = tmp_path / "run"
    proc = subprocess.run([
        sys.executable, "-m", "posemum_deploy.cli", "rounds", "--labeled", str(synthetic_small),
        "--images", images, "--unlabeled", images, "--val-ann", str(synthetic_small),
        "--val-images", images, "--out", str(out), "--epochs", "1", "--schedule", "continue"],
        capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "--schedule continue ends round 0 at the first LR milestone" in lines[0]
    assert not out.exists()
