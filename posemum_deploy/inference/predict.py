"""Predict COCO keypoint results for an annotated image set (evaluation input).

Images are decoded by a thread pool (OpenCV releases the GIL), crops of many images
are packed into fixed-size batches, and the raw per-box results are rescored and
OKS-NMSed as SimpleBaseline does before scoring.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from posemum_deploy.data.boxes import BoxTable, detection_boxes, gt_boxes
from posemum_deploy.data.coco import load_coco_keypoints
from posemum_deploy.data.images import check_paths_found, read_image
from posemum_deploy.errors import ImageError
from posemum_deploy.evaluation.nms import postprocess_results
from posemum_deploy.inference.backends import Backend, load_backend
from posemum_deploy.inference.pipeline import CropBatch, PoseEstimator, make_crops

log = logging.getLogger(__name__)

# what to fix when the images are not where --images says
FOLDER_HINT = "point --images (or the val images folder) at the folder that holds them"
Progress = Callable[[int], None]


def _decoded(jobs: list[tuple[int, Path]], workers: int) -> Iterator[tuple[int, np.ndarray | None]]:
    def load(job: tuple[int, Path]) -> tuple[int, np.ndarray | None]:
        try:
            return job[0], read_image(job[1])
        except ImageError as e:
            log.warning("skipped: %s", e)
            return job[0], None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        yield from pool.map(load, jobs)


def predict_with_boxes(estimator: PoseEstimator, coco: dict[str, Any], images_dir: str | Path,
                       boxes: BoxTable, workers: int = 2,
                       progress: Progress | None = None) -> tuple[list[dict[str, Any]], int]:
    """Raw (not NMSed) results for every box, and the number of images skipped as bad."""
    images_dir = Path(images_dir)
    jobs = [(im["id"], images_dir / im["file_name"]) for im in coco["images"] if im["id"] in boxes]
    results: list[dict[str, Any]] = []
    pending: list[tuple[int, CropBatch]] = []
    skipped = 0

    def flush() -> None:
        if not pending:
            return
        crops = np.concatenate([b.crops for _, b in pending])
        inverse = np.concatenate([b.inverse for _, b in pending])
        kpts = estimator.decode(estimator.heatmaps(crops), inverse)
        i = 0
        for image_id, b in pending:
            for j in range(len(b.boxes)):
                results.append({"image_id": image_id, "category_id": 1,
                                "keypoints": kpts[i].reshape(-1).tolist(),
                                "score": float(b.box_scores[j]), "area": float(b.areas[j])})
                i += 1
        pending.clear()

    queued = 0
    for image_id, image in _decoded(jobs, workers):
        if image is None:
            skipped += 1
        else:
            batch = make_crops(image, *boxes[image_id], estimator.meta.input_hw)
            pending.append((image_id, batch))
            queued += len(batch.boxes)
            if queued >= estimator.batch_size:
                flush()
                queued = 0
        if progress:
            progress(1)
    flush()
    return results, skipped


def predict_coco(model: str | Path | Backend, ann_path: str | Path, images_dir: str | Path,
                 boxes: str | Path = "gt", flip: bool = False, batch_size: int = 32,
                 backend: str = "auto", progress: Progress | None = None,
                 box_score_threshold: float = 0.0, workers: int = 2,
                 dark: bool = False) -> list[dict[str, Any]]:
    """COCO keypoint results (rescored, OKS-NMS 0.9) for the images of `ann_path`.

    `boxes` is "gt" (ground-truth person boxes) or the path of a detection results json.
    """
    coco = load_coco_keypoints(ann_path)
    if str(boxes) == "gt":
        table = gt_boxes(coco)
    else:
        table = detection_boxes(boxes, box_score_threshold)
    wanted = [im for im in coco["images"] if im["id"] in table]
    check_paths_found([Path(images_dir) / im["file_name"] for im in wanted], images_dir,
                      ann_path, hint=FOLDER_HINT)  # at once, not one warning each
    be = model if isinstance(model, Backend) else load_backend(model, backend)
    estimator = PoseEstimator(be, batch_size=batch_size, flip=flip, dark=dark)
    raw, skipped = predict_with_boxes(estimator, coco, images_dir, table, workers, progress)
    if skipped and skipped == len(wanted):  # one bad file is skipped; all of them is not luck
        raise _wrong_folder(images_dir, ann_path, wanted)
    if skipped:
        log.warning("%d image(s) could not be read and were skipped", skipped)
    return postprocess_results(raw)


def _wrong_folder(images_dir: str | Path, ann_path: str | Path,
                  wanted: list[dict[str, Any]]) -> ImageError:
    return ImageError(f"{images_dir}: none of the {len(wanted)} images of {ann_path} could be "
                      f"read there (e.g. {wanted[0]['file_name']}); {FOLDER_HINT}")
