"""Test-time augmentation and teacher ensembles: better pseudo-labels than one pass.
(Just over 300 lines: the spec, the view crops, the warp back and the agreement share one
coordinate convention and are checked against each other; split, they would drift.)

Data Distillation (Radosavovic et al. 2018) labels with several transforms of one model,
heatmaps averaged before the argmax. Here every person is cropped at several box scales
(`--tta scales=...`) and optionally mirrored (`flip`), each view is run by every teacher
of an ensemble (`--model A --model B`), and each view's heatmaps are brought back to one
common frame (the scale-1.0 crop) before averaging and decoding.

View crops zoom the common crop about its pixel centre ((W-1)/2, (H-1)/2), which in
heatmap coordinates (pixel centres aligned, see `data.codec`) is a zoom about
((w-1)/2, (h-1)/2) by the same factor: the warp back does not depend on the box, so
its bilinear sampling plan is made once per scale, and it commutes exactly with the
mirror of flip test.

Agreement (per joint): each view's own decode, mapped to the common frame, against the
consensus decode of the averaged heatmap, scored as OKS does:
    agreement_j = mean over views v of exp(-d_vj² / (2 s² k_j²)),  k_j = 2 σ_j,
with s² the area of the person's box grown to the network's aspect ratio (the crop
without its 1.25 padding). 1.0 = every view put the joint at the same place; a view
off by the distance at which OKS is 0.5 contributes 0.5. Computed in crop pixels, where
it equals the image-space value (crops are similarities of the image).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from posemum_deploy.artifacts import ModelMetadata
from posemum_deploy.data.coco import OKS_SIGMAS
from posemum_deploy.data.codec import flip_back
from posemum_deploy.data.transforms import (
    affine_matrices,
    box_to_center_scale,
    warp_crops,
)
from posemum_deploy.errors import ConfigError
from posemum_deploy.inference.pipeline import CropBatch, PoseEstimator, codec_for

_HOW = "write e.g. --tta flip, --tta scales=0.8,1.0,1.2 or --tta flip,scales=0.8,1.0,1.2"
CROP_PADDING = 1.25  # box_to_center_scale's padding: s² is the crop area / 1.25²


@dataclass(frozen=True)
class TTASpec:
    """Which views of every person are inferred: box scales × (plain, mirrored)."""

    flip: bool = False
    scales: tuple[float, ...] = (1.0,)

    @property
    def trivial(self) -> bool:
        """One plain view at the box's own scale: the single pass."""
        return not self.flip and self.scales == (1.0,)

    @property
    def views(self) -> tuple[tuple[float, bool], ...]:
        """(scale, mirrored) per view, in the order they are inferred and averaged."""
        flips = (False, True) if self.flip else (False,)
        return tuple((s, f) for s in self.scales for f in flips)

    def __str__(self) -> str:
        parts = ["flip"] if self.flip else []
        if self.scales != (1.0,):
            parts.append("scales=" + ",".join(f"{s:g}" for s in self.scales))
        return ",".join(parts) or "none"


def parse_tta(text: str | None) -> TTASpec:
    """`flip`, `scales=0.8,1.0,1.2`, `flip,scales=...` or `none` → TTASpec; anything else
    (an unknown word, a scale that is not a number or is ≤ 0) is a one-line ConfigError."""
    if text is None or text.strip().lower() in ("", "none"):
        return TTASpec()
    flip, scales, in_scales = False, [], False
    for raw in text.split(","):
        token = raw.strip().lower()
        if token == "flip":
            flip, in_scales = True, False
            continue
        if token.startswith("scales="):
            token, in_scales = token[len("scales="):], True
        if not in_scales or not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?", token):
            raise ConfigError(f"--tta {text!r}: cannot read {raw.strip()!r}; {_HOW}")
        value = float(token)
        if value <= 0:
            raise ConfigError(f"--tta {text!r}: scale {value:g} must be > 0 (1.0 is the "
                              "person's box, 1.2 a 20% larger crop); " + _HOW)
        scales.append(value)
    unique = tuple(dict.fromkeys(scales)) or (1.0,)
    return TTASpec(flip, unique)


