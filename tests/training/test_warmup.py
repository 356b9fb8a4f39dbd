"""Linear LR warmup (optim.warmup_steps): the ramp, its handover to the per-epoch
schedule across an epoch boundary, and a real training that logs it."""
import json

import pytest
import torch
from test_trainer import _cfg

from posemum_deploy.errors import ConfigError
from posemum_deploy.training.optimizer import WARMUP_START, WarmupLR


def _lrs(steps_per_epoch: int, epochs: int, warmup: int) -> list[float]:
    """The lr of every step of a loop shaped like the trainer's."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=1.0)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [1], 0.1)
    ramp = WarmupLR(optimizer, scheduler, warmup)
    seen, done = [], 0
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            ramp.before_step(done)
            seen.append(optimizer.param_groups[0]["lr"])
            done += 1
        ramp.restore()
        scheduler.step()
    return seen


def test_warmup_ramps_linearly_then_hands_over_to_the_schedule():
    """Warmup over 4 steps, epochs of 3 with ×0.1 after the first: the ramp crosses the
    milestone and scales the decayed lr; after it the schedule's lr is exact (not the
    warmed value compounded by the scheduler's chainable step)."""
    f = [WARMUP_START + (1 - WARMUP_START) * k / 4 for k in range(4)]
    expected = [f[0], f[1], f[2], 0.1 * f[3], 0.1, 0.1, 0.1, 0.1, 0.1]
    assert _lrs(3, 3, 4) == pytest.approx(expected, rel=1e-12)
    assert _lrs(3, 3, 0) == pytest.approx([1, 1, 1] + [0.1] * 6, rel=1e-12)  # off


def test_negative_warmup_is_a_clear_error():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=1.0)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [1], 0.1)
    with pytest.raises(ConfigError, match="warmup_steps must be >= 0"):
        WarmupLR(optimizer, scheduler, -1)


def test_training_logs_the_warmed_lr(synthetic_small, tmp_path):
    """A real run with warmup_steps 3: the logged lr rises from 0.001× to the base lr at
    step 4 and stays there, and the run trains every step."""
    cfg = _cfg(synthetic_small, tmp_path / "run", steps_per_epoch=2, warmup_steps=3)
    cfg.optim.epochs, cfg.optim.milestones, cfg.runtime.val_every = 3, (), 0
    assert train_steps(cfg) == 6
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if r["kind"] == "train"]
    base = cfg.optim.lr
    ramp = [base * (WARMUP_START + (1 - WARMUP_START) * k / 3) for k in range(3)]
    assert lrs == pytest.approx(ramp + [base] * 3, rel=1e-9)


def train_steps(cfg) -> int:
    from posemum_deploy.training.trainer import train

    return train(cfg).steps
