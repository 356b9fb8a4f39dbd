"""read_checkpoint: the full read and the metadata read (mmap) see the same checkpoint,
and both name a bad file in one line."""
from __future__ import annotations

import pytest
import torch

from posemum_deploy.errors import ArtifactError
from posemum_deploy.models.checkpoint import read_checkpoint
from tests.testdata import make_checkpoint


def test_a_mapped_read_holds_the_same_checkpoint(tmp_path):
    path = make_checkpoint(tmp_path / "m.pt", input_hw=(64, 48), backbone="resnet34")
    full, mapped = read_checkpoint(path), read_checkpoint(path, mmap=True)
    assert mapped["model_meta"] == full["model_meta"]
    assert mapped["model_meta"]["backbone"] == "resnet34"
    assert mapped["config"] == full["config"]
    assert mapped["model"].keys() == full["model"].keys()
    for key, value in full["model"].items():
        assert torch.equal(mapped["model"][key], value), key


@pytest.mark.parametrize("mmap", [False, True])
def test_a_truncated_checkpoint_is_named_in_one_line(tmp_path, mmap):
    path = make_checkpoint(tmp_path / "m.pt", input_hw=(64, 48))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ArtifactError, match="cut.pt: not a loadable posemum checkpoint") as err:
        read_checkpoint(cut, mmap=mmap)
    assert "\n" not in str(err.value)


def test_the_rounds_teacher_backbone_is_read_from_a_given_checkpoint(tmp_path):
    from posemum_deploy.rounds import RoundsConfig, backbones

    cfg = RoundsConfig(out=str(tmp_path / "r"), unlabeled=str(tmp_path))
    cfg.initial_checkpoint = str(make_checkpoint(tmp_path / "big.pt", input_hw=(64, 48),
                                                 backbone="resnet34"))
    cfg.student_backbone = "resnet18"
    assert backbones(cfg) == ("resnet34", "resnet18")
