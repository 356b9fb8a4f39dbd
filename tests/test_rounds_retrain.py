"""The retraining stage of `rounds` (issue 21, items 4-5) on tiny real data: init modes,
a student backbone other than the teacher's, a semi-supervised preset in a round."""
import json

import pytest
import torch
import yaml
from testdata import make_checkpoint

from posemum_deploy.data.synthetic import generate_dataset
from posemum_deploy.errors import ConfigError
from posemum_deploy.rounds import RoundsConfig, resolve_init, retrain_config, run_rounds
from posemum_deploy.training.config import TrainConfig

CONV1 = "stages.0.0.weight"


def _cfg(labeled, unlabeled, out, **kw) -> RoundsConfig:
    t = TrainConfig()
    t.data.labeled = t.data.val_ann = str(labeled)
    t.data.images = t.data.val_images = str(labeled.parent / "images")
    t.data.input_hw, t.data.workers = (64, 64), 0
    t.optim.batch_size, t.optim.epochs, t.optim.milestones = 8, 1, (1,)
    t.runtime.precision, t.runtime.val_every, t.runtime.log_every = "fp32", 0, 1
    kw.setdefault("retrain_max_steps", 1)
    kw.setdefault("calibrate", False)
    kw.setdefault("label_tta", "none")
    return RoundsConfig(out=str(out), unlabeled=str(unlabeled), rounds=1, boxes="full",
                        backend="torch", min_joint_score=0.0, min_instance_score=0.0,
                        min_joints=1, label_batch_size=8, label_flip=False,
                        train=t, **kw)


@pytest.fixture(scope="module")
def unlabeled(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("unl"), 12, seed=5).parent / "images"


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.slow
def test_init_modes_start_the_student_where_asked(synthetic_small, unlabeled, tmp_path):
    """lr 0: the retrained student keeps its starting weights, so they show where it
    started: the teacher (previous), ImageNet weights (pretrained), or a fresh init."""
    from torchvision.models import resnet18

    teacher = make_checkpoint(tmp_path / "teacher.pt", input_hw=(64, 64), seed=3)
    torch.manual_seed(7)
    imagenet = tmp_path / "resnet18.pth"
    torch.save(resnet18(weights=None).state_dict(), imagenet)
    starts = {}
    for init in ("previous", "pretrained", "scratch"):
        cfg = _cfg(synthetic_small, unlabeled, tmp_path / init, init=init,
                   initial_checkpoint=str(teacher))
        cfg.train.optim.lr = 0.0
        cfg.train.model.pretrained = str(imagenet) if init == "pretrained" else None
        records = run_rounds(cfg)
        starts[init] = _weights(records[1].checkpoint)[CONV1]
        stages = json.loads((tmp_path / init / "round_1" / "stages.json").read_text())
        assert stages["train"]["steps"] == 1
    torch.testing.assert_close(starts["previous"], _weights(teacher)[CONV1])
    torch.testing.assert_close(starts["pretrained"], torch.load(imagenet)["conv1.weight"])
    assert not torch.equal(starts["scratch"], starts["previous"])
    assert not torch.equal(starts["scratch"], starts["pretrained"])


