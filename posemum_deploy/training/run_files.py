"""What a run writes: checkpoints (weights_only-loadable dicts) and metrics.jsonl."""
from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


class MetricsLog:
    """Append-only jsonl of training/validation rows a user can plot (one json per line).

    A run starts the file at `from_step`: rows a killed run logged after its last
    checkpoint (step > from_step; every row when it starts fresh) are dropped first, so a
    resumed or restarted run's file holds one curve, not two that overlap. `time` goes on
    from the last kept row's."""

    def __init__(self, path: str | Path, enabled: bool = True, from_step: int = 0) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.start = time.time()
        if enabled and self.path.is_file():
            self.start -= _keep_rows_until(self.path, from_step)

    def write(self, kind: str, **values: Any) -> None:
        if not self.enabled:
            return
        row = {"kind": kind, "time": round(time.time() - self.start, 3), **values}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def _keep_rows_until(path: Path, step: int) -> float:
    """Rewrite the jsonl at `path` with its rows up to `step` (none when step is 0; a line
    a kill cut short is dropped); returns the last kept row's time (0 when none)."""
    kept: list[str] = []
    if step > 0:
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and row.get("step", 0) <= step:
                kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    tmp.replace(path)
    return float(json.loads(kept[-1]).get("time", 0.0)) if kept else 0.0


UNREADABLE_NAME = "unreadable_images.txt"


def record_unreadable(out: Path, paths: set[str]) -> list[str]:
    """RUN_DIR/unreadable_images.txt: the images training skipped, one path per line, kept
    across resumes (a resumed run adds to the list); returns the whole list."""
    path = out / UNREADABLE_NAME
    known = set(path.read_text().splitlines()) if path.is_file() else set()
    every = sorted(known | paths)
    if every and len(every) != len(known):
        path.write_text("".join(p + "\n" for p in every))
    return every


def rng_state() -> dict[str, Any]:
    """Every RNG the trainer draws from, as tensors and plain Python values."""
    np_state = np.random.get_state()  # the global RandomState is MT19937: its legacy tuple
    assert isinstance(np_state, tuple)
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
                             "numpy": np_state[1].tolist(), "numpy_pos": int(np_state[2]),
                             "numpy_gauss": int(np_state[3]), "numpy_cached": float(np_state[4])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore `rng_state()`'s output, wherever its tensors were loaded to (the generators
    take CPU byte tensors only); CUDA states for GPUs this machine lacks are dropped."""
    torch.set_rng_state(state["torch"].cpu())
    random.setstate((3, tuple(state["python"]), None))
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), state["numpy_pos"],
                         state["numpy_gauss"], state["numpy_cached"]))
    if "cuda" in state and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)


# What only a resume reads (from last.pt): best.pt leaves them out, so the file a user
# evaluates, exports, labels with or warm-starts from holds the weights and metadata at
# a third (supervised) to a half (with a teacher) of last.pt's size, as Ultralytics
# strips the optimiser from its best.pt.
RESUME_ONLY = ("optimizer", "scheduler", "teacher_state", "rng")


def without_resume_state(payload: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint without RESUME_ONLY's entries: model, teacher, step, metrics, config."""
    return {k: v for k, v in payload.items() if k not in RESUME_ONLY}


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a kill during the save never leaves a truncated checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
