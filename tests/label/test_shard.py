"""prefetch keeps order and a bounded lead; a broken box source never ends the run."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np

from posemum_deploy.label.boxes import FullImageBoxes
from posemum_deploy.label.shard import StageTimes, prefetch, prepare_image


def test_prefetch_is_ordered_and_bounded() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.append(i)
        time.sleep(0.001 * ((7 * i) % 5))  # finish out of order
        return i * i

    times = StageTimes()
    it = prefetch(work, range(40), workers=3, depth=5, times=times)
    assert next(it) == 0
    time.sleep(0.05)
    assert max(started) <= 5  # never more than `depth` ahead of the consumer
    assert list(it) == [i * i for i in range(1, 40)]
    assert "wait_for_decode" in times.seconds


def test_prepare_image_records_errors_instead_of_raising(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((20, 10, 3), np.uint8))

    class Broken(FullImageBoxes):
        def boxes(self, rel_path, image):
            raise RuntimeError("detector fell over")

    times = StageTimes()
    ok = prepare_image(tmp_path, "a.png", FullImageBoxes(), (32, 24), times)
    assert ok.error is None and ok.crops.crops.shape == (1, 32, 24, 3) and (ok.width, ok.height) == (10, 20)
    bad = prepare_image(tmp_path, "a.png", Broken(), (32, 24), times)
    assert bad.error == "RuntimeError: detector fell over" and bad.crops is None
    missing = prepare_image(tmp_path, "nope.png", FullImageBoxes(), (32, 24), times)
    assert "not found" in missing.error
    assert {"decode", "boxes", "crop"} <= set(times.seconds)
