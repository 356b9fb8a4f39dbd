"""Ultralytics YOLO-pose datasets: written from COCO keypoints, read back as COCO.

Layout (as Ultralytics reads it): `data.yaml` with `path`, one entry per split naming an
image folder (or a .txt list of images, or a list of either), `kpt_shape: [17, 3]`,
`flip_idx`, `names`; each image `.../images/<split>/a.jpg` has its labels at
`.../labels/<split>/a.txt`, one person per line: `cls cx cy w h` then K × `x y v`, all
normalised by the image's width and height (after EXIF rotation, as Ultralytics sizes
images). Written datasets reference the original images through symlinks, never copies.
Sizes come from each image's header (Pillow, lazy), so grayscale and odd sizes are fine.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from posemum_deploy.data.coco import (
    FLIP_PAIRS,
    KEYPOINT_NAMES,
    flip_permutation,
    person_category,
)
from posemum_deploy.errors import AnnotationError, ConfigError, ImageError

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
SPLITS = ("train", "val", "test")
DIGITS = 6  # normalised values: 1e-6 of a 10,000 px side is 0.01 px


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) as displayed: EXIF orientations 5-8 swap the stored sides."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except FileNotFoundError as e:
        raise ImageError(f"{path}: image file not found") from e
    except (UnidentifiedImageError, OSError) as e:
        raise ImageError(f"{path}: not a readable image ({e})") from e
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last `/images/` becomes `/labels/`, the suffix `.txt`."""
    parts = list(image.parts)
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        parts[i] = "labels"
    return Path(*parts).with_suffix(".txt")


def _fmt(v: float) -> str:
    return f"{v:.{DIGITS}f}".rstrip("0").rstrip(".") or "0"


def yolo_line(ann: dict[str, Any], width: int, height: int) -> tuple[str, int]:
    """One label line for a COCO person, and how many labeled joints fell outside the
    image (written as unlabeled: Ultralytics refuses coordinates outside [0, 1])."""
    x, y, w, h = (float(v) for v in ann["bbox"])
    x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    box = [(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height]
    kps = np.asarray(ann.get("keypoints") or [0.0] * 3 * len(KEYPOINT_NAMES),
                     dtype=np.float64).reshape(-1, 3)
    fields, outside = [], 0
    for kx, ky, v in kps:
        if v > 0 and not (0 <= kx <= width and 0 <= ky <= height):
            outside += 1
            v = 0
        fields += ["0", "0", "0"] if v <= 0 else [_fmt(kx / width), _fmt(ky / height), str(int(v))]
    return " ".join(["0", *map(_fmt, box), *fields]), outside


def write_yolo_dataset(coco: dict[str, Any], images_dir: str | Path, out: str | Path,
                       split: str = "train") -> Path:
    """COCO keypoints (file names relative to `images_dir`) → an Ultralytics pose dataset
    split under `out` (symlinked images, label files, data.yaml); returns data.yaml.
    Crowd regions are skipped: YOLO has no way to say "ignore this area"."""
    if split not in SPLITS:
        raise ConfigError(f"--split {split!r}: choose {', '.join(SPLITS)}")
    images_dir, out = Path(images_dir).resolve(), Path(out)
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in coco.get("annotations", []):
        if not ann.get("iscrowd", 0) and ann.get("category_id", 1) == 1:
            by_image.setdefault(ann["image_id"], []).append(ann)
    outside = 0
    for im in coco["images"]:
        rel = Path(im["file_name"])
        link = out / "images" / split / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(images_dir / rel)
        lines = []
        for ann in by_image.get(im["id"], []):
            line, n = yolo_line(ann, im["width"], im["height"])
            lines.append(line)
            outside += n
        target = out / "labels" / split / rel.with_suffix(".txt")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join(f"{line}\n" for line in lines))
    if outside:
        log.warning("%d labeled joints outside their image written as unlabeled (v=0)", outside)
    return _write_yaml(out, split)


def _write_yaml(out: Path, split: str) -> Path:
    """data.yaml, keeping splits written before (e.g. val after train)."""
    path = out / "data.yaml"
    data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    data = data if isinstance(data, dict) else {}
    data.update({"path": str(out.resolve()), split: f"images/{split}"})
    data.setdefault("val", data.get("train", f"images/{split}"))  # Ultralytics needs a val
    data.update({"kpt_shape": [len(KEYPOINT_NAMES), 3],
                 "flip_idx": flip_permutation(len(KEYPOINT_NAMES), FLIP_PAIRS).tolist(),
                 "names": {0: "person"}})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def read_data_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the dataset yaml ({e})") from e
    if not isinstance(data, dict) or "kpt_shape" not in data:
        raise ConfigError(f"{path}: not a YOLO-pose dataset yaml (no kpt_shape); pass the "
                          "data.yaml with path, train/val and kpt_shape: [17, 3]")
    return data


