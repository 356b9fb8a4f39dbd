"""Semi-supervised training end to end on tiny synthetic data (CPU)."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from posemum_deploy.data.synthetic import generate_dataset
from posemum_deploy.errors import ConfigError
from posemum_deploy.training.config import TrainConfig
from posemum_deploy.training.presets import PRESETS, apply_preset
from posemum_deploy.training.trainer import train


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, 6, seed=3, image_size=(96, 128), max_people=2)
    return root


def tiny_config(root: Path, out: Path, preset: str, **optim) -> TrainConfig:
    cfg = apply_preset(TrainConfig(), preset)
    cfg.out = str(out)
    cfg.data.labeled = cfg.ssl.unlabeled = str(root / "annotations.json")
    cfg.data.images = cfg.ssl.unlabeled_images = str(root / "images")
    cfg.data.input_hw, cfg.data.workers = (64, 64), 0
    cfg.ssl.tiles, cfg.ssl.unlabeled_batch_size = (2, 2), 4
    cfg.optim.batch_size, cfg.optim.epochs, cfg.optim.steps_per_epoch = 4, 2, 2
    for key, value in optim.items():
        setattr(cfg.optim, key, value)
    cfg.runtime.device, cfg.runtime.precision, cfg.runtime.channels_last = "cpu", "fp32", False
    cfg.runtime.log_every = 1
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["affine-s", "jc-s", "mum-ra", "pose-mum-plus", "ema", "dual",
                                    "mum-unmix-layer2"])
def test_presets_train_a_few_steps(synth, tmp_path, preset):
    result = train(tiny_config(synth, tmp_path / preset, preset, max_steps=2))
    assert result.steps == 2
    rows = (tmp_path / preset / "metrics.jsonl").read_text().splitlines()
    assert '"loss_unsup"' in rows[-1]
    state = torch.load(tmp_path / preset / "checkpoints" / "last.pt", weights_only=True)
    assert state["teacher"] is not None and state["teacher_state"] is not None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("preset", ["pose-mum-plus", "dual"])
def test_presets_train_on_cuda_with_bf16_and_channels_last(synth, tmp_path, preset):
    """The GPU training path: bf16 autocast, channels_last, teacher on the device."""
    cfg = tiny_config(synth, tmp_path / preset, preset, max_steps=3)
    cfg.runtime.device, cfg.runtime.precision, cfg.runtime.channels_last = "cuda", "bf16", True
    result = train(cfg)
    assert result.steps == 3
    state = torch.load(tmp_path / preset / "checkpoints" / "last.pt", weights_only=True)
    student, teacher = state["model"], state["teacher"]
    assert all(torch.isfinite(v).all() for v in student.values() if v.is_floating_point())
    assert any(not torch.equal(student[k], teacher[k]) for k in student
               if student[k].is_floating_point())


def test_every_preset_builds_a_consistent_config():
    for name in PRESETS:
        cfg = apply_preset(TrainConfig(), name)
        assert cfg.preset == name
    cfg = apply_preset(TrainConfig(), "pose-mum-plus")
    assert cfg.ssl.teacher == "eman" and cfg.ssl.decay is None and cfg.ssl.feature_mum
    assert not cfg.ssl.strong_affine  # Table 3: Pose-MUM row has no affine θ
    # clamped teacher targets: pose-mum-plus and its decay sweeps; every paper row raw
    clamped = {name for name in PRESETS if apply_preset(TrainConfig(), name).ssl.clamp_targets}
    assert clamped == {"pose-mum-plus"} | {n for n in PRESETS if n.startswith("pose-mum-plus-")}
    cfg = apply_preset(apply_preset(TrainConfig(), "pose-mum-plus"), "mum")
    assert not cfg.ssl.clamp_targets  # a preset sets the clamp either way, never inherits it


@pytest.mark.slow
def test_resume_continues_exactly(synth, tmp_path):
    straight = train(tiny_config(synth, tmp_path / "a", "pose-mum-plus"))
    train(tiny_config(synth, tmp_path / "b", "pose-mum-plus", max_steps=2))
    resumed = train(tiny_config(synth, tmp_path / "b", "pose-mum-plus"), resume=True)
    assert straight.steps == resumed.steps == 4
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(straight.teacher.state_dict().values(), resumed.teacher.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)


def test_unlabeled_batch_not_multiple_of_group_is_a_config_error(synth, tmp_path):
    cfg = tiny_config(synth, tmp_path / "bad", "mum", max_steps=1)
    cfg.ssl.unlabeled_batch_size = 6
    with pytest.raises(ConfigError, match="multiple of the group size"):
        train(cfg)


def test_semi_supervised_preset_without_unlabeled_data_is_a_config_error(synth, tmp_path):
    cfg = tiny_config(synth, tmp_path / "bad", "mum", max_steps=1)
    cfg.ssl.unlabeled = None
    with pytest.raises(ConfigError, match="--unlabeled"):
        train(cfg)


def _ddp_worker(rank: int, world: int, port: int, root: str, out: str, dump: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = tiny_config(Path(root), Path(out), "pose-mum-plus", max_steps=3)
    cfg.optim.batch_size = cfg.ssl.unlabeled_batch_size = 4
    result = train(cfg)
    torch.save({"teacher": result.teacher.state_dict(), "student": result.model.state_dict()},
               Path(dump) / f"rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_ddp_keeps_teachers_identical(tmp_path):
    root = tmp_path / "data"
    generate_dataset(root, 10, seed=5, image_size=(96, 128), max_people=2)
    out, dump = tmp_path / "run", tmp_path / "dump"
    dump.mkdir()
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(root), str(out), str(dump)), nprocs=2)
    a = torch.load(dump / "rank0.pt", weights_only=True)
    b = torch.load(dump / "rank1.pt", weights_only=True)
    for part in ("teacher", "student"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)
    init = tiny_config(root, out, "pose-mum-plus")
    assert (out / "checkpoints" / "last.pt").is_file()  # written by rank 0 only
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3  # one writer
    assert init.ssl.teacher == "eman"


@pytest.mark.slow
def test_unreadable_images_are_reported_at_the_end(tmp_path):
    """Broken images are skipped inside loader workers (whose own records die with them)
    yet reported: TrainResult.unreadable, RUN_DIR/unreadable_images.txt and a metrics row,
    for the labeled and the unlabeled stream."""
    import json
    import shutil

    root = tmp_path / "data"
    generate_dataset(root, 6, seed=3, image_size=(96, 128), max_people=2)
    labeled = json.loads((root / "annotations.json").read_text())
    broken = sorted({im["file_name"] for im in labeled["images"]})[:2]
    unl_images = tmp_path / "unlabeled"
    shutil.copytree(root / "images", unl_images)
    for name in broken:
        (root / "images" / name).write_bytes(b"\xff\xd8 truncated")
    (unl_images / broken[1]).write_bytes(b"")
    # several passes over both sets: every instance is requested (drop_last hides a few
    # per pass)
    cfg = tiny_config(root, tmp_path / "run", "pose-mum", steps_per_epoch=6)
    cfg.ssl.unlabeled_images = str(unl_images)
    cfg.data.workers = 2  # the skips happen in worker processes
    result = train(cfg)
    expected = sorted([str(root / "images" / n) for n in broken] +
                      [str(unl_images / broken[1])])
    assert result.unreadable == expected
    assert (tmp_path / "run" / "unreadable_images.txt").read_text().splitlines() == expected
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["images"] for r in rows if r["kind"] == "unreadable"][-1] == 3


@pytest.mark.parametrize("clamp", [False, True])
def test_clamp_targets_bounds_the_teacher_heatmaps(synth, tmp_path, monkeypatch, clamp):
    """ssl.clamp_targets: the teacher's heatmaps reach the unlabeled loss clamped to
    [0, 1]; without it, a head whose outputs pass 1 hands them on as they are."""
    from posemum_deploy.training import ssl_step

    seen: list[torch.Tensor] = []
    original = ssl_step.SemiSupervisedStep.strong_view

    def spy(self, weak, pseudo):
        seen.append(pseudo.detach().clone())
        return original(self, weak, pseudo)

    monkeypatch.setattr(ssl_step.SemiSupervisedStep, "strong_view", spy)
    cfg = tiny_config(synth, tmp_path / "run", "pose-mum-plus", max_steps=1)
    cfg.ssl.clamp_targets = clamp
    init = tmp_path / "big.pt"  # a student (and so its EMAN teacher) with outputs up to ~±10
    train(tiny_config(synth, tmp_path / "init", "supervised", max_steps=1))
    state = torch.load(tmp_path / "init" / "checkpoints" / "last.pt", weights_only=True)
    state["model"]["final.bias"] = torch.full_like(state["model"]["final.bias"], 5.0)
    state["model"]["final.bias"][::2] = -5.0
    torch.save(state, init)
    cfg.ssl.init_from = str(init)
    train(cfg)
    low, high = min(float(p.min()) for p in seen), max(float(p.max()) for p in seen)
    if clamp:
        assert low >= 0.0 and high <= 1.0
    else:
        assert low < -1.0 and high > 1.0
