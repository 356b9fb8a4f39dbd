"""Shard files, the run manifest and errors.jsonl: what makes a labeling run resumable.

Shard i holds images [i*shard_size, (i+1)*shard_size) of the sorted image list, one
JSON line per image (its people, or the reason it was skipped), so whichever engine
labels a shard, the file is the same. A shard is written to a temp name, fsynced and
renamed; only then is it added to `manifest.json` (also written atomically). A kill at
any moment therefore leaves either a finished shard listed in the manifest or nothing
that counts: `--resume` redoes exactly the unlisted shards, losing and duplicating none.
The manifest also records the model's sha256 and every setting that changes the output,
and a resume with different ones is refused.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posemum_deploy.errors import ConfigError, PosemumError

log = logging.getLogger(__name__)
MANIFEST_NAME = "manifest.json"
ERRORS_NAME = "errors.jsonl"
LOG_NAME = "label_log.jsonl"
FORMAT_VERSION = 1


class ResumeError(PosemumError, ValueError):
    """An output folder whose run cannot be continued with these inputs."""


class ShardWriteError(PosemumError, OSError):
    """A shard or the manifest could not be written (disk full, folder gone)."""


@dataclass
class EncodedShard:
    """A shard's JSONL text and counts, encoded where it was labeled (a labeling process
    or a Ray actor), so the one writer only writes."""

    text: str
    images: int
    errors: int
    persons: int


def encode_shard(records: list[dict[str, Any]]) -> EncodedShard:
    """One compact JSON line per image record, and the counts for the manifest."""
    return EncodedShard("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records),
                        len(records), sum(1 for r in records if "error" in r),
                        sum(len(r.get("persons", ())) for r in records))


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.jsonl"


def atomic_write_text(path: Path, text: str) -> None:
    """Write, fsync, rename over `path`, fsync the folder: all or nothing after a crash."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "",
                skip: frozenset[str] = frozenset(), common_only: bool = False) -> list[str]:
    """Human-readable list of the keys whose values differ between two nested dicts
    ("a.b: 1 -> 2"), for refusing a resume with other settings. `skip` holds dotted keys
    that may differ; `common_only` ignores keys only one side has (settings added or
    removed by another version of the toolkit), else such a key counts as None there."""
    out = []
    keys = set(old) & set(new) if common_only else set(old) | set(new)
    for key in sorted(keys):
        a, b = old.get(key), new.get(key)
        if f"{prefix}{key}" in skip:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.", skip, common_only)
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


