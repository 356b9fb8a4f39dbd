import torch
from typer.testing import CliRunner

from posemum_deploy.cli.app import app

runner = CliRunner()


def test_train_cli_end_to_end_then_evaluate(synthetic_small, tmp_path):
    images = synthetic_small.parent / "images"
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--preset", "supervised", "--labeled", str(synthetic_small),
                            "--images", str(images), "--val-ann", str(synthetic_small),
                            "--val-images", str(images), "--out", str(out), "--input-size",
                            "64x64", "--epochs", "1", "--batch-size", "8", "--max-steps", "2",
                            "--workers", "0", "--precision", "fp32", "--deconv-channels", "64"])
    assert r.exit_code == 0, r.output
    assert "best val AP" in r.output
    ckpt = torch.load(out / "checkpoints/best.pt", weights_only=True)
    assert tuple(ckpt["config"]["data"]["input_hw"]) == (64, 64)
    assert ckpt["config"]["model"]["deconv_channels"] == 64
    assert ckpt["model"]["deconv.0.weight"].shape[1] == 64
    m = tmp_path / "m.json"
    r = runner.invoke(app, ["evaluate", "--model", str(out / "checkpoints/best.pt"), "--ann",
                            str(synthetic_small), "--images", str(images), "--json-out", str(m)])
    assert r.exit_code == 0, r.output
    assert m.is_file()


def test_unknown_preset_suggests(synthetic_small, tmp_path):
    from posemum_deploy.errors import ConfigError

    r = runner.invoke(app, ["train", "--preset", "supervisd", "--labeled", str(synthetic_small),
                            "--images", str(tmp_path), "--out", str(tmp_path / "r")])
    assert isinstance(r.exception, ConfigError)
    assert "did you mean supervised" in str(r.exception)


def test_bad_input_size_is_a_clear_error(tmp_path):
    from posemum_deploy.errors import ConfigError

    r = runner.invoke(app, ["train", "--input-size", "100x7", "--labeled", "x.json", "--images",
                            str(tmp_path)])
    assert isinstance(r.exception, ConfigError) and "multiples of 32" in str(r.exception)


def test_presets_lists_supervised():
    r = runner.invoke(app, ["presets"])
    assert r.exit_code == 0 and "supervised" in r.output


class _Captured(Exception):
    pass


def _config_of_train(monkeypatch, args):
    """The TrainConfig `posemum train ARGS` would train, captured before any training."""
    from posemum_deploy.training import trainer

    seen = {}

    def fake_train(cfg, callbacks=None, resume=False):
        seen["cfg"] = cfg
        raise _Captured

    monkeypatch.setattr(trainer, "train", fake_train)
    r = runner.invoke(app, ["train", *args])
    assert isinstance(r.exception, _Captured), r.output
    return seen["cfg"]


def test_a_saved_config_reruns_its_own_preset_and_edits(tmp_path, monkeypatch):
    """`--config run/config.yaml` trains what that run trained: its preset is not reset
    to supervised, and its edits survive; an explicit --preset still applies on top."""
    from posemum_deploy.training.config import TrainConfig
    from posemum_deploy.training.presets import apply_preset

    saved = apply_preset(TrainConfig(), "pose-mum-plus")
    saved.ssl.mix_prob, saved.data.labeled, saved.data.images = 0.3, "l.json", str(tmp_path)
    saved.save(tmp_path / "config.yaml")
    args = ["--config", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "r")]
    cfg = _config_of_train(monkeypatch, args + ["--decay", "0.99"])
    assert cfg.preset == "pose-mum-plus" and cfg.ssl.teacher == "eman" and cfg.ssl.mum
    assert cfg.ssl.mix_prob == 0.3 and cfg.ssl.decay == 0.99
    cfg = _config_of_train(monkeypatch, args + ["--preset", "supervised"])
    assert cfg.preset == "supervised" and cfg.ssl.teacher == "none"
    assert _config_of_train(monkeypatch, ["--labeled", "l.json", "--images", str(tmp_path),
                                          "--out", str(tmp_path / "s")]).preset == "supervised"


def test_a_short_config_gets_the_settings_of_the_preset_it_names(tmp_path, monkeypatch):
    (tmp_path / "short.yaml").write_text(
        "preset: pose-mum-plus\nssl:\n  mix_prob: 0.3\ndata:\n  labeled: l.json\n")
    cfg = _config_of_train(monkeypatch, ["--config", str(tmp_path / "short.yaml"), "--images",
                                         str(tmp_path), "--out", str(tmp_path / "r")])
    assert cfg.preset == "pose-mum-plus" and cfg.ssl.teacher == "eman" and cfg.ssl.mum
    assert cfg.ssl.mix_prob == 0.3 and cfg.data.labeled == "l.json"
