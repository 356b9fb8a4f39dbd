"""merge: joint/instance filters, COCO layout, image ids by position; writer atomicity."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from posemum_deploy.data.datasets import load_instances
from posemum_deploy.errors import ConfigError
from posemum_deploy.label.merge import MergeFilter, merge_labels
from posemum_deploy.label.writer import ShardStore, iter_indexed

IDENTITY = {"model": {"sha256": "x"}, "settings": {}, "images": {"count": 5, "shard_size": 2}}


def _person(score: float, joint_scores: list[float]) -> dict:
    return {"box": [10, 20, 30, 40], "box_score": 1.0, "score": score, "area": 1500.0,
            "keypoints": [[float(j), float(j + 1)] for j in range(17)],
            "joint_scores": joint_scores}


def _store(tmp_path: Path) -> Path:
    store = ShardStore(tmp_path / "out", IDENTITY, resume=False)
    high = [0.9] * 5 + [0.1] * 12
    store.write_shard(0, [{"file": "a.jpg", "width": 64, "height": 48,
                           "persons": [_person(0.8, high), _person(0.05, high)]},
                          {"file": "b.jpg", "error": "b.jpg: empty file"}])
    store.write_shard(2, [{"file": "sub/e.jpg", "width": 64, "height": 48,
                           "persons": [_person(0.7, [0.1] * 16 + [0.95])]}])
    return tmp_path / "out"


def test_merge_filters_and_layout(tmp_path: Path) -> None:
    out = _store(tmp_path)
    pseudo, results = tmp_path / "p.json", tmp_path / "r.json"
    stats = merge_labels(out, pseudo, MergeFilter(0.5, 0.1, 2), results)
    coco = json.loads(pseudo.read_text())
    assert [(im["id"], im["file_name"]) for im in coco["images"]] == [(1, "a.jpg"), (5, "sub/e.jpg")]
    assert stats.persons_in == 3 and stats.annotations == 1 and stats.results == 2
    (ann,) = coco["annotations"]
    assert ann["num_keypoints"] == 5 and ann["keypoints"][:3] == [0.0, 1.0, 2]
    assert ann["keypoints"][15:18] == [0, 0, 0]  # joint 5 below 0.5 → unlabeled at (0, 0)
    assert ann["area"] == 1200 and ann["bbox"] == [10, 20, 30, 40] and ann["score"] == 0.8
    assert coco["categories"][0]["name"] == "person"
    assert len(json.loads(results.read_text())[0]["keypoints"]) == 51
    loose = merge_labels(out, tmp_path / "loose.json", MergeFilter(0.5, 0.0, 1))
    assert loose.annotations == 3
    instances = load_instances(tmp_path / "loose.json", tmp_path, require_keypoints=False)
    assert [i.image_id for i in instances] == [1, 1, 5]


def test_merge_needs_a_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="posemum label"):
        merge_labels(tmp_path, tmp_path / "p.json")


def test_writer_leaves_no_partial_files(tmp_path: Path) -> None:
    out = _store(tmp_path)
    (out / ".shard-00001.jsonl.tmp123").write_text("half a shard")  # a killed writer
    store = ShardStore(out, IDENTITY, resume=True)
    assert not list(out.glob(".*tmp*"))
    assert store.is_done(0) and not store.is_done(1) and store.is_done(2)
    assert [pos for pos, _ in iter_indexed(out)] == [0, 1, 4]


def test_a_full_disk_keeps_finished_shards_and_says_resume(tmp_path: Path, monkeypatch) -> None:
    """A write that fails (ENOSPC) is an error naming the file and --resume; the shards
    already written stay listed, the failed one is not, so a resume redoes only it."""
    import errno

    from posemum_deploy.label import writer

    out = _store(tmp_path)
    store = ShardStore(out, IDENTITY, resume=True)

    def full(path: Path, text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(writer, "atomic_write_text", full)
    with pytest.raises(writer.ShardWriteError, match=r"shard-00001.jsonl: cannot write shard 1 "
                                                     r"\(No space left on device\).*--resume"):
        store.write_shard(1, [{"file": "c.jpg", "width": 64, "height": 48, "persons": []}])
    assert not store.is_done(1) and store.is_done(0) and store.is_done(2)
    monkeypatch.undo()
    assert ShardStore(out, IDENTITY, resume=True).is_done(0)
    assert [pos for pos, _ in iter_indexed(out)] == [0, 1, 4]


def test_merge_that_keeps_nobody_writes_empty_arrays(tmp_path: Path) -> None:
    """The streamed json stays valid when a filter drops every person (empty arrays)."""
    out = _store(tmp_path)
    results = tmp_path / "sub" / "results.json"
    stats = merge_labels(out, tmp_path / "p.json", MergeFilter(0.5, 0.99, 1), results_out=results)
    coco = json.loads((tmp_path / "p.json").read_text())
    assert stats.annotations == 0 and coco["annotations"] == [] and len(coco["images"]) == 2
    assert json.loads(results.read_text()) == [] and stats.results == 0
    assert not list(tmp_path.glob(".merge-*"))  # temp parts removed


def test_merge_reports_progress_over_every_record(tmp_path: Path) -> None:
    out = _store(tmp_path)
    seen: list[tuple[int, int]] = []
    merge_labels(out, tmp_path / "p.json", progress=lambda read, total: seen.append((read, total)))
    assert seen == [(3, 3)]  # 3 records (one an error) in 2 shards: only the final call