def view_matrices(boxes: np.ndarray, input_hw: tuple[int, int], scales: Sequence[float]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes [N, 4] → common crop → image affines [N, 2, 3], image → view crop affines
    [N, S, 2, 3] (the common crop zoomed out by each scale about its pixel centre) and
    the (scale·200)² areas of the common crops, as `crop_frames` gives them."""
    center, scale = box_to_center_scale(boxes, input_hw[1] / input_hw[0])
    common = affine_matrices(center, scale, 0.0, input_hw)
    inverse = affine_matrices(center, scale, 0.0, input_hw, inverse=True)
    pivot = np.array([(input_hw[1] - 1) / 2.0, (input_hw[0] - 1) / 2.0])
    views = np.empty((len(boxes), len(scales), 2, 3))
    for i, s in enumerate(scales):
        views[:, i, :, :2] = common[:, :, :2] / s
        views[:, i, :, 2] = pivot + (common[:, :, 2] - pivot) / s
    return inverse, views, np.prod(scale * 200.0, axis=1)


def make_view_crops(image: np.ndarray, boxes: np.ndarray, box_scores: np.ndarray,
                    input_hw: tuple[int, int], scales: Sequence[float]) -> CropBatch:
    """`make_crops` for TTA: crops [N, S, H, W, 3] of every box at every scale; `inverse`
    and `areas` are those of the common (scale 1.0) crop, where results are decoded."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    inverse, views, areas = view_matrices(boxes, input_hw, scales)
    n, s = views.shape[:2]
    crops = warp_crops(image, views.reshape(n * s, 2, 3), input_hw)
    return CropBatch(crops.reshape(n, s, *crops.shape[1:]), inverse, boxes,
                     np.asarray(box_scores, dtype=np.float64).reshape(-1), areas)


def zoom_plan(hw: tuple[int, int], factor: float, center: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear plan for out(u) = hm(c + (u - c)·factor), c the map's pixel centre (or
    `center`): flat source indices [4, h·w] and weights [4, h·w] (0 outside the map)."""
    h, w = hw
    c = np.array([(w - 1) / 2.0, (h - 1) / 2.0]) if center is None else np.asarray(center)
    ys, xs = np.mgrid[0:h, 0:w]
    src = c + (np.stack([xs.ravel(), ys.ravel()], axis=1) - c) * factor
    x0, y0 = np.floor(src[:, 0]).astype(np.int64), np.floor(src[:, 1]).astype(np.int64)
    fx, fy = src[:, 0] - x0, src[:, 1] - y0
    idx, wts = [], []
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                       (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        x, y = x0 + dx, y0 + dy
        inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
        idx.append(np.where(inside, np.clip(y, 0, h - 1) * w + np.clip(x, 0, w - 1), 0))
        wts.append(np.where(inside, wt, 0.0))
    return np.stack(idx), np.stack(wts).astype(np.float32)


def zoom_heatmaps(heatmaps: np.ndarray, factor: float,
                  plan: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Heatmaps [N, K, h, w] resampled as out(u) = hm(c + (u - c)·factor): a view made at
    box scale s comes back to the common frame with factor 1/s (and goes there with s)."""
    n, k, h, w = heatmaps.shape
    idx, wts = plan if plan is not None else zoom_plan((h, w), factor)
    flat = np.asarray(heatmaps, dtype=np.float32).reshape(n, k, h * w)
    out = (flat[:, :, idx] * wts).sum(axis=2, dtype=np.float32)
    return out.reshape(n, k, h, w)


def check_ensemble(metas: Sequence[ModelMetadata], names: Sequence[str],
                   option: str = "--model", alone: str = "label with one --model") -> None:
    """Members share input size, heatmap size, keypoints and flip pairs with the first
    entry (a model, or "the run"'s metadata): heatmaps are averaged pixel for pixel, joint
    for joint. An error names the member as given with `option`, and what to do."""
    first = metas[0]
    for meta, name in zip(metas[1:], names[1:], strict=True):
        for what, a, b in (("input size", first.input_hw, meta.input_hw),
                           ("heatmap size", first.heatmap_hw, meta.heatmap_hw),
                           ("keypoint set", first.keypoint_names, meta.keypoint_names),
                           ("flip pairs", first.flip_pairs, meta.flip_pairs)):
            if tuple(a) != tuple(b):
                raise ConfigError(
                    f"{option} {name}: its {what} {tuple(b)} differs from {names[0]}'s "
                    f"{tuple(a)}; ensemble members need the same input size and keypoint "
                    f"set (export or train them alike, or {alone})")


def read_model_list(path: str | Path) -> list[str]:
    """`--models FILE`: one model path a line (blank lines and # comments skipped),
    relative paths taken from the file's folder."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"--models {path}: cannot read it ({e.strerror or e}); pass a text "
                          "file with one model path a line") from e
    models = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    if not models:
        raise ConfigError(f"--models {path}: no model paths in it; write one path a line")
    return [str(m if Path(m).is_absolute() else path.parent / m) for m in models]


def joint_sigmas(meta: ModelMetadata) -> np.ndarray:
    """Per-joint OKS σ: the model's own (`extra["oks_sigmas"]`), COCO's for 17 joints,
    else COCO's mean σ for every joint."""
    given = meta.extra.get("oks_sigmas") if isinstance(meta.extra, dict) else None
    if given is not None and len(given) == meta.num_joints:
        return np.asarray(given, dtype=np.float64)
    if meta.num_joints == len(OKS_SIGMAS):
        return OKS_SIGMAS
    return np.full(meta.num_joints, float(OKS_SIGMAS.mean()))


@dataclass
class ViewHeatmaps:
    """Averaged heatmaps [N, K, h, w] in the common frame and every view's own decode
    mapped there, in common crop pixels [V, N, K, 2]."""

    mean: np.ndarray
    views: np.ndarray

    def __len__(self) -> int:
        return len(self.mean)


def _host(array: Any) -> np.ndarray:
    """Heatmaps from any estimator (a device tensor from the uploading one) on the host."""
    if isinstance(array, np.ndarray):
        return array
    return array.detach().float().cpu().numpy()


class TTAEstimator:
    """`PoseEstimator`'s interface (heatmaps → decode) over teachers × views.

    `heatmaps` takes crops [N, S, H, W, 3] (S = len(spec.scales); [N, H, W, 3] when S is
    1) and returns `ViewHeatmaps`; `decode` returns keypoints [N, K, 4]: x, y, heatmap
    score and agreement. Members are plain estimators without flip test (their own
    padding to their batch size, any backend); mirrored views are made here.
    """

    def __init__(self, members: Sequence[PoseEstimator], spec: TTASpec,
                 names: Sequence[str] | None = None) -> None:
        if not members:
            raise ConfigError("--model: an ensemble needs at least one model")
        names = list(names or [m.backend.name for m in members])
        if any(m.flip for m in members):
            raise ValueError("TTAEstimator members run without flip test; TTASpec.flip mirrors")
        check_ensemble([m.meta for m in members], names)
        self.members, self.spec = list(members), spec
        self.meta = members[0].meta
        self.codec = codec_for(self.meta)
        self.batch_size = members[0].batch_size
        self.dark = members[0].dark
        self.flip_perm = members[0].flip_perm
        hw = self.meta.heatmap_hw
        h, w = self.meta.input_hw
        # the crop's pixel centre, about which views zoom, in this codec's heatmap frame
        # ((w-1)/2, (h-1)/2 under pixel centres; imported teachers may use another offset)
        self.hm_center = self.codec.to_heatmap(np.array([(w - 1) / 2.0, (h - 1) / 2.0]))
        self.plans = {s: zoom_plan(hw, 1.0 / s, self.hm_center) for s in spec.scales if s != 1.0}
        k = 2.0 * joint_sigmas(self.meta)
        self.inv_var = 1.0 / (2.0 * (h * w / CROP_PADDING ** 2) * k ** 2)  # [K]

    @property
    def num_views(self) -> int:
        return len(self.members) * len(self.spec.views)

    def heatmaps(self, crops: np.ndarray) -> ViewHeatmaps:
        """Crops of every scale → averaged common-frame heatmaps + per-view decodes."""
        if crops.ndim == 4:
            crops = crops[:, None]
        total: np.ndarray | None = None
        views = []
        hm_center = self.hm_center
        for member in self.members:
            for si, scale in enumerate(self.spec.scales):
                batch = crops[:, si]
                n = len(batch)
                if self.spec.flip:
                    batch = np.concatenate([batch, batch[:, :, ::-1]])
                out = _host(member.heatmaps(batch))
                parts = [out[:n]] + ([flip_back(out[n:], self.flip_perm, self.codec.flip_shift)]
                                      if self.spec.flip else [])
                for hm in parts:
                    coords, _ = self.codec.decode_heatmap_coords(hm, self.dark)
                    views.append(hm_center + (coords - hm_center) * scale)
                    if scale != 1.0:
                        hm = zoom_heatmaps(hm, 1.0 / scale, self.plans[scale])
                    total = hm.astype(np.float32) if total is None else total + hm
        assert total is not None
        mean = total if self.num_views == 1 else total * np.float32(1.0 / self.num_views)
        return ViewHeatmaps(mean, self.codec.to_input(np.stack(views)))

    def decode(self, heatmaps: ViewHeatmaps, inverse: np.ndarray) -> np.ndarray:
        """Keypoints [N, K, 4] in the image: x, y, score, agreement (see module doc)."""
        from posemum_deploy.data.transforms import transform_points

        coords, scores = self.codec.decode(heatmaps.mean, dark=self.dark)
        d2 = ((heatmaps.views - coords[None]) ** 2).sum(axis=-1)  # [V, N, K] crop px²
        agreement = np.exp(-d2 * self.inv_var).mean(axis=0)
        xy = transform_points(coords, inverse)
        return np.concatenate([xy, scores[..., None], agreement[..., None]], axis=-1)

    def estimate(self, batch: CropBatch) -> np.ndarray:
        """Keypoints [N, K, 4] for a CropBatch made by `make_view_crops`."""
        return self.decode(self.heatmaps(batch.crops), batch.inverse)


def ensemble_estimator(models: Sequence[str | Path], spec: TTASpec, backend: str = "auto",
                       batch_size: int = 32, dark: bool = False, cpu_threads: int | None = None,
                       **options: Any) -> TTAEstimator:
    """Open every model with `backend` (each member pads to `batch_size` on its own) and
    wrap them as one `TTAEstimator` over `spec`'s views."""
    from posemum_deploy.inference.backends import load_backend

    members = [PoseEstimator(load_backend(m, backend, cpu_threads=cpu_threads, **options),
                             batch_size, False, dark) for m in models]
    return TTAEstimator(members, spec, [Path(m).name for m in models])
