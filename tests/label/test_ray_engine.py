"""--engine ray on a local 2-CPU Ray: same shards, same keypoints as the local engine."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from label_helpers import write_images

from posemum_deploy.label.runner import LabelSettings, RunSettings, label_folder
from posemum_deploy.label.writer import iter_indexed

ray = pytest.importorskip("ray", reason="ray not installed (pip install 'ray[data]')")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_matches_local_and_resumes(tmp_path: Path, tiny_model: Path, local_ray: None) -> None:
    images = tmp_path / "images"
    write_images(images, 6)
    (images / "bad.png").write_bytes(b"")
    settings = LabelSettings(shard_size=3)
    local, cluster = tmp_path / "local", tmp_path / "ray"
    label_folder(tiny_model, images, local, settings, RunSettings(batch_size=4, workers=2))
    summary = label_folder(tiny_model, images, cluster, settings,
                           RunSettings(batch_size=4, workers=2, engine="ray", ray_actors=1))
    assert summary.shards_written == 3 and summary.images == 7 and summary.skipped == 1
    (labeler,) = summary.labelers.values()  # one actor: its timings came back with each shard
    assert len(labeler["shards"]) == 3 and labeler["ready_at"] >= labeler["started_at"] > 0
    assert all(t >= labeler["ready_at"] for t in labeler["shards"])
    a = [r for _, r in iter_indexed(local)]
    b = [r for _, r in iter_indexed(cluster)]
    assert [r["file"] for r in a] == [r["file"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert ra.get("error") == rb.get("error")
        assert len(ra.get("persons", ())) == len(rb.get("persons", ()))
        for pa, pb in zip(ra.get("persons", ()), rb.get("persons", ()), strict=True):
            np.testing.assert_allclose(pa["keypoints"], pb["keypoints"], atol=1e-4)
            np.testing.assert_allclose(pa["joint_scores"], pb["joint_scores"], atol=1e-4)
    # a shard lost from the ray run is redone by the local engine: the formats mix
    (cluster / "shard-00001.jsonl").unlink()
    again = label_folder(tiny_model, images, cluster, settings,
                         RunSettings(batch_size=4, resume=True))
    assert (again.shards_written, again.shards_resumed) == (1, 2)
    assert (cluster / "errors.jsonl").read_text() == (local / "errors.jsonl").read_text()
