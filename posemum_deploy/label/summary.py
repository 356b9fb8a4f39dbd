"""What a labeling run reports: `LabelSummary` (counts, rates, per-labeler timings),
the `LabelProgress` display the CLI hands down, and `summary_json`.

Apart from `runner` so the engines' shared bookkeeping type stands alone: the runner
fills it, the CLI and benchmarks read it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from posemum_deploy.label.worker import LabelerInfo


@dataclass
class LabelSummary:
    """What a run did; rates count only the work done in this invocation."""

    images: int = 0
    persons: int = 0
    skipped: int = 0
    crops: int = 0
    shards_total: int = 0
    shards_written: int = 0
    shards_resumed: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # (time.time() when labeled, images, crops) per shard, stamped where it was labeled
    shard_marks: list[tuple[float, int, int]] = field(default_factory=list)
    # per labeler (process id): when it loaded its model, its shards' times, stage seconds
    labelers: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def crops_per_s(self) -> float:
        return self.crops / self.seconds if self.seconds else 0.0

    def mark_shard(self, finished_at: float, images: int, crops: int, labeler: LabelerInfo,
                   stage_s: float = 0.0, cpu_s: float = 0.0) -> None:
        """Note when a shard was labeled (worker-side clock) and by which labeler, for the
        rates and per-labeler timings (stage seconds, and the process's CPU seconds)."""
        self.shard_marks.append((finished_at, images, crops))
        entry = self.labelers.setdefault(labeler.pid, {
            "started_at": labeler.started_at, "ready_at": labeler.ready_at, "gpu": labeler.gpu,
            "shards": [], "stage_s": 0.0, "cpu_s": 0.0})
        entry["shards"].append(finished_at)
        entry["stage_s"] += stage_s
        entry["cpu_s"] += cpu_s

    def steady_crops_per_s(self, skip: float = 0.2) -> float:
        """Crops/s once the first `skip` of the images are labeled: the rate without
        start-up (spawning labelers, loading models, capturing graphs), which a long job
        pays once. Timed where shards were labeled, so late delivery cannot skew it."""
        return self._steady(skip, 2)

    def steady_images_per_s(self, skip: float = 0.2) -> float:
        """Images/s after the first `skip` of the images, as `steady_crops_per_s`."""
        return self._steady(skip, 1)

    def _steady(self, skip: float, column: int) -> float:
        marks = sorted(self.shard_marks)
        done = 0
        for i, (t, images, _) in enumerate(marks[:-1]):
            done += images
            if done >= skip * self.images:
                count = sum(m[column] for m in marks[i + 1:])
                return count / (marks[-1][0] - t) if marks[-1][0] > t else 0.0
        return 0.0


def hours_per_million_images(images_per_s: float) -> float:
    """Wall-clock hours to label a million images at `images_per_s` on this machine: the
    planning number `posemum label` and the throughput benchmark print."""
    return 1e6 / images_per_s / 3600.0 if images_per_s > 0 else float("inf")


class LabelProgress(Protocol):
    """Progress display the CLI hands down (the library itself only logs)."""

    def start(self, total_images: int, done_images: int) -> None: ...

    def advance(self, images: int, crops: int, skipped: int) -> None: ...


def summary_json(summary: LabelSummary) -> str:
    """The summary as one json object (benchmarks and logs)."""
    data = asdict(summary)
    data.pop("shard_marks")
    data.pop("labelers")
    data.update(images_per_s=summary.images_per_s, crops_per_s=summary.crops_per_s,
                steady_crops_per_s=summary.steady_crops_per_s())
    return json.dumps(data)
