"""Cache entries under SIGKILL: a build killed while writing leaves nothing that is reused."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from posemum_deploy.export.trt_cache import (
    atomic_write_bytes,
    entry_sidecar,
    load_entry,
    store_entry,
)

# The child stores an entry and stops (prints "stalled", sleeps) inside its N-th
# os.replace call: 1 = the data's rename, 2 = the record's rename.
CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from posemum_deploy.export import trt_cache
    real, calls = os.replace, []
    def stalling_replace(src, dst):
        calls.append(dst)
        if len(calls) == int(sys.argv[2]):
            print("stalled", flush=True)
            time.sleep(600)
        real(src, dst)
    os.replace = stalling_replace
    trt_cache.store_entry(Path(sys.argv[1]), b"new engine " * 100000, {"what": "new"})
""")


def _store_and_kill(path: Path, stall_at: int) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(stall_at)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "stalled"
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL


def test_a_build_killed_before_the_rename_leaves_no_entry(tmp_path: Path) -> None:
    entry = tmp_path / "engines" / "abc.engine"
    _store_and_kill(entry, stall_at=1)
    assert not entry.exists() and not entry_sidecar(entry).exists()
    assert load_entry(entry) is None
    leftovers = list(entry.parent.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.endswith(".tmp")  # never read as an entry
    store_entry(entry, b"rebuilt")
    assert load_entry(entry) == b"rebuilt"


def test_a_build_killed_between_data_and_record_is_not_reused(tmp_path: Path) -> None:
    """The old entry's record no longer vouches for the new bytes: a miss, not a load."""
    entry = tmp_path / "abc.engine"
    store_entry(entry, b"old engine", {"what": "old"})
    _store_and_kill(entry, stall_at=2)
    assert entry.read_bytes().startswith(b"new engine")  # the data rename happened
    assert json.loads(entry_sidecar(entry).read_text())["what"] == "old"
    assert load_entry(entry) is None


def test_a_complete_entry_is_reused_and_any_damage_is_a_miss(tmp_path: Path) -> None:
    entry = tmp_path / "t.cache"
    store_entry(entry, b"timings", {"gpu": "x"})
    assert load_entry(entry) == b"timings"
    entry.write_bytes(b"timingz")  # same size, other bytes
    assert load_entry(entry) is None
    store_entry(entry, b"timings")
    entry_sidecar(entry).unlink()
    assert load_entry(entry) is None
    store_entry(entry, b"timings")
    entry_sidecar(entry).write_text("{not json")
    assert load_entry(entry) is None


def test_atomic_write_failure_keeps_the_old_file(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "model.engine"
    atomic_write_bytes(target, b"old")

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]