def test_init_mode_errors_and_default(synthetic_small, unlabeled, tmp_path):
    cfg = _cfg(synthetic_small, unlabeled, tmp_path / "r")
    assert resolve_init(cfg) == "previous"  # same backbone: fine-tune the last round's model
    cfg.student_backbone = "resnet34"  # another backbone: the initial weights
    assert resolve_init(cfg) == "scratch"  # no ImageNet file given
    cfg.train.model.pretrained = "imagenet.pth"
    assert resolve_init(cfg) == "pretrained"
    with pytest.raises(ConfigError, match="--init must be one of scratch, pretrained, previous"):
        resolve_init(_cfg(synthetic_small, unlabeled, tmp_path / "r", init="warm"))
    with pytest.raises(ConfigError, match="--init pretrained needs --pretrained"):
        resolve_init(_cfg(synthetic_small, unlabeled, tmp_path / "r", init="pretrained"))
    with pytest.raises(ConfigError, match="cannot start a resnet34 student from a resnet18"):
        resolve_init(_cfg(synthetic_small, unlabeled, tmp_path / "r", init="previous",
                          student_backbone="resnet34"))
    # continued: a student of another backbone continues its own round 0
    assert resolve_init(_cfg(synthetic_small, unlabeled, tmp_path / "r", schedule="continue",
                             student_backbone="resnet34")) == "previous"
    big = make_checkpoint(tmp_path / "big.pt", input_hw=(64, 64), backbone="resnet34")
    with pytest.raises(ConfigError, match="cannot start a resnet18 student from a resnet34"):
        resolve_init(_cfg(synthetic_small, unlabeled, tmp_path / "r", init="previous",
                          initial_checkpoint=str(big)))
    for bad, message in ((dict(labeled_ratio=1.0), "--labeled-ratio 1.0 leaves 8 of 8"),
                         (dict(pseudo_noise="blur"), "--pseudo-noise: unknown blur"),
                         (dict(pseudo_weight="oks"), "--pseudo-weight must be one of"),
                         (dict(pseudo_loss_weight=-1.0), "--pseudo-loss-weight -1.0: must be"),
                         (dict(mixed=False, pseudo_loss_weight=1.0),
                          "--pseudo-loss-weight applies to mixed batches, and --union"),
                         (dict(mixed=False, labeled_ratio=0.75), "drop --labeled-ratio or --union")):
        with pytest.raises(ConfigError, match=message):
            run_rounds(_cfg(synthetic_small, unlabeled, tmp_path / "bad", **bad))
    assert not (tmp_path / "bad").exists()  # refused before round 0 trained


@pytest.mark.slow
def test_student_backbone_differs_from_the_teacher(synthetic_small, unlabeled, tmp_path):
    """--teacher-backbone resnet34 --student-backbone resnet18: round 0 trains the big
    teacher on the labeled split, which labels the folder; round 1 is a ResNet-18 on
    mixed batches, for as many steps as round 0 took."""
    cfg = _cfg(synthetic_small, unlabeled, tmp_path / "r", teacher_backbone="resnet34",
               student_backbone="resnet18", retrain_max_steps=None)
    cfg.train.optim.max_steps = 2
    records = run_rounds(cfg)
    metas = [torch.load(r.checkpoint, weights_only=True)["model_meta"] for r in records]
    assert [m["backbone"] for m in metas] == ["resnet34", "resnet18"]
    r1 = yaml.safe_load((tmp_path / "r" / "round_1" / "train" / "config.yaml").read_text())
    assert r1["model"]["backbone"] == "resnet18"
    assert r1["pseudo"]["labels"].endswith("round_1/pseudo.json")
    assert r1["pseudo"]["labeled_ratio"] == 0.5
    assert r1["ssl"]["init_from"] is None  # fresh init
    r0_steps = json.loads((tmp_path / "r" / "round_0" / "stages.json").read_text())["train"]["steps"]
    r1_steps = json.loads((tmp_path / "r" / "round_1" / "stages.json").read_text())["train"]["steps"]
    assert r0_steps == r1_steps == 2  # the full step budget of round 0


