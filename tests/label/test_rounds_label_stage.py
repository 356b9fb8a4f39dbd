"""The label stage of `posemum rounds`: which artifact each labeling backend is given."""
from __future__ import annotations

from pathlib import Path

import pytest
from label_helpers import make_checkpoint, write_images

from posemum_deploy.rounds import RoundsConfig, StageLog, _label_stages


@pytest.mark.parametrize("backend", ["torch", "torch-fast"])
def test_checkpoint_backends_label_from_the_checkpoint(tmp_path: Path, backend: str) -> None:
    """torch and torch-fast label a round from the teacher checkpoint itself (torch-fast
    was handed the ONNX export, which it cannot open)."""
    ckpt = make_checkpoint(tmp_path / "teacher.pt")
    write_images(tmp_path / "unlabeled", 3)
    cfg = RoundsConfig(out=str(tmp_path), unlabeled=str(tmp_path / "unlabeled"),
                       backend=backend, min_joint_score=0.0, min_instance_score=0.0,
                       min_joints=1, label_batch_size=4, label_flip=False,
                       label_tta="none", calibrate=False)
    stages = StageLog(tmp_path / "round_1")
    merged = _label_stages(cfg, stages, tmp_path / "round_1", str(ckpt))
    assert stages.done["export"]["artifact"] == str(ckpt)
    assert stages.done["label"]["images"] == 3 and merged["images"] == 3
    assert not (tmp_path / "round_1" / "export").exists()


def test_members_label_with_the_teacher_as_an_ensemble(tmp_path: Path) -> None:
    """`members` average with the round's teacher: on a backend that runs exports, each
    member is exported beside the teacher, the shards record the ensemble, and the
    records equal those of `label_folder` given the two models directly."""
    import json

    from posemum_deploy.label.runner import LabelSettings, RunSettings, label_folder

    teacher = make_checkpoint(tmp_path / "teacher.pt", seed=0)
    member = make_checkpoint(tmp_path / "member.pt", seed=1)
    write_images(tmp_path / "unlabeled", 3)
    cfg = RoundsConfig(out=str(tmp_path), unlabeled=str(tmp_path / "unlabeled"),
                       backend="onnxruntime", min_joint_score=0.0, min_instance_score=0.0,
                       min_joints=1, label_batch_size=4, label_flip=False,
                       label_tta="none", calibrate=False)
    round_dir = tmp_path / "round_1"
    stages = StageLog(round_dir)
    _label_stages(cfg, stages, round_dir, str(teacher), members=[str(member)])
    exported = stages.done["export"]
    assert Path(exported["artifact"]).name == "teacher.onnx"
    assert [Path(m).name for m in exported["members"]] == ["member1.onnx"]
    manifest = json.loads((round_dir / "labels" / "manifest.json").read_text())
    assert manifest["model"]["ensemble"][0]["file"] == "member1.onnx"

    direct = tmp_path / "direct"
    label_folder(exported["artifact"], tmp_path / "unlabeled", direct,
                 LabelSettings(boxes=cfg.boxes, flip=False, tta="none",
                               ensemble=exported["members"]),
                 RunSettings(backend="onnxruntime", batch_size=4))
    shards = sorted((round_dir / "labels").glob("shard-*.jsonl*"))
    assert shards and [s.read_bytes() for s in shards] == \
        [s.read_bytes() for s in sorted(direct.glob("shard-*.jsonl*"))]
    single = tmp_path / "single"
    label_folder(exported["artifact"], tmp_path / "unlabeled", single,
                 LabelSettings(boxes=cfg.boxes, flip=False, tta="none"),
                 RunSettings(backend="onnxruntime", batch_size=4))
    assert [s.read_bytes() for s in shards] != \
        [s.read_bytes() for s in sorted(single.glob("shard-*.jsonl*"))]
