"""Synthetic articulated people in COCO person-keypoints format (`posemum synth`).

Tests, the demo and a training smoke test need data that ships with the code. Each
person is a small 3D capsule body (COCO-17 joints, human proportions and joint ranges)
turned to any facing and projected orthographically, so foreshortening, profile and back
views come for free. Joint pads make joints easy to find. Side comes from facing (face,
neckline and zip only on the front, toes point forward) and from limb stripes slanted one
way on the left and the other way on the right: both are mirror-consistent, so they stay
true under horizontal-flip augmentation (a plain left-only pattern would not). People are
drawn far to near; a joint covered by something drawn later gets v=1. One numpy
Generator per image: same seed, same bytes. The body itself (poses, proportions, 3D
points) is `synthetic_body`; here it is turned, placed, drawn and annotated.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from posemum_deploy.data.coco import NUM_KEYPOINTS, person_category, save_json
from posemum_deploy.data.synthetic_body import HEAD, NECK, PROP, TOES, TORSO, body_points, rot, sample_pose
from posemum_deploy.errors import ConfigError

log = logging.getLogger(__name__)

JPEG_QUALITY = 90
_JPEG = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel drawing so joints sit where they are drawn
_ONE = 1 << _SHIFT
# Capsule thickness as a fraction of height.
_THICK = dict(upper_arm=0.060, forearm=0.048, thigh=0.085, shin=0.065, neck=0.05,
              hand=0.026, foot=0.035)
_SKIN = np.array([[60, 90, 140], [80, 120, 180], [110, 150, 210], [140, 180, 230],
                  [40, 60, 100], [95, 140, 200]], dtype=np.float64)  # BGR
# Facing: mostly toward the camera, a quarter from behind; side views come from the spread.
_BACK_FACING = 0.15
# Nose, eyes, ears are drawn and labelled only if their surface normal's z (toward the
# camera) is above this: no eyes on the back of a head, no far ear in profile.
_FACE_MIN_Z = np.array([0.0, 0.0, 0.0, -0.2, -0.2])
# Capsules (joint a, joint b, thickness, colour) for the left side; +1 gives the right.
_LIMBS = ((5, 7, "upper_arm", "shirt"), (7, 9, "forearm", "sleeve"), (11, 13, "thigh", "pants"),
          (13, 15, "shin", "legs"), (15, TOES, "foot", "shoes"))
# Pads at the body joints, one fixed colour per joint type (BGR), the same on both sides
# so that horizontal-flip augmentation never contradicts them.
_MARKS = {j + s: c for j, c in {5: (0, 0, 230), 7: (0, 220, 255), 9: (255, 0, 200),
                                11: (0, 140, 255), 13: (255, 200, 0), 15: (40, 220, 40)}.items()
          for s in (0, 1)}


def _unit(v: np.ndarray) -> np.ndarray:
    """A 2D direction, safe for zero-length vectors (a limb seen end-on)."""
    return v / (np.hypot(*v) + 1e-6)


def _fx(p: np.ndarray) -> tuple[int, int]:
    """A float pixel point as cv2 fixed-point integers."""
    return int(round(float(p[0]) * _ONE)), int(round(float(p[1]) * _ONE))


def _capsule(img: np.ndarray, mask: np.ndarray, a: np.ndarray, b: np.ndarray, t: float,
             colour: np.ndarray, slant: int, ends: tuple[int, int] = (-1, -1)) -> None:
    """A thick outlined limb (outlines show each part's extent, and so its joints), pads at
    the joints `ends` that _MARKS colours, and stripes at +45° to the limb axis (slant 1,
    left limbs) or -45° (slant -1, right): a mirror swaps the two, as it swaps the sides."""
    t = max(1, int(round(t)))
    cv2.line(img, _fx(a), _fx(b), tuple(colour * 0.3), t + 2, cv2.LINE_AA, _SHIFT)
    cv2.line(img, _fx(a), _fx(b), tuple(colour), t, cv2.LINE_AA, _SHIFT)
    cv2.line(mask, _fx(a), _fx(b), 255, t + 2, cv2.LINE_8, _SHIFT)
    band = tuple(colour * 0.4 + (150 if colour.mean() < 110 else 0))  # stands out on colour
    u = _unit(b - a)
    across = 0.45 * t * (u + slant * np.array([-u[1], u[0]]))  # stays inside the capsule
    k = max(2, int(np.hypot(*(b - a)) / (0.9 * t))) if slant else 0
    for f in np.arange(1, k) / k:
        c = a + f * (b - a)
        cv2.line(img, _fx(c - across), _fx(c + across), band, max(1, t // 4), cv2.LINE_AA,
                 _SHIFT)
    for point, joint in zip((a, b), ends, strict=True):
        if joint in _MARKS:
            _disc(img, mask, point, 0.35 * t, _MARKS[joint])


def _poly(img: np.ndarray, mask: np.ndarray, pts: np.ndarray, colour: np.ndarray) -> None:
    """A filled, outlined convex polygon (torso, neckline) and its silhouette."""
    fixed = np.round(pts * _ONE).astype(np.int32)
    cv2.fillConvexPoly(img, fixed, tuple(colour), cv2.LINE_AA, _SHIFT)
    cv2.polylines(img, [fixed], True, tuple(colour * 0.3), 2, cv2.LINE_AA, _SHIFT)
    cv2.fillConvexPoly(mask, fixed, 255, cv2.LINE_8, _SHIFT)


def _disc(img: np.ndarray, mask: np.ndarray | None, c: np.ndarray, r: float,
          colour: Any) -> None:
    """A filled antialiased circle; with a `mask` a body part: outlined, silhouette drawn."""
    rr = max(1, int(round(r * _ONE)))
    if mask is not None:
        cv2.circle(img, _fx(c), rr + _ONE, tuple(np.multiply(colour, 0.3)), -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(mask, _fx(c), rr + _ONE, 255, -1, cv2.LINE_8, _SHIFT)
    cv2.circle(img, _fx(c), rr, tuple(colour), -1, cv2.LINE_AA, _SHIFT)


def _draw_head(img: np.ndarray, mask: np.ndarray, xy: np.ndarray, normals: np.ndarray,
               r: float, skin: np.ndarray, hair: np.ndarray) -> None:
    """Hair-coloured skull, a face disc shifted toward where the head looks, and eyes,
    nose and mouth only on the side facing the camera: front, profile and back differ."""
    nz, fwd = normals[:, 2], normals[5]
    _disc(img, mask, xy[HEAD], r, hair)
    if fwd[2] > -0.35:
        _disc(img, None, xy[HEAD] + 0.32 * r * fwd[:2] * [1, -1], 0.8 * r, skin)
    # Face marks big enough to be seen in a 128x96 crop of a small person.
    dot, shown = max(1.5, 0.26 * r), nz[:5] > _FACE_MIN_Z
    for j, size, colour in ((1, 1.0, (25, 20, 20)), (2, 1.0, (25, 20, 20)), (0, 1.3, skin * 0.6),
                            (3, 1.6, skin * 0.85), (4, 1.6, skin * 0.85)):
        if shown[j]:
            _disc(img, None, xy[j], size * dot, colour)
    if shown[0] and fwd[2] > 0.3:
        _disc(img, None, xy[0] + 0.35 * r * _unit(xy[0] - xy[HEAD]), dot, (40, 40, 150))


def _sample_person(rng: np.random.Generator, img_h: int, img_w: int) -> dict[str, Any]:
    """Pose, facing, tilt, size, clothes and a place in the image (sometimes partly out)."""
    pts, normals = body_points(rng, sample_pose(rng))
    u = rng.random()
    roll = (np.radians(rng.uniform(60, 110)) * rng.choice([-1, 1]) if u < 0.04
            else np.radians(rng.normal(0, 10)) if u < 0.45 else 0.0)
    back = rng.random() < _BACK_FACING
    yaw = np.radians(rng.normal(180.0 if back else 0.0, 20.0 if back else 30.0))
    g = rot(2, roll) @ rot(1, yaw)
    hpx = rng.uniform(0.3, 0.95) * img_h
    cam, normals = pts @ g.T * hpx, normals @ g.T
    xy = cam[:, :2] * [1.0, -1.0]
    lo, hi = xy.min(0), xy.max(0)
    out = (hi - lo) * (0.35 if rng.random() < 0.25 else 0.0)
    a, b = -lo - out, np.array([img_w, img_h]) - hi + out
    xy += rng.uniform(np.minimum(a, b), np.maximum(a, b))
    skin = np.clip(_SKIN[rng.integers(len(_SKIN))] + rng.uniform(-15, 15, 3), 0, 255)
    shirt, pants = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    colours = dict(skin=skin, shirt=shirt, pants=pants, shoes=rng.uniform(0, 120, 3),
                   hair=rng.uniform(0, 70, 3) if rng.random() < 0.8 else rng.uniform(120, 220, 3),
                   sleeve=shirt if rng.random() < 0.5 else skin,
                   legs=pants if rng.random() < 0.7 else skin)
    return dict(xy=xy, z=cam[:, 2], normals=normals, h=hpx, colours=colours,
                depth=hpx * rng.uniform(0.8, 1.2))


def _draw_person(img: np.ndarray, mask: np.ndarray, p: dict[str, Any]) -> None:
    """Paint one person onto `img` and its silhouette onto `mask`, far parts first so
    limbs overlap correctly; a skin V and a zip mark the front of the chest."""
    xy, z, h, c = p["xy"], p["z"], p["h"], p["colours"]
    tz = float(z[TORSO:].mean())
    # (depth, painter(img, mask, *args), args): the painters take different arguments.
    parts: list[tuple[float, Callable[..., None], tuple[Any, ...]]] = [
        (tz, _poly, (cv2.convexHull(xy[TORSO:].astype(np.float32))[:, 0], c["shirt"])),
        (z[NECK] + 1e-3, _capsule, (xy[NECK], xy[HEAD], _THICK["neck"] * h, c["skin"], 0)),
        (z[HEAD] + 0.02 * h, _draw_head, (xy, p["normals"], PROP["head"] * h,
                                          c["skin"], c["hair"]))]
    if p["normals"][6, 2] > 0.2:
        neck, across = xy[NECK], 0.3 * (xy[5] - xy[6])
        vee = np.stack([neck + across, neck - across, neck + 0.25 * (xy[11:13].mean(0) - neck)])
        parts.append((tz + 1e-4, _poly, (vee, c["skin"])))
        zip_colour = c["shirt"] * 0.4 + (150 if c["shirt"].mean() < 110 else 0)
        parts.append((tz + 2e-4, _capsule, (neck, xy[11:13].mean(0), 0.02 * h, zip_colour, 0)))
    for side in (0, 1):
        for a, b, name, col in _LIMBS:
            a, b = a + side, b + side
            parts.append(((z[a] + z[b]) / 2, _capsule, (xy[a], xy[b], _THICK[name] * h, c[col],
                                                          (1 - 2 * side) * (name != "foot"),
                                                          (a, b))))
        wrist, r = xy[9 + side], _THICK["hand"] * h  # the hand sits beyond the wrist band
        hand = wrist + 0.8 * r * _unit(wrist - xy[7 + side])
        parts.append((z[9 + side] - 1e-3, _disc, (hand, r, c["skin"])))
    for _, draw, args in sorted(parts, key=lambda q: q[0]):
        draw(img, mask, *args)


def _clutter(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray | None, n: int,
             reach: float = 1.0) -> None:
    """Random boxes (up to `reach` of the image), blobs and limb-like strokes: things a
    pose model must learn to ignore; with a `mask`, occluders in front of people."""
    h, w = img.shape[:2]
    for _ in range(n):
        col = tuple(rng.uniform(0, 255, 3))
        kind, size = rng.integers(3), rng.uniform(0.01, 0.15) * h
        p, q = rng.uniform(0, 1, (2, 2)) * [w, h]
        p, q = _fx(p), _fx(p + (q - p) * (reach if kind == 0 else 0.3))
        targets = [(img, cv2.LINE_AA)] + ([(mask, cv2.LINE_8)] if mask is not None else [])
        for dst, lt in targets:
            colour = col if lt == cv2.LINE_AA else 255
            if kind == 0:
                cv2.rectangle(dst, p, q, colour, -1, lt, _SHIFT)
            elif kind == 1:
                cv2.circle(dst, p, int(size * _ONE), colour, -1, lt, _SHIFT)
            else:
                cv2.line(dst, p, q, colour, max(2, int(size * 0.5)), lt, _SHIFT)


def _finish(rng: np.random.Generator, img: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Camera-like nuisance: optional blur, contrast/brightness jitter and sensor noise
    (a crop of one precomputed noise tile, so it costs almost nothing)."""
    h, w = img.shape[:2]
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    oy, ox = rng.integers(0, noise.shape[0] - h), rng.integers(0, noise.shape[1] - w)
    out = img.astype(np.float32) * rng.uniform(0.75, 1.15) + rng.uniform(-20, 20)
    out += noise[oy:oy + h, ox:ox + w] * rng.uniform(2, 12)
    return np.clip(out, 0, 255).astype(np.uint8)


def _annotate(p: dict[str, Any], mask: np.ndarray, label: np.ndarray, rank: int
              ) -> dict[str, Any] | None:
    """COCO fields of one person: v=2 seen, v=1 covered by something drawn later (label
    above `rank`), v=0 out of frame or facing away (stored as 0, 0); area = silhouette."""
    area = cv2.countNonZero(mask)
    if area == 0:
        return None
    h, w = mask.shape
    kp, nz = p["xy"][:NUM_KEYPOINTS], p["normals"][:, 2]
    seen = np.concatenate([nz[:5] > _FACE_MIN_Z, np.ones(NUM_KEYPOINTS - 5, bool)])
    seen &= (kp[:, 0] >= 0) & (kp[:, 0] <= w - 1) & (kp[:, 1] >= 0) & (kp[:, 1] <= h - 1)
    xi, yi = np.clip(np.round(kp).astype(int), 0, [w - 1, h - 1]).T
    v = np.where(seen, np.where(label[yi, xi] > rank, 1, 2), 0)
    kps = np.concatenate([np.where(seen[:, None], np.round(kp, 2), 0.0), v[:, None]], 1)
    return dict(category_id=1, bbox=[float(x) for x in cv2.boundingRect(mask)],
                keypoints=[float(x) for x in kps.ravel()], num_keypoints=int((v > 0).sum()),
                area=float(area), iscrowd=0)


def _render_image(rng: np.random.Generator, h: int, w: int, max_people: int,
                  noise: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One picture: background clutter, 1..max_people people far to near, sometimes an
    object in front; returns the BGR image and its (id-less) annotations."""
    grid = rng.uniform(0, 255, (rng.integers(2, 6), rng.integers(2, 6), 3))
    grid = 0.5 * grid + 0.5 * grid.mean(axis=2, keepdims=True)  # muted, so people stand out
    img = cv2.resize(grid.astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
    _clutter(rng, img, None, int(rng.integers(2, 7)))
    people = sorted((_sample_person(rng, h, w) for _ in range(rng.integers(1, max_people + 1))),
                    key=lambda p: p["depth"])
    label, masks = np.zeros((h, w), np.uint8), []
    for rank, p in enumerate(people, start=1):
        masks.append(np.zeros((h, w), np.uint8))
        _draw_person(img, masks[-1], p)
        label[masks[-1] > 0] = rank
    if rng.random() < 0.12:
        front = np.zeros((h, w), np.uint8)
        _clutter(rng, img, front, int(rng.integers(1, 3)), reach=0.3)
        label[front > 0] = 255
    anns = [_annotate(p, m, label, r) for r, (p, m) in enumerate(zip(people, masks, strict=True), 1)]
    return _finish(rng, img, noise), [a for a in anns if a is not None]


def generate_dataset(out_dir: str | Path, num_images: int, seed: int = 0, *,
                     image_size: tuple[int, int] = (256, 320), max_people: int = 4,
                     progress: Callable[[int], None] | None = None) -> Path:
    """Write OUT/images/000001.jpg... (name = image id, from 1) and OUT/annotations.json
    (COCO person keypoints); return the json path. `image_size` is (H, W).

    Image i has its own Generator seeded (seed, i): a dataset is byte-identical for a
    seed and a shorter one is a prefix of a longer one. `progress(n)` runs per image.
    """
    h, w = image_size
    if num_images < 1 or max_people < 1 or min(h, w) < 32:
        raise ConfigError(f"synth: need num_images >= 1, max_people >= 1 and an image of at "
                          f"least 32x32 (got {num_images}, {max_people}, {h}x{w})")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng([seed, 1 << 30]).standard_normal((2 * h, 2 * w, 3), np.float32)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for i in range(num_images):
        img, anns = _render_image(np.random.default_rng([seed, i]), h, w, max_people, noise)
        name = f"{i + 1:06d}.jpg"
        if not cv2.imwrite(str(out / "images" / name), img, _JPEG):
            raise OSError(f"{out / 'images' / name}: could not write the image; check disk space")
        images.append(dict(id=i + 1, file_name=name, width=w, height=h))
        for a in anns:
            annotations.append(dict(id=len(annotations) + 1, image_id=i + 1, **a))
        if progress is not None:
            progress(i + 1)
    info = dict(description=f"posemum synthetic people, seed {seed}", version="1")
    path = save_json(dict(info=info, images=images, annotations=annotations,
                          categories=[person_category()]), out / "annotations.json")
    log.info("wrote %d images, %d people to %s", num_images, len(annotations), path)
    return path
