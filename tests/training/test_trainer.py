import json

import pytest
import torch

from posemum_deploy.training.config import DataConfig, OptimConfig, RuntimeConfig, TrainConfig
from posemum_deploy.training.trainer import train


def _cfg(ann, out, **optim):
    images = ann.parent / "images"
    return TrainConfig(
        out=str(out),
        data=DataConfig(labeled=str(ann), images=str(images), val_ann=str(ann),
                        val_images=str(images), input_hw=(64, 64), workers=0),
        optim=OptimConfig(batch_size=8, epochs=2, milestones=(1,), **optim),
        runtime=RuntimeConfig(precision="fp32", log_every=1))


@pytest.mark.slow
def test_train_writes_run_dir_and_resumes(synthetic_small, tmp_path):
    cfg = _cfg(synthetic_small, tmp_path / "run", steps_per_epoch=2)
    cfg.optim.epochs = 1
    result = train(cfg)
    assert result.steps == 2
    ckpt = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "config", "model_meta", "rng", "epoch"} <= set(ckpt)
    assert (tmp_path / "run/checkpoints/best.pt").is_file()
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows].count("train") == 2 and rows[-1]["kind"] == "val"
    assert 0.0 <= rows[-1]["AP"] <= 1.0
    assert (tmp_path / "run/config.yaml").is_file()

    cfg.optim.epochs = 2
    resumed = train(cfg, resume=True)
    assert resumed.steps == 4
    state = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)
    assert state["epoch"] == 1 and state["scheduler"]["last_epoch"] == 2


@pytest.mark.slow
def test_resume_continues_exactly(synthetic_small, tmp_path):
    """Two epochs in one go == one epoch, stop, resume one more (same weights)."""
    straight = _cfg(synthetic_small, tmp_path / "a", steps_per_epoch=2)
    straight.runtime.val_every = 0
    train(straight)
    split = _cfg(synthetic_small, tmp_path / "b", steps_per_epoch=2)
    split.runtime.val_every = 0
    split.optim.epochs = 1
    train(split)
    split.optim.epochs = 2
    train(split, resume=True)
    a = torch.load(tmp_path / "a/checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_training_logs_one_curve_after_a_kill(synthetic_small, tmp_path):
    """A killed run's rows past its checkpoint, and a killed fresh run's rows, are not kept."""
    cfg = _cfg(synthetic_small, tmp_path / "run", steps_per_epoch=2)
    cfg.runtime.val_every, cfg.optim.epochs = 0, 1
    log = tmp_path / "run" / "metrics.jsonl"
    log.parent.mkdir()
    log.write_text('{"kind": "train", "time": 9.0, "step": 7}\n')  # no checkpoint: fresh
    train(cfg)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2]
    with log.open("a") as f:  # the epoch-2 rows of a run killed before its checkpoint
        f.write('{"kind": "train", "time": 9.0, "step": 3}\n{"kind": "train", "ti')
    cfg.optim.epochs = 2
    train(cfg, resume=True)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4]


def test_resume_from_a_corrupt_checkpoint_names_the_file(synthetic_small, tmp_path):
    from posemum_deploy.errors import ArtifactError

    cfg = _cfg(synthetic_small, tmp_path / "run", steps_per_epoch=1)
    cfg.runtime.val_every = 0
    (tmp_path / "run/checkpoints").mkdir(parents=True)
    (tmp_path / "run/checkpoints/last.pt").write_bytes(b"not a torch file")
    with pytest.raises(ArtifactError, match="last.pt: not a loadable posemum checkpoint"):
        train(cfg, resume=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_resume_on_cuda(synthetic_small, tmp_path):
    """A CUDA run resumes: every state is read onto the CPU, then copied onto the GPU (the
    RNG states must stay CPU tensors; a checkpoint mapped onto the GPU cannot restore them)."""
    cfg = _cfg(synthetic_small, tmp_path / "run", steps_per_epoch=2)
    cfg.runtime.device, cfg.runtime.val_every, cfg.optim.epochs = "cuda", 0, 1
    train(cfg)
    cfg.optim.epochs = 2
    resumed = train(cfg, resume=True)
    assert resumed.steps == 4
    state = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)
    assert state["epoch"] == 1 and state["rng"]["torch"].device.type == "cpu"


@pytest.mark.slow
def test_loss_decreases_on_a_tiny_set(synthetic_small, tmp_path):
    cfg = _cfg(synthetic_small, tmp_path / "run", max_steps=30)
    cfg.optim.epochs, cfg.optim.milestones = 1, ()  # one epoch: one checkpoint, not 30
    cfg.optim.steps_per_epoch = 30
    cfg.runtime.val_every = 0
    train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["kind"] == "train"]
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])


def test_batch_larger_than_dataset_is_a_clear_error(synthetic_small, tmp_path):
    from posemum_deploy.errors import ConfigError

    cfg = _cfg(synthetic_small, tmp_path / "run")
    cfg.optim.batch_size = 100000
    with pytest.raises(ConfigError, match="lower --batch-size"):
        train(cfg)


def test_without_validation_best_follows_last(synthetic_small, tmp_path):
    cfg = _cfg(synthetic_small, tmp_path / "run", steps_per_epoch=1)
    cfg.runtime.val_every = 0
    cfg.data.val_ann = None
    train(cfg)
    best = torch.load(tmp_path / "run/checkpoints/best.pt", weights_only=True)
    assert best["epoch"] == 1 and best["step"] == 2
    # best.pt holds the weights and metadata; the optimiser, scheduler and RNG states a
    # resume needs are in last.pt alone
    last = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)
    assert set(last) - set(best) == {"optimizer", "scheduler", "teacher_state", "rng"}
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    size = {n: (tmp_path / f"run/checkpoints/{n}.pt").stat().st_size for n in ("best", "last")}
    assert size["best"] < 0.4 * size["last"]  # Adam's two moments per weight stay out


@pytest.mark.parametrize("preset", ["supervised", "affine-s"])
def test_an_input_size_off_the_encoder_stride_is_a_clear_error(synthetic_small, tmp_path, preset):
    """64x48 made 16x16 heatmaps against 16x12 targets: a shape error inside the first step
    (supervised) or a stride error naming a mixing stage (SSL); both now name the rule."""
    from posemum_deploy.errors import ConfigError
    from posemum_deploy.training.presets import apply_preset

    cfg = apply_preset(_cfg(synthetic_small, tmp_path / "run"), preset)
    cfg.data.input_hw = (64, 48)
    with pytest.raises(ConfigError, match="64x48: both sides must be multiples of 32"):
        train(cfg)


def test_validation_without_val_images_reads_the_json_names_as_they_are(synthetic_small, monkeypatch):
    """`train --val-ann` alone: the names are read from the working directory, as the
    check before training read them (validation passed None on as a folder and failed)."""
    from posemum_deploy.models.simple_baseline import build_model
    from posemum_deploy.training.trainer import validate

    cfg = _cfg(synthetic_small, "unused")
    cfg.data.val_images = None
    monkeypatch.chdir(synthetic_small.parent / "images")
    torch.manual_seed(0)
    model = build_model("resnet18", deconv_channels=32)
    cfg.model.deconv_channels = 32
    metrics = validate(model, cfg, torch.device("cpu"))
    assert 0.0 <= metrics["AP"] <= 1.0 and model.training
