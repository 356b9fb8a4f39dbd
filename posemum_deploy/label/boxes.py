"""Person boxes for bulk labeling, from a spec string such as `det:dets.json` or `full`.

Every source answers `boxes(rel_path, image) -> (boxes [M, 4] xywh, scores [M])` for one
decoded image, inside a decode worker. The same score threshold and per-image cap apply
to every source, so switching sources never changes what "max 20 people" means.
Sources are picklable (Ray ships them to actors); heavy state (a detector) loads lazily.

Specs: `gt:ANN.json` (COCO ground-truth boxes), `det:DET.json` (COCO detection results;
file names → image ids come from `ann=`, else the numeric file stem as in COCO),
`hog` (OpenCV's people detector), `full` (the whole image: pre-cropped people),
`detector:WEIGHTS` or `detector:ARCH:WEIGHTS` (a torchvision detector, local file).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np

from posemum_deploy.artifacts import sha256_file
from posemum_deploy.data.boxes import BoxTable, detection_boxes, gt_boxes
from posemum_deploy.data.coco import load_json
from posemum_deploy.errors import BackendUnavailableError, ConfigError

BOX_KINDS = ("gt", "det", "hog", "full", "detector")
# Their sources have `raw(rel_path, width, height)`: boxes from the image size alone, so
# the pixels may be decoded elsewhere (on the GPU); hog and detector boxes read pixels.
SIZE_ONLY_KINDS = ("gt", "det", "full")
HOG_MAX_SIDE = 960  # HOG cost grows with pixels; people stay detectable at this size


class BoxSource(Protocol):
    """Where person boxes come from; `identity()` goes into the run manifest."""

    def boxes(self, rel_path: str, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def identity(self) -> dict[str, Any]: ...


@dataclass
class BoxLimits:
    """Keep boxes scoring ≥ score_threshold, at most max_people per image (best first)."""

    score_threshold: float = 0.0
    max_people: int = 20

    def apply(self, boxes: np.ndarray, scores: np.ndarray, width: int, height: int
              ) -> tuple[np.ndarray, np.ndarray]:
        """Clip boxes to the image, drop degenerate/low boxes, sort by score (ties keep
        their order), cap the count."""
        n = len(np.asarray(scores).reshape(-1))
        clipped, kept, _ = self.apply_many(boxes, scores, np.zeros(n, dtype=np.int64),
                                           np.array([width]), np.array([height]))
        return clipped, kept

    def apply_many(self, boxes: np.ndarray, scores: np.ndarray, owner: np.ndarray,
                   widths: np.ndarray, heights: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`apply` for the boxes of many images at once (box i belongs to image
        `owner[i]`, of size widths/heights[owner[i]]): (boxes, scores, owner) grouped by
        image in owner order, each image's exactly as `apply` gives them. The GPU
        labeler calls it once per chunk instead of a dozen NumPy calls per image."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        owner = np.asarray(owner, dtype=np.int64).reshape(-1)
        w = np.asarray(widths, dtype=np.float64)[owner]
        h = np.asarray(heights, dtype=np.float64)[owner]
        x1 = np.clip(boxes[:, 0], 0, w - 1)
        y1 = np.clip(boxes[:, 1], 0, h - 1)
        x2 = np.clip(boxes[:, 0] + boxes[:, 2], 0, w)
        y2 = np.clip(boxes[:, 1] + boxes[:, 3], 0, h)
        clipped = np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)
        ok = (clipped[:, 2] > 0) & (clipped[:, 3] > 0) & (scores >= self.score_threshold)
        clipped, scores, owner = clipped[ok], scores[ok], owner[ok]
        order = np.lexsort((-scores, owner))  # by image, then score; stable like `apply`
        grouped = owner[order]
        rank = np.arange(len(order)) - np.searchsorted(grouped, grouped, side="left")
        order = order[rank < self.max_people]
        return clipped[order], scores[order], owner[order]


class SizeOnlyBoxSource(BoxSource, Protocol):
    """A source of `SIZE_ONLY_KINDS`: `raw` boxes from the image size alone, then `limits`
    (what `sized_boxes` needs)."""

    limits: BoxLimits

    def raw(self, rel_path: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class FullImageBoxes:
    """One box covering the whole image (folders of pre-cropped people)."""

    limits: BoxLimits = field(default_factory=BoxLimits)

    def boxes(self, rel_path: str, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = image.shape[:2]
        return self.limits.apply(*self.raw(rel_path, w, h), w, h)

    def raw(self, rel_path: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """The boxes before `limits` (see `sized_boxes`)."""
        return np.array([[0.0, 0.0, width, height]]), np.ones(1)

    def identity(self) -> dict[str, Any]:
        return {"kind": "full", **vars(self.limits)}


@dataclass
class TableBoxes:
    """Boxes from a COCO json, matched to files by file_name (relative path or basename)."""

    kind: str
    path: Path
    table: BoxTable
    ids: dict[str, int]
    limits: BoxLimits
    sha256: str

    def image_id(self, rel_path: str) -> int | None:
        """The COCO image id of a file: exact relative path, basename, or numeric stem."""
        for key in (rel_path, PurePosixPath(rel_path).name):
            if key in self.ids:
                return self.ids[key]
        stem = PurePosixPath(rel_path).stem
        return int(stem) if not self.ids and stem.isdigit() else None

    def boxes(self, rel_path: str, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = image.shape[:2]
        return self.limits.apply(*self.raw(rel_path, w, h), w, h)

    def raw(self, rel_path: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """The boxes before `limits` (see `sized_boxes`)."""
        image_id = self.image_id(rel_path)
        if image_id is None or image_id not in self.table:
            return _NO_BOXES
        return self.table[image_id]

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "file_sha256": self.sha256, **vars(self.limits)}

    def check_covers(self, files: list[str], probe: int = 1000) -> None:
        """Fail before labeling when the box file knows none of the folder's first `probe`
        files: another set's json would label every image with no person, silently."""
        def known(rel: str) -> bool:
            image_id = self.image_id(rel)
            return image_id is not None and (bool(self.ids) or image_id in self.table)

        sample = files[:probe]
        if sample and not any(map(known, sample)):
            raise ConfigError(
                f"--boxes {self.kind}:{self.path}: none of the folder's first {len(sample)} "
                f"images is in it (e.g. {sample[0]}); pass the box file of these images "
                "(matched by file_name, or by numeric file stem = image_id)")


