"""benchmarks/rounds_synthetic.py: the seed draws the data, label quality is measured right."""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2] / "benchmarks"


def _bench(name: str = "rounds_synthetic"):
    """A benchmark script as a module; benchmarks/ goes on sys.path as when it is run
    (rounds_synthetic imports rounds_label_quality beside it)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _coco(kps, bbox):
    return {"images": [{"id": 1, "file_name": "000001.jpg", "width": 320, "height": 256}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": bbox,
                             "area": bbox[2] * bbox[3], "iscrowd": 0,
                             "num_keypoints": int((kps[:, 2] > 0).sum()),
                             "keypoints": kps.reshape(-1).tolist()}],
            "categories": [{"id": 1, "name": "person"}]}


def test_label_quality_against_hand_made_truth(tmp_path):
    bench = _bench("rounds_label_quality")
    truth = np.zeros((17, 3))
    truth[:, 0], truth[:, 1], truth[:, 2] = np.arange(17) * 3 + 100, 150, 2
    pseudo = truth.copy()
    pseudo[10:13, 0] += 40          # 3 joints far off: OKS < 0.5
    pseudo[13:, :] = 0              # 4 joints dropped by the filter
    (tmp_path / "t.json").write_text(json.dumps(_coco(truth, [90, 100, 80, 120])))
    (tmp_path / "p.json").write_text(json.dumps(_coco(pseudo, [90, 100, 79, 119])))  # clipped box
    q = bench.label_quality(str(tmp_path / "p.json"), tmp_path / "t.json")
    assert q["q-precision"] == pytest.approx(100 * 10 / 13)
    assert q["q-keep"] == pytest.approx(100 * 13 / 17)
    from posemum_deploy.data.coco import OKS_SIGMAS

    far = np.exp(-40.0 ** 2 / (2 * 80 * 120 * (2 * OKS_SIGMAS[10:13]) ** 2))  # truth's area
    assert far.max() < 0.5
    assert q["q-mean-oks"] == pytest.approx(100 * (10 + far.sum()) / 13)
    rows = {}  # the benchmark's rows: q-d-precision, … for row d's labels
    bench.report_quality(str(tmp_path / "p.json"), tmp_path / "t.json", rows.__setitem__, "d")
    assert rows == {"q-d-precision": q["q-precision"], "q-d-keep": q["q-keep"],
                    "q-d-mean-oks": q["q-mean-oks"]}


def test_the_seed_draws_every_data_set(tmp_path):
    bench = _bench()
    args = argparse.Namespace(labeled_images=2, unlabeled_images=3, val_images=2)
    a, b = bench.seed_data(tmp_path, args, 0), bench.seed_data(tmp_path, args, 1)
    for name in ("labeled", "unlabeled", "val"):
        assert json.loads(a[name].read_text())["annotations"] != \
            json.loads(b[name].read_text())["annotations"]
    assert bench.seed_data(tmp_path, args, 0) == a  # generated once, then reused


def test_truth_at_kept_joints_keeps_true_positions_where_the_labels_kept_joints():
    bench = _bench("rounds_label_quality")
    truth = np.zeros((17, 3))
    truth[:, 0], truth[:, 1], truth[:, 2] = np.arange(17) * 3 + 100, 150, 2
    pseudo = truth.copy()
    pseudo[:, 0] += 5               # kept joints sit off the truth
    pseudo[13:, :] = 0              # 4 joints dropped by the filter
    t, p = _coco(truth, [90, 100, 80, 120]), _coco(pseudo, [90, 100, 79, 119])
    masked = bench.truth_at_kept_joints(t, p)
    k = np.asarray(masked["annotations"][0]["keypoints"]).reshape(-1, 3)
    np.testing.assert_array_equal(k[:13], truth[:13])    # true positions, not the pseudo ones
    assert (k[13:] == 0).all() and masked["annotations"][0]["num_keypoints"] == 13
    far = _coco(pseudo, [200, 10, 30, 30])                 # no person at the true box
    assert bench.truth_at_kept_joints(t, far)["annotations"] == []


def test_folders_that_depend_on_the_unlabeled_set_are_named_by_its_size():
    """Stages are cached by folder name: labels and students of a larger unlabeled set
    must not reuse those of the default 600 images, labeled-only trainings may."""
    stages = _bench("rounds_stages")
    args = argparse.Namespace(unlabeled_images=stages.UNLABELED_IMAGES, calibrate=True,
                              precision=0.9, labeled_ratio=0.5, pseudo_loss_weight=1.0)
    assert stages.label_knobs(args) == stages.student_knobs(args) == ""
    args.unlabeled_images, args.precision, args.pseudo_loss_weight = 1200, 0.8, 0.3
    assert stages.unlabeled_knob(args) == "-u1200"
    assert stages.label_knobs(args) == "-p0.8-u1200"
    assert stages.student_knobs(args) == "-lw0.3-p0.8-u1200"
    args.threshold_search, args.threshold_z = "pair", 0.0  # thresholds chosen otherwise
    assert stages.label_knobs(args) == "-p0.8-pair-u1200"
    args.threshold_z = 1.0
    assert stages.student_knobs(args) == "-lw0.3-p0.8-pairz1-u1200"


TINY = ["--schedule", "continue", "--teacher-steps", "8", "--steps", "4", "--seeds", "1",
        "--labeled-images", "8", "--unlabeled-images", "16", "--val-images", "8",
        "--input", "64x64", "--threads", "1", "--batch", "4"]
ANY_LABEL = ["--min-joint-score", "0", "--min-instance-score", "0", "--no-calibrate"]


def _tiny(out: Path, *args: str):
    """One tiny rounds_synthetic.py run into `out` (stages already there are reused, by
    folder name, as in a benchmark run after another); it must succeed."""
    proc = subprocess.run([sys.executable, str(ROOT / "rounds_synthetic.py"), *TINY, *args,
                           "--out", str(out)], capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _config(folder: Path) -> dict:
    return yaml.safe_load((folder / "train" / "config.yaml").read_text())


def _best(folder: Path) -> Path:
    return folder / "train" / "checkpoints" / "best.pt"


@pytest.mark.slow
def test_e_stage_trains_one_stage_alone_and_a_full_row_e_reuses_it(tmp_path):
    """--e-stage round0 (single) trains e-round0 (e-single) alone, in the folder the whole
    row uses; other rows are refused. A full row e afterwards (--schedule continue) reuses
    both: e continues e-round0 at the decayed LR with the pseudo-labels on top of the
    unlabeled loss, e-continue the same without them."""
    out = tmp_path / "bench"
    seed = out / "s0"
    run = seed / "continue12-pmp-u16"  # 16 unlabeled images, not the default 600
    round0, single = run / "round0", seed / "pmp-12-u16"
    for stage, folder, other in (("round0", round0, single), ("single", single, None)):
        proc = _tiny(out, "--rows", "e", "--tiles", "2x2", "--e-stage", stage)
        rows = [line.split()[0] for line in proc.stdout.splitlines()
                if line.startswith("e") and "  " in line]
        assert rows == [f"e-{stage}"], proc.stdout
        cfg = _config(folder)
        assert cfg["preset"] == "pose-mum-plus" and cfg["optim"]["max_steps"] == \
            (8 if stage == "round0" else 12)
        assert other is None or not other.exists()
    assert not (run / "e-continue").exists()
    proc = subprocess.run([sys.executable, str(ROOT / "rounds_synthetic.py"), *TINY, "--rows",
                           "d", "e", "--e-stage", "single", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "--e-stage single trains one stage of row e" in proc.stderr

    trained = {f: _best(f).stat().st_mtime_ns for f in (round0, single)}
    proc = _tiny(out, "--rows", "e", "--tiles", "2x2", *ANY_LABEL, "--min-joints", "1")
    for row in ("e-single", "e-round0", "e-continue", "e-control", "e - e-control"):
        assert f"\n{row}" in proc.stdout, proc.stdout
    assert {f: _best(f).stat().st_mtime_ns for f in (round0, single)} == trained  # reused

    def last(name):  # the last logged training step: (step, lr)
        rows = (run / name / "train" / "metrics.jsonl").read_text().splitlines()
        row = [r for r in map(json.loads, rows) if r["kind"] == "train"][-1]
        return row["step"], row["lr"]

    r0, e, bare = _config(round0), _config(run / "e-u16"), _config(run / "e-continue")
    assert r0["preset"] == e["preset"] == bare["preset"] == "pose-mum-plus"
    assert e["ssl"]["init_from"] == bare["ssl"]["init_from"] == str(_best(round0))
    assert e["pseudo"]["labels"] == str(run / "labels-u16" / "pseudo.json")
    assert not bare["pseudo"]["labels"]
    assert json.loads((run / "labels-u16" / "pseudo.json").read_text())["annotations"]
    assert last("round0") == (8, 2e-3)  # the first 8 of 12 steps, at the peak LR
    assert last("e-u16") == last("e-continue") == (4, pytest.approx(2e-5))  # the decayed rest
    assert e["optim"]["lr"] == pytest.approx(2e-4)


ROW_D_E_R50 = ["--rows", "d", "e", "--distill-teacher", "pose-mum-plus-r50", "--label-teacher",
               "pose-mum-plus-r50", "--clamp-targets", "--no-single", *ANY_LABEL,
               "--tiles", "2x2"]


@pytest.fixture(scope="module")
def clamped_rows_d_e(tmp_path_factory):
    """Rows d and e clamped, tiny, with one pose-mum-plus ResNet-50 labeling the folder for
    both: (its folder, the run's stdout). The tests of other clamped rows run in the same
    folder after it and reuse its stages (the supervised round 0, e-round0, e-continue,
    e-own's labels and student), as a benchmark run after another does; each adds
    folders of its own, so they do not depend on one another's order."""
    import shutil

    out = tmp_path_factory.mktemp("clamped_rows_d_e") / "bench"
    yield out, _tiny(out, *ROW_D_E_R50).stdout
    shutil.rmtree(out.parent, ignore_errors=True)  # GBs of checkpoints


@pytest.mark.slow
def test_clamped_ssl_row_trains_every_pose_mum_plus_stage_clamped_in_its_own_folders(
        clamped_rows_d_e):
    """--clamp-targets: e-round0, e-continue and e train with ssl.clamp_targets, in
    folders apart from the unclamped run's, so no cached unclamped stage is reused. With
    row u, e-u continues e-round0 on the unlabeled set's truth, as e does on its labels,
    and e-u-masked on the truth at the joints e-round0's labels kept."""
    out, _ = clamped_rows_d_e
    proc = _tiny(out, "--rows", "e", "u", "--no-single", "--clamp-targets", *ANY_LABEL,
                 "--tiles", "2x2")
    assert "clamped targets" in proc.stdout
    assert "\ne - e-control" in proc.stdout and "e-single" not in proc.stdout
    assert "\ne-u - e-control" in proc.stdout and "\nu - a" not in proc.stdout  # no row a
    run = out / "s0" / "continue12-pmp-u16-clamp"
    for name in ("round0", "e-continue", "e-u16", "e-u-u16", "e-u-masked-u16"):
        cfg = _config(run / name)
        assert cfg["preset"] == "pose-mum-plus" and cfg["ssl"]["clamp_targets"] is True
    for name, labels in (("e-u-u16", "truth_as_pseudo-u16.json"),
                         ("e-u-masked-u16", "truth_masked_as_pseudo-u16.json")):
        cfg = _config(run / name)
        assert cfg["pseudo"]["labels"] == str(run / labels)
        assert cfg["ssl"]["init_from"] == str(_best(run / "round0"))
    truth = json.loads((run / "truth_as_pseudo-u16.json").read_text())["annotations"]
    masked = json.loads((run / "truth_masked_as_pseudo-u16.json").read_text())["annotations"]
    own = json.loads((run / "labels-u16" / "pseudo.json").read_text())["annotations"]
    assert len(masked) <= min(len(truth), len(own))  # persons the labels kept, true joints
    assert not (out / "s0" / "continue12-pmp-u16").exists()


@pytest.mark.slow
def test_continued_distillation_with_a_full_schedule_teacher(tmp_path):
    """Row d with --distill-teacher full, tiny: the ResNet-50 trains round 0's part of the
    schedule, continues labeled-only through the decayed rest (d-teacher-full) and labels
    the folder; the ResNet-18 round 0 continues on those labels at the decayed LR."""
    out = tmp_path / "bench"
    proc = _tiny(out, "--rows", "a", "d", "--distill-teacher", "full", "--min-joint-score",
                 "0", "--min-instance-score", "0", "--min-joints", "1", "--no-calibrate")
    for row in ("d-teacher", "d-teacher-full", "d - a"):
        assert f"\n{row}" in proc.stdout, proc.stdout
    run = out / "s0" / "continue12"
    big, student = _config(run / "d-teacher-full"), _config(run / "d-full-u16")
    assert big["model"]["backbone"] == "resnet50" and student["model"]["backbone"] == "resnet18"
    assert big["ssl"]["init_from"] == str(_best(run / "d-teacher"))
    assert not big["pseudo"]["labels"]
    assert student["ssl"]["init_from"] == str(_best(run / "round0"))
    assert student["pseudo"]["labels"] == str(run / "d-labels-full-u16" / "pseudo.json")
    assert big["optim"]["lr"] == student["optim"]["lr"] == pytest.approx(2e-4)  # decayed


@pytest.mark.slow
def test_continued_distillation_from_a_clamped_pose_mum_plus_teacher(clamped_rows_d_e):
    """Row d with --distill-teacher pose-mum-plus --clamp-targets, tiny, rows d alone: row
    e's clamped round 0 and e-continue label the folder, the ResNet-18 round 0 continues
    on those labels; row a is not trained. (The pose-mum-plus-r50 teacher is checked by
    test_row_e_labels_with_row_ds_pose_mum_plus_resnet50.)"""
    out, _ = clamped_rows_d_e
    proc = _tiny(out, "--rows", "d", "--distill-teacher", "pose-mum-plus", "--clamp-targets",
                 *ANY_LABEL, "--min-joints", "1", "--tiles", "2x2")
    rows = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert {"round0", "d", "e-round0", "e-continue"} <= rows
    assert not rows & {"a", "a-single", "a-continue", "d-teacher"}, proc.stdout
    run, big = out / "s0" / "continue12", out / "s0" / "continue12-pmp-u16-clamp" / "e-continue"
    t, student = _config(big), _config(run / "d-pmp-clamp-u16")
    assert t["preset"] == "pose-mum-plus" and t["ssl"]["clamp_targets"] is True
    assert t["model"]["backbone"] == "resnet18"
    assert student["preset"] == "supervised" and student["model"]["backbone"] == "resnet18"
    assert student["ssl"]["init_from"] == str(_best(run / "round0"))
    assert student["pseudo"]["labels"] == str(run / "d-labels-pmp-clamp-u16" / "pseudo.json")
    stages = json.loads((run / "d-labels-pmp-clamp-u16" / "stages.json").read_text())
    assert stages["export"]["artifact"] == str(_best(big))
    assert not (run / "labeled-12").exists() and not (run / "a-continue").exists()


@pytest.mark.slow
def test_row_e_labels_with_row_ds_pose_mum_plus_resnet50(clamped_rows_d_e):
    """--label-teacher pose-mum-plus-r50 with rows d and e, tiny: one clamped pose-mum-plus
    ResNet-50 round 0 labels the folder once; row d's ResNet-18 and row e's e-round0 both
    continue on those labels (e), e-own on e-round0's own labels."""
    out, stdout = clamped_rows_d_e
    for row in ("e-own ", "e ", "d ", "e - e-own:", "e - e-control:"):
        assert f"\n{row}" in stdout, stdout
    seed = out / "s0"
    labels = seed / "continue12" / "d-labels-pmp-r50-clamp-u16"
    e_run = seed / "continue12-pmp-u16-clamp"
    e, own, d = (_config(e_run / "e-pmp-r50-u16"), _config(e_run / "e-u16"),
                 _config(seed / "continue12" / "d-pmp-r50-clamp-u16"))
    assert e["pseudo"]["labels"] == d["pseudo"]["labels"] == str(labels / "pseudo.json")
    assert own["pseudo"]["labels"] == str(e_run / "labels-u16" / "pseudo.json")
    assert e["preset"] == "pose-mum-plus" and e["ssl"]["clamp_targets"] is True
    assert e["ssl"]["init_from"] == str(_best(e_run / "round0"))
    big = _best(seed / "continue12-pmp-r50-u16-clamp" / "round0")
    assert json.loads((labels / "stages.json").read_text())["export"]["artifact"] == str(big)
    r50 = _config(big.parents[2])  # trained as round 0: the schedule's first part from scratch
    assert r50["preset"] == "pose-mum-plus" and r50["ssl"]["clamp_targets"] is True
    assert r50["model"]["backbone"] == "resnet50" and r50["optim"]["max_steps"] == 8
    assert not r50["ssl"]["init_from"]
    assert d["preset"] == "supervised" and d["model"]["backbone"] == "resnet18"
    assert d["ssl"]["init_from"] == str(_best(seed / "continue12" / "round0"))

    # with --label-members 2 the ResNet-50 joins e-round0 and a second round 0 (cached
    # stages reused: only that round 0, the ensemble's labels and its student train)
    proc = _tiny(out, *ROW_D_E_R50, "--label-members", "2")
    assert "\ne-round0-seed100 " in proc.stdout and "\ne " in proc.stdout, proc.stdout
    ens = e_run / "labels-ens2-r50-u16"
    export = json.loads((ens / "stages.json").read_text())["export"]
    second = _best(e_run / "e-round0-seed100")
    assert export["members"] == [str(second), str(big)], export
    assert _config(e_run / "e-ens2-r50-u16")["pseudo"]["labels"] == str(ens / "pseudo.json")

    # --label-checkpoint: a member trained elsewhere ({seed} filled in) joins e-round0 and
    # the ResNet-50, in folders named by the paths
    elsewhere = str(out / "s{seed}" / second.relative_to(seed))
    _tiny(out, *ROW_D_E_R50, "--label-checkpoint", elsewhere)
    (labels_x,) = e_run.glob("labels-ens1-r50-x1-*")
    export = json.loads((labels_x / "stages.json").read_text())["export"]
    assert export["members"] == [str(big), str(second)], export
    student = e_run / ("e" + labels_x.name.removeprefix("labels"))
    assert _config(student)["pseudo"]["labels"] == str(labels_x / "pseudo.json")


def test_label_teacher_and_members_are_for_row_e_alone():
    base = [sys.executable, str(ROOT / "rounds_synthetic.py"), "--schedule", "continue",
            "--label-teacher", "pose-mum-plus-r50"]
    for extra, message in ((["--rows", "d"], "are for row e with --schedule continue"),
                           (["--rows", "e", "--label-members", "0"], "--label-members 0: give 1"),
                           (["--rows", "e", "--label-checkpoint", "/nowhere/s{seed}.pt",
                             "--first-seed", "3", "--seeds", "1"],
                            "--label-checkpoint /nowhere/s3.pt: no such file")):
        proc = subprocess.run(base + extra, capture_output=True, text=True, timeout=120,
                              check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_full_schedule_teacher_needs_the_continued_schedule():
    proc = subprocess.run([sys.executable, str(ROOT / "rounds_synthetic.py"), "--rows", "d",
                           "--distill-teacher", "full"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2 and "--distill-teacher full needs --schedule continue" in proc.stderr


def test_threshold_search_scores_each_rule_where_the_labels_are_used():
    """Thresholds picked on one set, scored on another with its truth: the hand-made joint
    of test_calibrate (agreement ranks a wrong joint first) keeps nothing by `each`,
    eight of ten by `score` and `pair`; a target with two of those eight wrong shows it."""
    search = _bench("threshold_search")
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])[:, None]
    oks = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], float)[:, None]
    agreement = np.array([0.1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.95, 0.2])[:, None]
    val = {"scores": scores, "agreement": agreement, "oks": oks, "visible": np.ones((10, 1), bool)}
    target = dict(val, oks=np.where(np.arange(10)[:, None] < 2, 0.0, oks))
    assert search.applied(val, val, "each", 0.0, 1.0) == (0.0, 0.0)
    assert search.applied(val, val, "pair", 0.0, 1.0) == (0.8, 1.0)
    assert search.applied(val, target, "score", 0.0, 1.0) == (0.8, 0.75)
