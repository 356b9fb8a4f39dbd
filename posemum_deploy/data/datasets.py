"""Top-down person datasets: labeled crops with heatmap targets, unlabeled crops.

Augmentation randomness is drawn from a generator keyed by (seed, epoch, index), so an
item is the same whichever worker makes it and a resumed run sees the same samples.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from posemum_deploy.data.boxes import _clean_box
from posemum_deploy.data.coco import flip_permutation, load_coco_keypoints
from posemum_deploy.data.codec import HeatmapCodec
from posemum_deploy.data.images import IMAGE_SUFFIXES, check_paths_found, read_checked_bytes, read_image
from posemum_deploy.data.transforms import (
    AffineAugment,
    affine_matrices,
    box_to_center_scale,
    flip_matrices,
    invert_affine,
    transform_points,
)
from posemum_deploy.errors import AnnotationError, ImageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PersonInstance:
    """One person: where the image is, the box (xywh) and keypoints [K, 3] (x, y, v)."""

    image_path: Path
    image_id: int
    box: tuple[float, float, float, float]
    keypoints: np.ndarray | None
    ann_id: int = -1


def load_instances(ann_path: str | Path, images_dir: str | Path, limit: int | None = None,
                   require_keypoints: bool = True) -> list[PersonInstance]:
    """Person instances of a COCO json in annotation order (first `limit` with keypoints).

    `limit` gives the paper's 1K/5K/10K labeled splits: the first N instances with
    num_keypoints > 0, in the order the file lists them.
    """
    coco = load_coco_keypoints(ann_path, require_persons=require_keypoints)
    images = {im["id"]: im for im in coco["images"]}
    out: list[PersonInstance] = []
    for ann in coco["annotations"]:
        if ann.get("iscrowd", 0) or ann.get("category_id", 1) != 1:
            continue
        if require_keypoints and ann.get("num_keypoints", 0) == 0:
            continue
        im = images.get(ann["image_id"])
        if im is None:
            raise AnnotationError(f"{ann_path}: annotation {ann.get('id')} refers to image "
                                  f"{ann['image_id']} which is not in 'images'")
        box = _clean_box(ann["bbox"], im["width"], im["height"])
        if box is None:
            continue
        kps = ann.get("keypoints")
        kps = np.asarray(kps, dtype=np.float32).reshape(-1, 3) if kps else None
        x, y, w, h = box
        out.append(PersonInstance(Path(images_dir) / im["file_name"], im["id"], (x, y, w, h),
                                  kps, ann.get("id", -1)))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise AnnotationError(f"{ann_path}: no usable person instances (need non-crowd boxes"
                              f"{' with keypoints' if require_keypoints else ''})")
    return out


def check_images_found(instances: list[PersonInstance], images_dir: str | Path | None,
                       source: str | Path, probe: int = 64) -> None:
    """`check_paths_found` for the images of `instances` (read from `source`)."""
    check_paths_found([inst.image_path for inst in instances], images_dir, source, probe=probe)


def check_json_images(ann_path: str | Path, images_dir: str | Path | None) -> None:
    """`check_images_found` for a COCO json read later (the val set, first read at the
    first validation), so a wrong folder fails before training, not an epoch in."""
    instances = load_instances(ann_path, images_dir or "", require_keypoints=False)
    check_images_found(instances, images_dir, ann_path)


class TopDownDataset(Dataset):
    """Affine crops of person instances, with heatmap targets when keypoints exist.

    Items: `image` uint8 [3, H, W], `target` [K, h, w], `target_weight` [K], `index`,
    `unreadable` (the requested instance when its image could not be read, else -1);
    with `encoded`, `file`, `encoded` (its bytes) and `inverse` (crop → image) replace
    `image`.
    Normalisation happens on the device, on the whole batch (4× less to copy).
    A bad image is logged and replaced by the next instance; `UnreadableImages` collects
    the `unreadable` fields in the main process for the end-of-run report.
    """

    def __init__(self, instances: list[PersonInstance], codec: HeatmapCodec,
                 augment: AffineAugment | None = None, seed: int = 0,
                 with_targets: bool = True, cache_images: bool = False,
                 encoded: bool = False) -> None:
        self.instances = instances
        self.codec = codec
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.with_targets = with_targets
        k = next((len(i.keypoints) for i in instances if i.keypoints is not None), 17)
        self.flip_perm = flip_permutation(k)
        self.num_joints = k
        self.skipped: set[int] = set()
        # Decoded images kept in memory (small datasets on few cores: decode once, not
        # once per epoch). Each DataLoader worker holds its own cache.
        self.cache: dict[Path, Any] | None = {} if cache_images else None
        # Items carry the file's bytes and the crop → image affine instead of the crop
        # (`encoded`): the crops are cut on the GPU (training/device_batches.py), and a
        # worker's cost per crop drops from a full-image decode to a file read.
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.instances)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        for attempt in range(len(self.instances)):
            i = (index + attempt) % len(self.instances)
            try:
                image = self._read(self.instances[i].image_path)
            except ImageError as e:
                if i not in self.skipped:
                    log.warning("skipped: %s", e)
                    self.skipped.add(i)
                continue
            item = self._make_item(i, image)
            item["unreadable"] = index if attempt else -1
            return item
        raise ImageError("no readable image in the dataset; check --images")

    def _read(self, path: Path) -> Any:
        """The decoded image, or with `encoded` its checked bytes (ImageError if bad)."""
        read = read_checked_bytes if self.encoded else read_image
        if self.cache is None:
            return read(path)
        if path not in self.cache:
            self.cache[path] = read(path)
        return self.cache[path]

    def _make_item(self, index: int, image: Any) -> dict[str, Any]:
        inst = self.instances[index]
        h, w = self.codec.input_hw
        center, scale = box_to_center_scale(np.array([inst.box]), w / h)
        rot, flip = np.zeros(1), np.zeros(1, dtype=bool)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            s, rot, flip = self.augment.sample(rng, 1)
            scale = scale * s[:, None]
        mat = affine_matrices(center, scale, rot, (h, w))
        if flip[0]:
            mat = flip_matrices(mat, w)
        item: dict[str, Any] = {"index": index}
        if self.encoded:
            item["file"] = str(inst.image_path)
            item["encoded"] = torch.from_numpy(np.frombuffer(image, dtype=np.uint8).copy())
            item["inverse"] = torch.from_numpy(invert_affine(mat)[0].astype(np.float32))
        else:
            import cv2

            crop = cv2.warpAffine(image, mat[0], (w, h), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            item["image"] = torch.from_numpy(crop).permute(2, 0, 1).contiguous()
        if self.with_targets:
            kps = inst.keypoints if inst.keypoints is not None else np.zeros((self.num_joints, 3))
            xy = transform_points(kps[None, :, :2].astype(np.float64), mat)[0]
            vis = kps[:, 2].copy()
            if flip[0]:
                xy, vis = xy[self.flip_perm], vis[self.flip_perm]
            heatmaps, weights = self.codec.encode(xy[None], vis[None])
            item["target"] = torch.from_numpy(heatmaps[0])
            item["target_weight"] = torch.from_numpy(weights[0])
        return item


class HasInstances(Protocol):
    """A dataset of person crops (`TopDownDataset`, or the rounds' labeled + pseudo mix)."""

    @property
    def instances(self) -> Sequence[PersonInstance]: ...


class UnreadableImages:
    """Instances whose image could not be read, gathered in the main process from each
    batch's `unreadable` field: a loader worker's own skip set dies with the worker (they
    restart every epoch), so the items carry the news."""

    def __init__(self, dataset: HasInstances) -> None:
        self.instances = dataset.instances
        self.indices: set[int] = set()

    def note(self, batch: dict[str, Any]) -> None:
        bad = batch.get("unreadable")
        if bad is not None and bool((bad >= 0).any()):
            self.indices.update(int(i) for i in bad[bad >= 0])

    def paths(self) -> set[str]:
        return {str(self.instances[i].image_path) for i in self.indices}


def load_unlabeled_instances(source: str | Path, images_dir: str | Path | None = None,
                             boxes: str = "whole") -> list[PersonInstance]:
    """Person crops for the unlabeled stream; any keypoints in the source are ignored.

    `source` is one of: a COCO json (its person boxes; labels ignored), a pseudo-label
    json (a COCO json written by `posemum label`/`merge`, or a results list with
    image_id/bbox, images named by id), or an image folder, whose person boxes come from
    `boxes`: "whole" (each image is one person crop) or a detection results json whose
    image_id is the file's numeric stem (COCO naming).
    """
    source = Path(source)
    if source.is_dir():
        return _folder_instances(source, boxes)
    if images_dir is None:
        raise AnnotationError(f"{source}: --unlabeled-images is needed to find the images "
                              "of an unlabeled json")
    from posemum_deploy.data.coco import load_json

    data = load_json(source)
    if isinstance(data, dict):
        return load_instances(source, images_dir, require_keypoints=False)
    if not isinstance(data, list):
        raise AnnotationError(f"{source}: expected a COCO json, a results list or a folder")
    files = {_stem_id(p): p for p in Path(images_dir).iterdir() if _stem_id(p) is not None}
    out = []
    for entry in data:
        path = files.get(int(entry.get("image_id", -1)))
        if path is not None and entry.get("bbox") and entry.get("category_id", 1) == 1:
            out.append(PersonInstance(path, int(entry["image_id"]), tuple(entry["bbox"]), None))
    if not out:
        raise AnnotationError(f"{source}: no results entry has a bbox and an image_id that "
                              f"names a file in {images_dir}")
    return out


def _stem_id(path: Path) -> int | None:
    return int(path.stem) if path.suffix.lower() in IMAGE_SUFFIXES and path.stem.isdigit() else None


def _folder_instances(folder: Path, boxes: str) -> list[PersonInstance]:
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise AnnotationError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    if boxes == "whole":
        import cv2

        out = []
        for i, p in enumerate(paths):
            size = cv2.imread(str(p), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
            if size is None:
                log.warning("skipped: %s cannot be read", p)
                continue
            h, w = size.shape[:2]
            out.append(PersonInstance(p, i, (0.0, 0.0, float(w), float(h)), None))
        return out
    from posemum_deploy.data.boxes import detection_boxes

    table = detection_boxes(boxes)
    out = []
    for p in paths:
        stem_id = _stem_id(p)
        image_id = stem_id if stem_id is not None else -1
        found = table.get(image_id)
        for box in found[0] if found is not None else []:
            x, y, w, h = (float(v) for v in box)
            out.append(PersonInstance(p, image_id, (x, y, w, h), None))
    if not out:
        raise AnnotationError(f"{boxes}: no detection's image_id matches an image in {folder} "
                              "(image_id must be the file's numeric name)")
    return out