_NO_BOXES = (np.zeros((0, 4)), np.zeros(0))


def sized_boxes(source: SizeOnlyBoxSource, images: list[tuple[str, int, int]]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes of many images from a source that needs only their sizes: (boxes [M, 4],
    scores [M], boxes per image [len(images)]), grouped by image in order, each image's
    exactly what `source.boxes` gives it. One vectorised pass over a chunk."""
    raws = [source.raw(rel, width, height) for rel, width, height in images]
    counts = [len(b) for b, _ in raws]
    owner = np.repeat(np.arange(len(images)), counts)
    boxes = np.concatenate([np.asarray(b, dtype=np.float64).reshape(-1, 4) for b, _ in raws]) \
        if raws else np.zeros((0, 4))
    scores = np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1) for _, s in raws]) \
        if raws else np.zeros(0)
    sizes = np.asarray([(w, h) for _, w, h in images], dtype=np.float64).reshape(-1, 2)
    boxes, scores, owner = source.limits.apply_many(boxes, scores, owner, sizes[:, 0],
                                                    sizes[:, 1])
    return boxes, scores, np.bincount(owner, minlength=len(images))


def file_name_ids(coco: dict[str, Any]) -> dict[str, int]:
    """file_name → image id, also under the basename when that basename is unique."""
    ids: dict[str, int] = {}
    basenames: dict[str, list[int]] = {}
    for im in coco.get("images", []):
        name = str(im["file_name"]).replace("\\", "/")
        ids[name] = int(im["id"])
        basenames.setdefault(PurePosixPath(name).name, []).append(int(im["id"]))
    for base, found in basenames.items():
        if len(found) == 1:
            ids.setdefault(base, found[0])
    return ids


class HogBoxes:
    """OpenCV's Dalal-Triggs HOG people detector: weak, but needs no weights file.

    OpenCV 5 moved HOG to the contrib build (`cv2.xobjdetect`); both places are tried.
    Scores are the SVM margins squashed by a logistic so thresholds live in (0, 1).
    """

    def __init__(self, limits: BoxLimits) -> None:
        self.limits = limits
        self._local = threading.local()
        self._hog_class()  # fail at start, not in every worker

    @staticmethod
    def _hog_class() -> Any:
        import cv2

        cls = getattr(cv2, "HOGDescriptor", None) or getattr(
            getattr(cv2, "xobjdetect", None), "HOGDescriptor", None)
        if cls is None:
            raise BackendUnavailableError(
                f"--boxes hog: this OpenCV ({cv2.__version__}) has no HOG people detector "
                "(OpenCV 5 moved it to opencv-contrib); install opencv-contrib-python-headless "
                "or use --boxes full / det:DET.json / detector:WEIGHTS")
        return cls

    def __getstate__(self) -> dict[str, Any]:
        return {"limits": self.limits}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.limits = state["limits"]
        self._local = threading.local()

    def boxes(self, rel_path: str, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        hog = getattr(self._local, "hog", None)
        if hog is None:  # HOGDescriptor is not thread-safe: one per decode thread
            hog = self._local.hog = self._hog_class()()
            hog.setSVMDetector(hog.getDefaultPeopleDetector())
        h, w = image.shape[:2]
        k = min(1.0, HOG_MAX_SIDE / max(h, w))
        small = cv2.resize(image, (max(1, round(w * k)), max(1, round(h * k)))) if k < 1 else image
        if min(small.shape[:2]) < 128:
            return np.zeros((0, 4)), np.zeros(0)
        rects, weights = hog.detectMultiScale(small, winStride=(8, 8), padding=(8, 8), scale=1.05)
        boxes = np.asarray(rects, dtype=np.float64).reshape(-1, 4) / k
        scores = 1.0 / (1.0 + np.exp(-np.asarray(weights, dtype=np.float64).reshape(-1)))
        return self.limits.apply(boxes, scores, w, h)

    def identity(self) -> dict[str, Any]:
        return {"kind": "hog", "max_side": HOG_MAX_SIDE, **vars(self.limits)}


def parse_box_source(spec: str, score_threshold: float = 0.0, max_people: int = 20,
                     ann: str | Path | None = None) -> BoxSource:
    """Build a box source from `gt:ANN.json`, `det:DET.json`, `hog`, `full` or `detector:...`.

    `ann` (a COCO json with `images`) maps file names to ids for `det:`.
    """
    kind, _, arg = spec.partition(":")
    limits = BoxLimits(score_threshold, max_people)
    if kind not in BOX_KINDS:
        raise ConfigError(f"--boxes {spec!r}: unknown source; use gt:ANN.json, det:DET.json, "
                          "hog, full or detector:WEIGHTS")
    if kind in ("gt", "det", "detector") and not arg:
        raise ConfigError(f"--boxes {kind}: needs a file, e.g. --boxes {kind}:path/to/file")
    if kind == "full":
        return FullImageBoxes(limits)
    if kind == "hog":
        return HogBoxes(limits)
    if kind == "detector":
        from posemum_deploy.label.detector import TorchvisionDetectorBoxes

        return TorchvisionDetectorBoxes.from_spec(arg, limits)
    path = Path(arg)
    if kind == "gt":
        coco = load_json(path)
        if not isinstance(coco, dict) or "images" not in coco or "annotations" not in coco:
            raise ConfigError(f"{path}: gt: boxes need a COCO annotation file "
                              "(with 'images' and 'annotations')")
        return TableBoxes("gt", path, gt_boxes(coco, require_keypoints=False),
                          file_name_ids(coco), limits, sha256_file(path))
    table = detection_boxes(path)
    ids = file_name_ids(load_json(ann)) if ann else {}
    digest = sha256_file(path) + (f"+{sha256_file(ann)}" if ann else "")
    return TableBoxes("det", path, table, ids, limits, digest)