def split_images(yaml_path: Path, data: dict[str, Any], split: str) -> tuple[Path, list[Path]]:
    """The split's image folder (file names are relative to it) and its images."""
    if data.get(split) in (None, ""):
        raise ConfigError(f"{yaml_path}: no '{split}' entry; it has "
                          f"{', '.join(s for s in SPLITS if data.get(s)) or 'no splits'}")
    base = Path(data.get("path") or yaml_path.parent)
    base = base if base.is_absolute() else (yaml_path.parent / base)
    entries = data[split] if isinstance(data[split], list) else [data[split]]
    images: list[Path] = []
    for entry in entries:
        p = Path(entry) if Path(entry).is_absolute() else base / entry
        if p.is_dir():
            images += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.suffix == ".txt" and p.is_file():
            for line in p.read_text().splitlines():
                if line.strip():
                    f = Path(line.strip())
                    images.append(f if f.is_absolute() else base / f)
        else:
            raise ConfigError(f"{yaml_path}: {split} entry {entry} is not a folder or a .txt "
                              f"list of images ({p} not found)")
    if not images:
        raise ConfigError(f"{yaml_path}: no images in the {split} split ({', '.join(map(str, entries))})")
    root = Path(os.path.commonpath([str(f.parent) for f in images]))
    return root, images


def parse_label_file(path: Path, num_kpts: int, ndim: int) -> list[np.ndarray]:
    """Rows of a label file as float arrays; one-line error naming file and line."""
    rows = []
    expected = 5 + num_kpts * ndim
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{path}:{number}"
        if len(fields) != expected:
            raise AnnotationError(f"{where}: {len(fields)} fields, expected {expected} (cls cx "
                                  f"cy w h + {num_kpts}×{ndim} keypoint values)")
        try:
            values = np.array([float(v) for v in fields], dtype=np.float64)
        except ValueError as e:
            raise AnnotationError(f"{where}: not a number ({e})") from e
        coords = np.concatenate([values[1:5], values[5:].reshape(num_kpts, ndim)[:, :2].ravel()])
        if not ((coords >= 0) & (coords <= 1)).all():
            bad = coords[(coords < 0) | (coords > 1)][0]
            raise AnnotationError(f"{where}: value {bad:g} outside [0, 1] (YOLO coordinates "
                                  "are normalised by the image size)")
        if ndim == 3 and not np.isin(values[7::3], (0, 1, 2)).all():
            raise AnnotationError(f"{where}: visibility must be 0, 1 or 2")
        rows.append(values)
    return rows


def yolo_to_coco(yaml_path: str | Path, split: str = "train") -> tuple[dict[str, Any], Path]:
    """A YOLO-pose split as a COCO person-keypoints dict, and the folder its `file_name`s
    are relative to. Class-0 lines only (COCO's person); others are counted and skipped."""
    yaml_path = Path(yaml_path)
    data = read_data_yaml(yaml_path)
    shape = list(data["kpt_shape"])
    if len(shape) != 2 or shape[1] not in (2, 3):
        raise ConfigError(f"{yaml_path}: kpt_shape {shape}; expected [K, 2] or [K, 3]")
    num_kpts, ndim = int(shape[0]), int(shape[1])
    root, images = split_images(yaml_path, data, split)
    coco: dict[str, Any] = {"info": {"description": f"converted from {yaml_path} ({split})"},
                            "images": [], "annotations": [],
                            "categories": [person_category()]}
    if num_kpts != len(KEYPOINT_NAMES):
        coco["categories"][0].update(keypoints=[f"kpt_{i}" for i in range(num_kpts)],
                                     skeleton=[])
    skipped = 0
    for image_id, image in enumerate(images, 1):
        w, h = image_size(image)
        coco["images"].append({"id": image_id, "file_name": image.relative_to(root).as_posix(),
                               "width": w, "height": h})
        labels = label_path(image)
        for row in parse_label_file(labels, num_kpts, ndim) if labels.is_file() else []:
            if int(row[0]) != 0:
                skipped += 1
                continue
            bw, bh = round(float(row[3] * w), 3), round(float(row[4] * h), 3)
            x0, y0 = round(float(row[1] * w - bw / 2), 3), round(float(row[2] * h - bh / 2), 3)
            k = row[5:].reshape(num_kpts, ndim)
            v = k[:, 2] if ndim == 3 else ((k[:, 0] > 0) | (k[:, 1] > 0)) * 2.0
            kps = np.stack([k[:, 0] * w, k[:, 1] * h, v], axis=1)
            kps[v == 0] = 0.0
            coco["annotations"].append({
                "id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": 1,
                "bbox": [x0, y0, bw, bh], "area": round(bw * bh, 3), "iscrowd": 0,
                "keypoints": [round(float(x), 3) if i % 3 < 2 else int(x)
                              for i, x in enumerate(kps.ravel())],
                "num_keypoints": int((v > 0).sum())})
    if skipped:
        log.warning("%s: %d lines of classes other than 0 (person) skipped", yaml_path, skipped)
    return coco, root


def yolo_split_json(yaml_path: str | Path, split: str, out_dir: str | Path) -> tuple[str, str]:
    """A YOLO-pose split saved as OUT_DIR/yolo_<split>.json for readers of COCO json (the
    trainer); returns (json path, the image folder its file names are relative to)."""
    from posemum_deploy.data.coco import save_json

    coco, root = yolo_to_coco(yaml_path, split)
    return str(save_json(coco, Path(out_dir) / f"yolo_{split}.json")), str(root)
