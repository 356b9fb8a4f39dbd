"""ModelMetadata: what every runtime reads beside an artifact."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from posemum_deploy.artifacts import ModelMetadata
from posemum_deploy.errors import ArtifactError


def test_lists_become_the_tuples_the_runtimes_compare(tmp_path: Path) -> None:
    meta = ModelMetadata(input_hw=[64, 48], heatmap_hw=[16, 12], mean=[0.1, 0.2, 0.3],
                         keypoint_names=["a", "b"], flip_pairs=[[0, 1]], num_joints=2)
    assert meta.input_hw == (64, 48) and meta.heatmap_hw == (16, 12)
    assert meta.mean == (0.1, 0.2, 0.3) and meta.keypoint_names == ("a", "b")
    assert meta.flip_pairs == ((0, 1),)
    assert ModelMetadata.load(meta.save(tmp_path / "model.json")) == meta


def test_a_sidecar_with_fields_of_the_wrong_shape_is_an_artifact_error(tmp_path: Path) -> None:
    data = ModelMetadata().to_dict()
    data["input_hw"] = [256, 192, 3]
    path = tmp_path / "model.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="model.json: unreadable metadata sidecar.*re-export"):
        ModelMetadata.load(path)
