"""The label stage of `posemum rounds`: which artifact each labeling backend is given."""
from __future__ import annotations

from pathlib import Path

import pytest

from posemum_deploy.rounds import RoundsConfig, StageLog, _label_stages

from label_helpers import make_checkpoint, write_images


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
