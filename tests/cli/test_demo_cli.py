"""`posemum demo --rounds 1` end to end on a tiny synthetic set, through the console."""
import json
import subprocess
import sys

import pytest
import torch


@pytest.mark.slow
def test_demo_with_one_round_writes_the_round_table_and_plot(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "posemum_deploy.cli", "demo", "--out", str(out),
                           "--train-images", "20", "--val-images", "6", "--epochs", "1",
                           "--rounds", "1"], capture_output=True, text=True, timeout=600,
                           check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((out / "rounds" / "rounds.json").read_text())
    assert [r["round"] for r in rows] == [0, 1]
    assert all(0.0 <= r["metrics"]["AP"] <= 1.0 for r in rows)
    assert (out / "rounds" / "rounds.png").stat().st_size > 0
    assert (out / "rounds" / "round_1" / "labels" / "label_log.jsonl").is_file()
    assert "label" in proc.stderr and "round 1: val AP" in proc.stderr  # the live display
    # round 0, round 1 and the equal-steps labeled-only control, side by side
    control = json.loads((out / "rounds" / "control_labeled_only" / "metrics.json").read_text())
    shown = proc.stdout + proc.stderr  # the console writes to stderr
    assert "control" in shown and "round 1 - control:" in shown
    assert f"{control['AP']:.4f}" in shown and f"{rows[1]['metrics']['AP']:.4f}" in shown
    stages = json.loads((out / "rounds" / "round_1" / "stages.json").read_text())
    demo_steps = torch.load(out / "run" / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert stages["train"]["steps"] == demo_steps  # round 0's full step budget
    steps_first = demo_steps

    # a rerun with other settings retrains the teacher, so its rounds start over (a rounds
    # folder resumed with other settings is refused, and the old stages would be stale)
    again = subprocess.run([sys.executable, "-m", "posemum_deploy.cli", "demo", "--out", str(out),
                            "--train-images", "20", "--val-images", "6", "--epochs", "2",
                            "--rounds", "1"], capture_output=True, text=True, timeout=600,
                            check=False)
    assert again.returncode == 0, again.stderr[-2000:]
    stages = json.loads((out / "rounds" / "round_1" / "stages.json").read_text())
    demo_steps = torch.load(out / "run" / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert stages["train"]["steps"] == demo_steps == 2 * steps_first
