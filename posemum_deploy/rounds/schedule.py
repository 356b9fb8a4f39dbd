"""How the rounds spend the LR schedule: restarted per round, or continued across rounds.

`restart`: every retraining runs the whole step schedule again over its step budget
(`fit_schedule`). `continue`: the run is one schedule. Round 0 trains it up
to its first LR milestone, where the model is as good as the high LR gets it and the
labeled-only control would start decaying; its labels feed round 1, which continues the
same schedule at the decayed LR from round 0's weights; the epochs after the milestone
are split evenly between the rounds (`continued_schedule`). The whole run then costs one
schedule, so its equal-compute control is that schedule trained labeled-only.

Why: on the synthetic rounds benchmark a student that restarts the schedule at its peak
LR loses to the labeled-only control, which spends those steps decaying; the continued
schedule beat the better labeled-only schedule by +0.46 ± 0.17 AP over five seeds, four
of which gained (docs/experiments/rounds-recipe.md, "Pilot 9" and "The continued
schedule as a mode"). `auto`, the default, is `continue` wherever the run can be one
schedule and `restart` where it cannot (a given teacher, a cosine schedule:
`rounds.retrain.resolve_schedule`). A student of another backbone than the teacher's
cannot continue the teacher: the run then trains the teacher through the whole schedule
and the student's own round 0 up to the milestone, which the rounds continue (Data
Distillation labels with a converged teacher; the student's steps are one schedule).
"""
from __future__ import annotations

import copy
from itertools import pairwise

from posemum_deploy.errors import ConfigError
from posemum_deploy.training.config import OptimConfig

SCHEDULES = ("restart", "continue")
AUTO = "auto"  # the default: continue where the run can be one schedule, else restart


def fit_schedule(optim: OptimConfig, max_steps: int) -> OptimConfig:
    """A copy of `optim` that trains exactly `max_steps` steps over its schedule.

    Retraining passes see far more crops per epoch than the labeled-only round 0, so they
    are bounded by steps. Epochs of ceil(max_steps / epochs) steps, and as many of them
    as `max_steps` needs (the last one may be partial), with the milestones scaled to the
    new epoch count: the step or cosine schedule keeps its shape and ends on time. An
    explicit `steps_per_epoch` is kept as given (then `max_steps` only stops training).
    """
    optim = copy.deepcopy(optim)
    optim.max_steps = max_steps
    if optim.steps_per_epoch:
        return optim
    per_epoch = -(-max_steps // optim.epochs)
    epochs = -(-max_steps // per_epoch)
    optim.milestones = tuple(max(1, round(m * epochs / optim.epochs)) for m in optim.milestones)
    optim.epochs, optim.steps_per_epoch = epochs, per_epoch
    return optim


def round_bounds(optim: OptimConfig, rounds: int) -> list[int]:
    """Epoch boundaries of a continued schedule: [0, first milestone, …, epochs]; round k
    trains epochs [bounds[k], bounds[k + 1]). The epochs after the first milestone are
    split as evenly as whole epochs allow."""
    if optim.schedule != "step":
        raise ConfigError(f"--schedule continue needs the step LR schedule (milestones), not "
                          f"{optim.schedule!r}; use --schedule restart")
    first = min((m for m in optim.milestones if 0 < m < optim.epochs), default=None)
    if first is None:
        raise ConfigError(f"--schedule continue ends round 0 at the first LR milestone, and "
                          f"milestones {tuple(optim.milestones)} have none inside the "
                          f"{optim.epochs} epochs; give a milestone or use --schedule restart")
    after = optim.epochs - first
    if rounds < 1 or after < rounds:
        raise ConfigError(f"--schedule continue splits the {after} epochs after the first "
                          f"milestone between the rounds, and --rounds {rounds} needs one each; "
                          "train more epochs or run fewer rounds")
    return [0] + [first + round(k * after / rounds) for k in range(rounds + 1)]


def schedule_segment(optim: OptimConfig, start: int, end: int) -> OptimConfig:
    """Epochs [start, end) of `optim`'s step schedule as a schedule of its own: the LR
    already multiplied by gamma for every milestone at or before `start`, the milestones
    inside shifted to start at 0, and `max_steps` cut to the part of the total inside the
    segment. Epoch length must be fixed (`steps_per_epoch`) unless the segment starts at 0
    (round 0, whose trainer then makes an epoch one pass over the labeled set). A warmup
    is the schedule's start: only the segment at epoch 0 has it."""
    seg = copy.deepcopy(optim)
    seg.warmup_steps = 0 if start else optim.warmup_steps
    passed = sum(1 for m in optim.milestones if m <= start)
    seg.lr = optim.lr * optim.gamma ** passed
    seg.milestones = tuple(m - start for m in optim.milestones if start < m < end)
    seg.epochs = end - start
    if start and not optim.steps_per_epoch:
        raise ConfigError("a continued schedule needs its epoch length: give --max-steps "
                          "(the whole run's steps)")
    if optim.max_steps and optim.steps_per_epoch:
        per = optim.steps_per_epoch
        seg.max_steps = max(0, min(end * per, optim.max_steps) - start * per)
    return seg


def continued_schedule(optim: OptimConfig, rounds: int,
                       round0_steps: int | None = None) -> list[OptimConfig]:
    """One OptimConfig per round (round 0 first) that together train `optim` once.

    A `max_steps` is the whole run's and fixes the epoch length (`fit_schedule`). Without
    it (and without `steps_per_epoch`) an epoch is one pass over the labeled set, which
    only round 0's training measures: pass its steps (`round0_steps`); until then only
    round 0's segment is returned."""
    if optim.max_steps:
        optim = fit_schedule(optim, optim.max_steps)
    bounds = round_bounds(optim, rounds)
    if not optim.steps_per_epoch:
        if not round0_steps:
            return [schedule_segment(optim, 0, bounds[1])]
        optim = copy.deepcopy(optim)
        optim.steps_per_epoch = max(1, round0_steps // bounds[1])
    return [schedule_segment(optim, a, b) for a, b in pairwise(bounds)]
