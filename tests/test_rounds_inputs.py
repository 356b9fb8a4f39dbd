"""A rounds run resumed after one of its input files changed at the same path is refused:
its finished stages were made from the old bytes (rounds/inputs.py)."""
import json
import os

import pytest

from posemum_deploy.errors import ConfigError
from posemum_deploy.rounds import RoundsConfig, run_rounds
from posemum_deploy.rounds.inputs import (
    INPUTS_FILE,
    check_same_inputs,
    fingerprint_inputs,
    input_files,
    save_inputs,
)
from posemum_deploy.training.config import TrainConfig


def _cfg(tmp_path, **kw) -> RoundsConfig:
    for name in ("labeled.json", "val.json", "teacher.pt", "boxes.json"):
        if not (tmp_path / name).exists():
            (tmp_path / name).write_text(f"{name} v1\n")
    train = TrainConfig()
    train.data.labeled, train.data.val_ann = str(tmp_path / "labeled.json"), str(tmp_path / "val.json")
    return RoundsConfig(out=str(tmp_path / "run"), unlabeled=str(tmp_path), train=train,
                        initial_checkpoint=str(tmp_path / "teacher.pt"),
                        boxes=f"det:{tmp_path / 'boxes.json'}", **kw)


def _started(tmp_path) -> RoundsConfig:
    cfg = _cfg(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    save_inputs(check_same_inputs(cfg, run), run)
    return cfg


def test_the_files_a_run_reads_are_named_by_their_option(tmp_path):
    assert sorted(input_files(_cfg(tmp_path))) == ["--boxes", "--initial-checkpoint",
                                                   "--labeled", "--val-ann"]
    whole_images = _cfg(tmp_path, thresholds=str(tmp_path / "missing.json"))
    whole_images.boxes, whole_images.initial_checkpoint = "full", None
    assert sorted(input_files(whole_images)) == ["--labeled", "--val-ann"]  # no file, no print


def test_same_bytes_resume_even_when_touched_or_rewritten(tmp_path):
    cfg = _started(tmp_path)
    check_same_inputs(cfg, tmp_path / "run")
    labeled = tmp_path / "labeled.json"
    os.utime(labeled, ns=(1, 1))  # another mtime, the same bytes: hashed again, equal
    labeled.write_text(labeled.read_text())
    check_same_inputs(cfg, tmp_path / "run")


@pytest.mark.parametrize("name, option", [("labeled.json", "--labeled"),
                                          ("teacher.pt", "--initial-checkpoint"),
                                          ("boxes.json", "--boxes")])
def test_a_file_edited_in_place_is_refused_in_one_line(tmp_path, name, option):
    cfg = _started(tmp_path)
    (tmp_path / name).write_text(f"{name} v2, retrained or relabeled\n")
    with pytest.raises(ConfigError) as err:
        check_same_inputs(cfg, tmp_path / "run")
    message = str(err.value)
    assert "\n" not in message
    assert f"{tmp_path / name} (given as {option}) changed" in message
    assert str(tmp_path / "run") in message and "new --out" in message


def test_unchanged_stat_reuses_the_recorded_hash(tmp_path):
    """A resumed run does not rehash a large checkpoint whose size and mtime are as recorded."""
    _started(tmp_path)
    saved = tmp_path / "run" / INPUTS_FILE
    data = json.loads(saved.read_text())
    data["--initial-checkpoint"]["sha256"] = "recorded"
    saved.write_text(json.dumps(data))
    prints = fingerprint_inputs(_cfg(tmp_path), data)
    assert prints["--initial-checkpoint"]["sha256"] == "recorded"
    assert prints["--labeled"]["sha256"] == data["--labeled"]["sha256"]


def test_runs_without_a_record_or_with_another_path_are_not_compared(tmp_path):
    """A run made before inputs.json existed resumes; a file named by another path is a
    change of settings, check_same_run's refusal, not this one's."""
    cfg = _cfg(tmp_path)
    (tmp_path / "run").mkdir()
    check_same_inputs(cfg, tmp_path / "run")
    save_inputs(check_same_inputs(cfg, tmp_path / "run"), tmp_path / "run")
    (tmp_path / "other.json").write_text("other\n")
    cfg.train.data.labeled = str(tmp_path / "other.json")
    check_same_inputs(cfg, tmp_path / "run")


def test_unreadable_record_is_a_clear_error(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / INPUTS_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="inputs.json: not readable JSON"):
        check_same_inputs(_cfg(tmp_path), tmp_path / "run")


def test_run_rounds_refuses_a_changed_labeled_json_before_touching_the_folder(
        synthetic_small, tmp_path):
    """The refusal comes before rounds.yaml or inputs.json is rewritten or any stage runs."""
    labeled = tmp_path / "labeled.json"
    labeled.write_text(synthetic_small.read_text())
    images = str(synthetic_small.parent / "images")
    train = TrainConfig()
    train.data.labeled, train.data.val_ann = str(labeled), str(synthetic_small)
    train.data.images = train.data.val_images = images
    cfg = RoundsConfig(out=str(tmp_path / "run"), unlabeled=images, schedule="restart",
                       train=train)
    out = tmp_path / "run"
    out.mkdir()
    cfg.save(out / "rounds.yaml")
    save_inputs(check_same_inputs(cfg, out), out)
    before = {p.name: p.read_text() for p in out.iterdir()}
    coco = json.loads(labeled.read_text())
    coco["annotations"] = coco["annotations"][:1]  # relabeled in place
    labeled.write_text(json.dumps(coco))
    with pytest.raises(ConfigError, match=r"labeled.json \(given as --labeled\) changed"):
        run_rounds(cfg)
    assert {p.name: p.read_text() for p in out.iterdir()} == before
