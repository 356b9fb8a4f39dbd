"""Cache entries that a killed or failed build cannot poison.

Engines, timing caches and derived networks (FP16 / QDQ ONNX) are reused across runs by
file name. A build killed while writing once left a truncated file that every later run
loaded. So every entry is written to a temporary file in the same folder, fsynced and
renamed (`os.replace`, atomic on POSIX); then a small `<entry>.json` records its size and
sha256, written the same way. An entry is reused only when both exist and agree; anything
else is a cache miss (rebuilt and replaced), never an error.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` so that readers see either the old file or all of the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def entry_sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def store_entry(path: Path, data: bytes, info: dict[str, Any] | None = None) -> Path:
    """Write a cache entry and then its record (size, sha256, `info`)."""
    atomic_write_bytes(path, data)
    record = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), **(info or {})}
    atomic_write_bytes(entry_sidecar(path), json.dumps(record, indent=1, sort_keys=True).encode())
    return path


def load_entry(path: Path) -> bytes | None:
    """The entry's bytes when its record vouches for them; None (a miss) otherwise."""
    record_path = entry_sidecar(path)
    if not path.is_file():
        return None
    if not record_path.is_file():
        log.warning("%s: no record beside it (an interrupted write?); rebuilding it", path)
        return None
    try:
        record = json.loads(record_path.read_text())
        size, sha = int(record["size"]), str(record["sha256"])
    except (ValueError, KeyError, TypeError, OSError):
        log.warning("%s: unreadable record %s; rebuilding it", path, record_path.name)
        return None
    data = path.read_bytes()
    if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
        log.warning("%s: size/sha256 differ from its record (%d bytes, expected %d); "
                    "rebuilding it", path, len(data), size)
        return None
    return data


def entry_info(path: Path) -> dict[str, Any]:
    """The record of an entry (what it was built from), {} when unreadable."""
    try:
        return dict(json.loads(entry_sidecar(path).read_text()))
    except (OSError, ValueError, TypeError):
        return {}