class RunLog:
    """label_log.jsonl: per invocation a `start` line, one `shard` line per written shard
    (its counts, and this invocation's running images, crops, seconds and rates) and an
    `end` line; a resumed run appends. Plot `images_per_s` against `elapsed_s` to see a
    long job's rate, or a slow shard."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.t0 = time.time()
        self.images = self.crops = 0

    def write(self, event: str, **fields: Any) -> None:
        now = time.time()
        line = {"event": event, "time": round(now, 3), "elapsed_s": round(now - self.t0, 3),
                **fields}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    def start(self, **fields: Any) -> None:
        self.t0, self.images, self.crops = time.time(), 0, 0
        self.write("start", **fields)

    def shard(self, index: int, entry: dict[str, Any], crops: int) -> None:
        self.images += entry["images"]
        self.crops += crops
        self.write("shard", shard=index, images=entry["images"], crops=crops,
                   persons=entry["persons"], errors=entry["errors"], **self._so_far())

    def end(self, **fields: Any) -> None:
        self.write("end", **fields, **self._so_far())

    def _so_far(self) -> dict[str, Any]:
        seconds = max(time.time() - self.t0, 1e-9)
        return {"done_images": self.images, "done_crops": self.crops,
                "images_per_s": round(self.images / seconds, 2),
                "crops_per_s": round(self.crops / seconds, 2)}


class ShardStore:
    """The output folder of one labeling run: finished shards and the manifest."""

    def __init__(self, out_dir: str | Path, identity: dict[str, Any], resume: bool) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.out_dir / MANIFEST_NAME
        self.identity = identity
        if self.manifest_path.exists():
            if not resume:
                raise ResumeError(f"{self.out_dir}: already holds a labeling run; pass --resume "
                                  "to continue it, or choose an empty --out folder")
            self.manifest = self._load_and_check()
        else:  # saved with the first shard: a run that dies before it leaves nothing
            self.manifest = {"format": FORMAT_VERSION, **identity, "shards": {}, "complete": False}
        for stale in self.out_dir.glob(".*.tmp*"):  # left by a killed run
            stale.unlink(missing_ok=True)
        self.log = RunLog(self.out_dir / LOG_NAME)

    def _load_and_check(self) -> dict[str, Any]:
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as e:
            raise ResumeError(f"{self.manifest_path}: unreadable manifest ({e.msg}); "
                              "label into a new --out folder") from e
        old = {k: manifest.get(k) for k in self.identity}
        diff = differences(old, self.identity)
        if manifest.get("format") != FORMAT_VERSION or diff:
            raise ResumeError(f"{self.out_dir}: cannot resume, this run used a different model, "
                              f"settings or image list ({'; '.join(diff[:6]) or 'format'}); "
                              "rerun with the original ones or label into a new --out folder")
        return manifest

    def _save_manifest(self) -> None:
        atomic_write_text(self.manifest_path, json.dumps(self.manifest, indent=1))

    def is_done(self, index: int) -> bool:
        """Listed in the manifest and still on disk (a deleted shard is redone)."""
        entry = self.manifest["shards"].get(str(index))
        return entry is not None and (self.out_dir / entry["file"]).is_file()

    def write_shard(self, index: int, shard: list[dict[str, Any]] | EncodedShard,
                    crops: int = 0) -> dict[str, Any]:
        """Write one shard (its records, or their `encode_shard` text) atomically, then
        record it in the manifest and the run log (with its `crops`); returns its entry."""
        if not isinstance(shard, EncodedShard):
            shard = encode_shard(shard)
        name = shard_name(index)
        entry = {"file": name, "images": shard.images, "errors": shard.errors,
                 "persons": shard.persons}
        try:
            atomic_write_text(self.out_dir / name, shard.text)
            self.manifest["shards"][str(index)] = entry
            self._save_manifest()
        except OSError as e:
            self.manifest["shards"].pop(str(index), None)
            raise ShardWriteError(f"{e.filename or self.out_dir}: cannot write shard {index} "
                                  f"({e.strerror or e}); the shards written so far are kept: "
                                  "free space or fix the folder, then rerun with --resume") from e
        self.log.shard(index, entry, crops)
        return entry

    def finish(self, num_shards: int) -> dict[str, int]:
        """Merge every shard's skipped images into errors.jsonl; mark the run complete.

        Reads only the shards whose manifest entry counts errors, and parses only their
        error lines: a million-image run ends in seconds, not in a re-read of every record."""
        shards = self.manifest["shards"]
        lines = []
        for index in sorted(shards, key=int):
            if not shards[index]["errors"]:
                continue
            with (self.out_dir / shards[index]["file"]).open(encoding="utf-8") as f:
                for line in f:
                    if '"error"' in line and "error" in (record := json.loads(line)):
                        lines.append(json.dumps({"file": record["file"],
                                                 "error": record["error"]}) + "\n")
        atomic_write_text(self.out_dir / ERRORS_NAME, "".join(lines))
        self.manifest["complete"] = all(self.is_done(i) for i in range(num_shards))
        self._save_manifest()
        totals = {key: sum(s[key] for s in shards.values()) for key in ("images", "persons", "errors")}
        self.log.end(complete=self.manifest["complete"], shards=len(shards), **totals)
        return totals


def load_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The manifest of a labeling output folder, or an error that says what to run."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ConfigError(f"{out_dir}: no {MANIFEST_NAME}; point at the --out folder of "
                          "`posemum label`")
    return json.loads(path.read_text())


def iter_indexed(out_dir: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(position in the sorted image list, record) for every image of every finished shard."""
    out_dir = Path(out_dir)
    manifest = load_manifest(out_dir)
    shard_size = manifest["images"]["shard_size"]
    for index in sorted(manifest["shards"], key=int):
        with (out_dir / manifest["shards"][index]["file"]).open(encoding="utf-8") as f:
            for line_no, line in enumerate(f):
                yield int(index) * shard_size + line_no, json.loads(line)


def iter_records(out_dir: str | Path, errors: bool = False) -> Iterator[dict[str, Any]]:
    """Per-image records of every finished shard, in image order (errors only if asked)."""
    for _, record in iter_indexed(out_dir):
        if errors or "error" not in record:
            yield record