@pytest.mark.slow
def test_a_round_retrains_with_a_semi_supervised_preset(synthetic_small, unlabeled, tmp_path):
    """--preset pose-mum-plus: the round-1 student trains on mixed labeled/pseudo batches
    *and* the unlabeled consistency loss over the folder's crops."""
    from posemum_deploy.training.presets import apply_preset

    cfg = _cfg(synthetic_small, unlabeled, tmp_path / "r")
    apply_preset(cfg.train, "pose-mum-plus")
    cfg.train.ssl.unlabeled_batch_size, cfg.train.ssl.tiles = 4, (2, 2)  # 64x64 crops
    records = run_rounds(cfg)
    assert len(records) == 2
    r1 = yaml.safe_load((tmp_path / "r" / "round_1" / "train" / "config.yaml").read_text())
    assert r1["preset"] == "pose-mum-plus" and r1["ssl"]["teacher"] == "eman"
    assert r1["ssl"]["unlabeled"] == str(unlabeled) and r1["ssl"]["unlabeled_boxes"] == "whole"
    assert r1["pseudo"]["labels"].endswith("round_1/pseudo.json")
    rows = [json.loads(line) for line in
            (tmp_path / "r" / "round_1" / "train" / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in rows if r["kind"] == "train")
    assert step["loss_unsup"] > 0 and step["loss_sup"] > 0
    assert torch.load(records[1].checkpoint, weights_only=True)["teacher"] is not None


@pytest.mark.slow
def test_label_stage_calibrates_on_val_and_carries_reliability(synthetic_small, unlabeled,
                                                               tmp_path):
    """TTA labels, per-joint thresholds calibrated on the val set (used by merge), and,
    for --pseudo-weight, each kept person's joint scores and agreement from its shard."""
    from posemum_deploy.label.writer import iter_indexed
    from posemum_deploy.rounds import StageLog, _label_stages

    teacher = make_checkpoint(tmp_path / "teacher.pt", input_hw=(64, 64), seed=3)
    cfg = _cfg(synthetic_small, unlabeled, tmp_path / "r", calibrate=True,
               label_tta="flip,scales=0.9,1.1", pseudo_weight="agreement")
    stages = StageLog(tmp_path / "r1")
    _label_stages(cfg, stages, tmp_path / "r1", str(teacher))
    assert set(stages.done) == {"export", "calibrate", "label", "merge"}
    thresholds = json.loads((tmp_path / "r1" / "thresholds.json").read_text())
    merged = json.loads((tmp_path / "r1" / "pseudo.json").read_text())
    pick = lambda joints: [(j["score"], j["agreement"]) for j in joints]  # noqa: E731
    assert pick(merged["info"]["filter"]["thresholds"]["joints"]) == pick(thresholds["joints"])
    # a random teacher reaches 0.9 precision on few joint types: the calibrated filter
    # keeps no person (min_joints 1 aside), where min_joint_score 0 keeps all 12 (below)
    assert sum(j["score_reached"] for j in thresholds["joints"]) < 17
    assert merged["annotations"] == []
    assert thresholds["source"]["tta"] == "flip,scales=0.9,1.1"
    assert (tmp_path / "r1" / "thresholds.png").is_file()

    cfg.calibrate = False  # keep every joint: all persons reach the reliability copy
    stages = StageLog(tmp_path / "r2")
    _label_stages(cfg, stages, tmp_path / "r2", str(teacher))
    merged = json.loads((tmp_path / "r2" / "pseudo.json").read_text())
    shards = [p for _, r in iter_indexed(tmp_path / "r2" / "labels") for p in r["persons"]]
    assert len(merged["annotations"]) == len(shards) == 12  # one full-image box each
    for ann, person in zip(merged["annotations"], shards, strict=True):
        assert ann["joint_scores"] == pytest.approx(person["joint_scores"], abs=1e-4)
        assert ann["joint_agreement"] == pytest.approx(person["joint_agreement"], abs=1e-4)
        assert len(set(ann["joint_agreement"])) > 1  # real per-joint values, not a constant


@pytest.mark.slow
def test_continued_distillation_student_continues_its_own_round_0(synthetic_small, unlabeled,
                                                                  tmp_path):
    """--schedule continue --teacher-backbone resnet34 --student-backbone resnet18, 3 epochs
    of 2 steps, LR x0.1 after epoch 2: the teacher trains all 6 steps (the last 2 decayed)
    and labels round 1; the student's round 0 trains the first 4 at the peak LR, and round
    1 continues it for the last 2 at the decayed LR on mixed batches."""
    cfg = _cfg(synthetic_small, unlabeled, tmp_path / "r", teacher_backbone="resnet34",
               student_backbone="resnet18", retrain_max_steps=None, schedule="continue")
    cfg.train.optim.epochs, cfg.train.optim.milestones, cfg.train.optim.max_steps = 3, (2,), 6
    records = run_rounds(cfg)
    run = tmp_path / "r"

    def lrs(folder):
        lines = (run / folder / "train" / "metrics.jsonl").read_text().splitlines()
        return [r["lr"] for r in map(json.loads, lines) if r["kind"] == "train"]

    assert lrs("round_0") == pytest.approx([1e-3] * 4 + [1e-4] * 2)  # the whole schedule
    assert lrs("round_0_student") == pytest.approx([1e-3] * 4)  # up to the milestone
    assert lrs("round_1") == pytest.approx([1e-4] * 2)  # the decayed rest
    metas = [torch.load(r.checkpoint, weights_only=True)["model_meta"] for r in records]
    assert [m["backbone"] for m in metas] == ["resnet34", "resnet18"]
    student0 = str(run / "round_0_student" / "train" / "checkpoints" / "best.pt")
    assert torch.load(student0, weights_only=True)["model_meta"]["backbone"] == "resnet18"
    r1 = yaml.safe_load((run / "round_1" / "train" / "config.yaml").read_text())
    assert r1["ssl"]["init_from"] == student0
    assert r1["pseudo"]["labels"].endswith("round_1/pseudo.json")
    student_ap = json.loads((run / "round_0_student" / "metrics.json").read_text())["AP"]
    assert student_ap >= 0
    # rounds.json: round 0's row also holds the student's own round 0; later rows do not
    rows = json.loads((run / "rounds.json").read_text())
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[0]["student_checkpoint"] == student0
    assert rows[0]["student_metrics"]["AP"] == pytest.approx(student_ap)
    assert rows[0]["checkpoint"] == records[0].checkpoint != student0  # the teacher's
    assert rows[1]["student_checkpoint"] is None and rows[1]["student_metrics"] is None


def test_the_rounds_table_shows_the_students_own_round_0(tmp_path, monkeypatch):
    """A distillation's round-0 record carries the student's own round 0: the table
    prints it as its own row under the teacher's, with its checkpoint."""
    from rich.console import Console

    from posemum_deploy.cli import progress
    from posemum_deploy.cli.rounds import show_rounds
    from posemum_deploy.rounds import RoundRecord

    def m(ap):
        return {"AP": ap, "AP50": ap + 0.1, "AR": ap + 0.05}

    records = [RoundRecord(0, "big/best.pt", m(0.41), student_checkpoint="small0/best.pt",
                           student_metrics=m(0.33)),
               RoundRecord(1, "r1/best.pt", m(0.37), 12, 5)]
    shown = Console(record=True, width=200)
    monkeypatch.setattr(progress, "console", shown)
    show_rounds(records, tmp_path)
    lines = shown.export_text().splitlines()
    rows = [line for line in lines if ".pt" in line]
    assert len(rows) == 3
    assert "0.4100" in rows[0] and "big/best.pt" in rows[0]
    assert "0 (student)" in rows[1] and "0.3300" in rows[1] and "small0/best.pt" in rows[1]
    assert "0.3700" in rows[2] and "r1/best.pt" in rows[2]


@pytest.mark.slow
def test_label_members_label_with_each_rounds_teacher(synthetic_small, unlabeled, tmp_path):
    """--label-member: round 1's labels come from the round's teacher and the member as
    one ensemble (the shards' manifest names it), and the member is an input file of the
    run (a retrained member at the same path is refused on resume)."""
    teacher = make_checkpoint(tmp_path / "teacher.pt", input_hw=(64, 64), seed=3)
    member = make_checkpoint(tmp_path / "member.pt", input_hw=(64, 64), seed=4)
    cfg = _cfg(synthetic_small, unlabeled, tmp_path / "r", initial_checkpoint=str(teacher),
               label_members=[str(member)])
    run_rounds(cfg)
    manifest = json.loads((tmp_path / "r" / "round_1" / "labels" / "manifest.json").read_text())
    assert [m["file"] for m in manifest["model"]["ensemble"]] == ["member.pt"]
    assert manifest["model"]["file"] == "teacher.pt"
    inputs = json.loads((tmp_path / "r" / "inputs.json").read_text())
    assert inputs["--label-member #1"]["path"] == str(member)


def test_label_members_are_checked_before_round_0(synthetic_small, unlabeled, tmp_path):
    """A missing member, or one of another input size, fails in one line naming
    --label-member, before RUN_DIR is made (not at round 1's label stage)."""
    wrong = make_checkpoint(tmp_path / "big.pt", input_hw=(128, 96))
    for members, words in (([str(tmp_path / "nope.pt")], "file not found \\(given as --label-member"),
                           ([str(wrong)], "--label-member .*big.pt: its input size \\(128, 96\\) "
                                          "differs from the run's \\(64, 64\\)")):
        cfg = _cfg(synthetic_small, unlabeled, tmp_path / "r", label_members=members)
        with pytest.raises(ConfigError, match=words):
            run_rounds(cfg)
        assert not (tmp_path / "r").exists()
    other = make_checkpoint(tmp_path / "other.pt", input_hw=(64, 64))
    meta_first = make_checkpoint(tmp_path / "first.pt", input_hw=(64, 64))
    ckpt = torch.load(other, weights_only=True)
    ckpt["model_meta"]["keypoint_names"] = [f"k{i}" for i in range(17)]
    torch.save(ckpt, other)
    cfg = _cfg(synthetic_small, unlabeled, tmp_path / "r", initial_checkpoint=str(meta_first),
               label_members=[str(other)])
    with pytest.raises(ConfigError, match="--label-member .*other.pt: its keypoint set .* "
                                          "differs from .*first.pt's"):
        run_rounds(cfg)
    # flip pairs are averaged joint for joint too: found now, not at round 1's labels
    unflipped = make_checkpoint(tmp_path / "unflipped.pt", input_hw=(64, 64))
    ckpt = torch.load(unflipped, weights_only=True)
    ckpt["model_meta"]["flip_pairs"] = []
    torch.save(ckpt, unflipped)
    for initial in (None, str(meta_first)):
        cfg = _cfg(synthetic_small, unlabeled, tmp_path / "r", initial_checkpoint=initial,
                   label_members=[str(unflipped)])
        with pytest.raises(ConfigError, match="unflipped.pt: its flip pairs \\(\\) differs"):
            run_rounds(cfg)
        assert not (tmp_path / "r").exists()


def test_cli_label_member_reaches_the_rounds(synthetic_small, tmp_path):
    """`posemum rounds --label-member` is passed through: a member of another input size
    than --input-size is one line, exit 2, no --out."""
    import subprocess
    import sys

    images = str(synthetic_small.parent / "images")
    out = tmp_path / "run"
    member = make_checkpoint(tmp_path / "member.pt", input_hw=(128, 96))
    proc = subprocess.run([
        sys.executable, "-m", "posemum_deploy.cli", "rounds", "--labeled", str(synthetic_small),
        "--images", images, "--unlabeled", images, "--val-ann", str(synthetic_small),
        "--val-images", images, "--out", str(out), "--input-size", "64x64",
        "--label-member", str(member)], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "--label-member" in lines[0] and "input size (128, 96)" in lines[0]
    assert not out.exists()


def test_cli_training_options_reach_every_training_of_the_rounds(synthetic_small, tmp_path,
                                                                 monkeypatch):
    """`posemum rounds --preset pose-mum-plus --no-clamp-targets --warmup-steps N` sets them
    in the train config every stage copies; left out, the preset's clamp (on for
    pose-mum-plus) and no warmup; --clamp-targets turns it on for another preset."""
    from typer.testing import CliRunner

    import posemum_deploy.rounds as rounds_lib
    from posemum_deploy.cli.app import app

    seen = []
    monkeypatch.setattr(rounds_lib, "run_rounds", lambda cfg, **kw: seen.append(cfg) or [])
    images = str(synthetic_small.parent / "images")
    base = ["rounds", "--labeled", str(synthetic_small), "--images", images, "--unlabeled",
            images, "--val-ann", str(synthetic_small), "--val-images", images,
            "--out", str(tmp_path / "run"), "--preset", "pose-mum-plus"]
    for extra in (["--no-clamp-targets", "--warmup-steps", "50"], [],
                  ["--preset", "mum"], ["--preset", "mum", "--clamp-targets"]):
        result = CliRunner().invoke(app, base + extra)
        assert result.exit_code == 0, result.output
    raw, preset, mum, mum_clamped = (retrain_config(cfg, None) for cfg in seen)
    assert raw.ssl.teacher == "eman" and not raw.ssl.clamp_targets and raw.optim.warmup_steps == 50
    assert preset.ssl.clamp_targets and preset.optim.warmup_steps == 0
    assert mum.ssl.mum and not mum.ssl.clamp_targets and mum_clamped.ssl.clamp_targets
    result = CliRunner().invoke(app, base + ["--warmup-steps", "-1"])
    assert result.exit_code == 2 and "--warmup-steps" in result.output
