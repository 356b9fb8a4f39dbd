"""Every step `build_step` can return is a `TrainStep`: the loop reads its teacher and
stream and calls set_epoch on it without hasattr, and set_epoch replays an epoch's
randomness exactly (what a resumed run relies on)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from posemum_deploy.data.codec import HeatmapCodec
from posemum_deploy.models.simple_baseline import build_model
from posemum_deploy.training.batch_streams import make_labeled_loader
from posemum_deploy.training.config import TrainConfig
from posemum_deploy.training.optimizer import make_adam
from posemum_deploy.training.presets import apply_preset
from posemum_deploy.training.steps import SupervisedStep, TrainStep, build_step
from posemum_deploy.training.trainer import epoch_length


def _config(ann: Path, out: Path, kind: str) -> TrainConfig:
    cfg = apply_preset(TrainConfig(), "supervised" if kind == "pseudo" else kind)
    cfg.out = str(out)
    cfg.data.labeled = cfg.ssl.unlabeled = str(ann)
    cfg.data.images = cfg.ssl.unlabeled_images = str(ann.parent / "images")
    cfg.data.input_hw, cfg.data.workers, cfg.data.labeled_count = (64, 64), 0, 8
    cfg.ssl.tiles, cfg.ssl.unlabeled_batch_size = (2, 2), 4
    cfg.optim.batch_size = 4
    cfg.runtime.device, cfg.runtime.precision, cfg.runtime.channels_last = "cpu", "fp32", False
    cfg.model.deconv_channels = 32
    if kind == "pseudo":  # the labeled json standing in for pseudo-labels
        pseudo = out / "pseudo.json"
        out.mkdir(parents=True, exist_ok=True)
        pseudo.write_text(json.dumps(json.loads(ann.read_text())))
        cfg.pseudo.labels, cfg.pseudo.images = str(pseudo), cfg.data.images
        cfg.pseudo.labeled_ratio, cfg.pseudo.noise = 0.5, "affine,cutout"
    return cfg


def _generator_draw(step: TrainStep) -> torch.Tensor:
    return torch.rand(4, generator=step.generator)  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["supervised", "pseudo", "pose-mum-plus", "dual"])
def test_every_step_is_a_train_step_the_loop_can_drive(synthetic_small: Path, tmp_path: Path,
                                                        kind: str) -> None:
    torch.manual_seed(0)
    cfg = _config(synthetic_small, tmp_path / kind, kind)
    codec = HeatmapCodec(tuple(cfg.data.input_hw), cfg.data.heatmap_hw, cfg.data.sigma)
    loader = make_labeled_loader(cfg, codec)
    model = build_model(cfg.model.backbone, 17, None, cfg.model.deconv_channels)
    optimizer = make_adam(model.parameters(), 1e-3, torch.device("cpu"))
    step = build_step(cfg, model, optimizer, torch.device("cpu"), None)
    assert isinstance(step, TrainStep)
    semi = kind not in ("supervised", "pseudo")
    assert (step.teacher is not None) == semi and (step.stream is not None) == semi
    if semi:  # what the loop reads: the validated network, a resumable state, the stream
        assert isinstance(step.teacher.model, nn.Module) and step.teacher.state_dict()
        assert len(step.stream) == len(step.stream.loader) > 0
        assert step.stream.unreadable.paths() == set()
        cfg.ssl.epoch_unit, cfg.optim.steps_per_epoch = "unlabeled", None
        assert epoch_length(cfg, loader, step) == len(step.stream)
    else:
        cfg.optim.steps_per_epoch = None
        assert epoch_length(cfg, loader, step) == len(loader)
    if isinstance(step, SupervisedStep):
        step.set_epoch(3)  # nothing of its own to re-seed, but the loop always calls it
    else:
        step.set_epoch(1)
        first = _generator_draw(step)
        step.set_epoch(2)
        assert not torch.equal(_generator_draw(step), first)
        step.set_epoch(1)
        assert torch.equal(_generator_draw(step), first)
    losses = step(next(iter(loader)))
    assert losses["loss"].ndim == 0 and torch.isfinite(losses["loss"])
