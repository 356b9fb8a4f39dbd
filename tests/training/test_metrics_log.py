"""metrics.jsonl holds one curve: a fresh start or a resume drops what a killed run logged
after its last checkpoint (the trainer's side: tests/training/test_trainer.py)."""
import json

from posemum_deploy.training.run_files import MetricsLog


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_fresh_log_drops_a_killed_runs_rows(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "time": 5.0, "step": 20}\n{"kind": "tra')
    log = MetricsLog(path)
    log.write("train", step=1, loss=0.5)
    rows = _rows(path)
    assert [r["step"] for r in rows] == [1] and rows[0]["time"] < 5.0


def test_a_resumed_log_keeps_rows_up_to_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    old = [{"kind": "train", "time": float(s), "step": s} for s in (10, 20, 30)]
    old.insert(2, {"kind": "val", "time": 20.5, "step": 20, "AP": 0.1})
    path.write_text("".join(json.dumps(r) + "\n" for r in old) + '{"kind": "train", "ti')
    MetricsLog(path, from_step=20).write("train", step=21)
    rows = _rows(path)
    assert [(r["kind"], r["step"]) for r in rows] == [
        ("train", 10), ("train", 20), ("val", 20), ("train", 21)]
    assert rows[-1]["time"] >= 20.5  # the clock goes on from the last kept row


def test_a_disabled_log_leaves_the_file_alone(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "time": 5.0, "step": 20}\n')
    MetricsLog(path, enabled=False).write("train", step=1)
    assert _rows(path) == [{"kind": "train", "time": 5.0, "step": 20}]
