"""Heatmap codec: one object owns the sizes and σ, and both encodes and decodes.

Coordinate convention (pixel centres aligned): a crop pixel x maps to heatmap
coordinate (x + 0.5) / stride − 0.5. With it, flipping a crop and flipping its heatmap
are the same operation, so flip-test averaging needs no one-pixel shift, and encoding
at sub-pixel positions makes encode → decode exact to the quarter-pixel decode step.

The decode exists here once per array library, side by side: NumPy (`argmax_numpy`,
`HeatmapCodec.decode_heatmap_coords`, `HeatmapCodec.to_input`) for host batches and
DARK, torch (`argmax_torch`, `decode_quarter_torch`, `to_input_torch`) for heatmaps that
stay on the accelerator (device labeling, Joint Cutout's teacher joints).
tests/data/test_codec.py runs both on the same heatmaps. torch is imported only by the
torch functions, so a NumPy-only caller does not pay for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

# Heatmaps on the host or on the device: `flip_back` returns what it was given.
HeatmapsT = TypeVar("HeatmapsT", np.ndarray, "torch.Tensor")


@dataclass(frozen=True)
class HeatmapCodec:
    """Gaussian heatmaps of size `heatmap_hw` for crops of size `input_hw` (both H, W)."""

    input_hw: tuple[int, int] = (256, 192)
    heatmap_hw: tuple[int, int] = (64, 48)
    sigma: float = 2.0
    # crop x ↔ heatmap (x + offset)/stride − offset: 0.5 is the convention above; 0 that of
    # models trained elsewhere (mmpose's MSRA heatmaps, the original SimpleBaseline).
    offset: float = 0.5

    @property
    def stride(self) -> np.ndarray:
        """(x, y) input pixels per heatmap pixel."""
        return np.array([self.input_hw[1] / self.heatmap_hw[1],
                         self.input_hw[0] / self.heatmap_hw[0]])

    @property
    def flip_shift(self) -> float:
        """Heatmap pixels (rightward) that `flip_back` must move a mirrored heatmap by to
        line up with the unmirrored one: 0 under pixel centres, (1 − 2·offset)(1 − 1/stride)
        otherwise (0.75 at offset 0, stride 4; mmpose shifts by a whole pixel)."""
        return float((1.0 - 2.0 * self.offset) * (1.0 - 1.0 / self.stride[0]))

    def to_heatmap(self, xy: np.ndarray) -> np.ndarray:
        return (np.asarray(xy, dtype=np.float64) + self.offset) / self.stride - self.offset

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        return (np.asarray(xy, dtype=np.float64) + self.offset) * self.stride - self.offset

    def encode(self, keypoints: np.ndarray, visibility: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints [N, K, 2] in crop pixels, visibility [N, K] → heatmaps [N, K, h, w]
        float32 and target weights [N, K] (0 for unlabelled joints and joints whose
        centre falls outside the heatmap)."""
        mu = self.to_heatmap(keypoints)
        h, w = self.heatmap_hw
        inside = (mu[..., 0] >= 0) & (mu[..., 0] <= w - 1) & \
                 (mu[..., 1] >= 0) & (mu[..., 1] <= h - 1)
        weights = ((np.asarray(visibility) > 0) & inside).astype(np.float32)
        gx = np.exp(-((np.arange(w) - mu[..., 0:1]) ** 2) / (2 * self.sigma ** 2))
        gy = np.exp(-((np.arange(h) - mu[..., 1:2]) ** 2) / (2 * self.sigma ** 2))
        # The 0/1 weights go into the small x profile, not over the whole map: the same
        # values (×1 and ×0 are exact), 11× faster (a per-crop cost of every loader).
        heatmaps = gy[..., :, None] * (gx * weights[..., None])[..., None, :]
        return heatmaps.astype(np.float32), weights

    def decode(self, heatmaps: np.ndarray, dark: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
        """Heatmaps [N, K, h, w] → crop-pixel coords [N, K, 2] and scores [N, K] (max)."""
        coords, scores = self.decode_heatmap_coords(heatmaps, dark)
        return self.to_input(coords), scores

    def decode_heatmap_coords(self, heatmaps: np.ndarray, dark: bool = False
                              ) -> tuple[np.ndarray, np.ndarray]:
        """Argmax + quarter-pixel shift toward the higher neighbour (or DARK), in heatmap
        coordinates. Vectorised over every instance and joint."""
        hm = np.asarray(heatmaps, dtype=np.float32)
        x, y, scores = argmax_numpy(hm)
        if dark:
            offset = _dark_offsets(hm, x, y, self.sigma)
        else:
            offset = _quarter_offsets(hm, x, y)
        coords = np.stack([x, y], axis=-1).astype(np.float64) + offset
        coords[scores <= 0] = np.stack([x, y], axis=-1)[scores <= 0]
        return coords, scores


def argmax_numpy(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heatmaps [N, K, h, w] → integer x, y [N, K] (int64) of each map's maximum (the
    first in row-major order on a tie) and that maximum [N, K]."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, -1)
    idx = flat.argmax(axis=2)
    scores = np.take_along_axis(flat, idx[..., None], axis=2)[..., 0]
    return (idx % w).astype(np.int64), (idx // w).astype(np.int64), scores


def argmax_torch(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`argmax_numpy` on the tensor's device: x, y [N, K] (int64) and the maximum [N, K]."""
    import torch

    n, k, h, w = heatmaps.shape
    scores, idx = heatmaps.reshape(n, k, h * w).max(dim=-1)
    return idx % w, torch.div(idx, w, rounding_mode="floor"), scores


def decode_quarter_torch(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmaps [N, K, h, w] → heatmap coords [N, K, 2] and max scores [N, K] on the
    device: argmax, then ±0.25 toward the higher neighbour (a neighbour beyond the border
    counts as 0), exactly `HeatmapCodec.decode_heatmap_coords(dark=False)`."""
    import torch

    n, k, h, w = heatmaps.shape
    x, y, scores = argmax_torch(heatmaps)
    padded = torch.nn.functional.pad(heatmaps, (1, 1, 1, 1)).reshape(n, k, -1)
    wp = w + 2

    def at(dx: int, dy: int) -> torch.Tensor:
        return padded.gather(-1, ((y + 1 + dy) * wp + (x + 1 + dx)).unsqueeze(-1))[..., 0]

    offset = 0.25 * torch.stack([torch.sign(at(1, 0) - at(-1, 0)),
                                 torch.sign(at(0, 1) - at(0, -1))], dim=-1)
    coords = torch.stack([x, y], dim=-1).to(heatmaps.dtype)
    coords = torch.where((scores > 0).unsqueeze(-1), coords + offset, coords)
    return coords, scores


def to_input_torch(xy: torch.Tensor, input_hw: tuple[int, int],
                   heatmap_hw: tuple[int, int]) -> torch.Tensor:
    """`HeatmapCodec.to_input` for a tensor of heatmap coords [..., 2] (x, y), in its
    dtype on its device (the stride is copied up without a host sync)."""
    from posemum_deploy.data.device import device_constant

    stride = device_constant([input_hw[1] / heatmap_hw[1], input_hw[0] / heatmap_hw[0]],
                             xy.device)
    return (xy + 0.5) * stride - 0.5


def _gather(hm: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """hm[n, k, y, x] per instance/joint; 0 where (x, y) falls outside the map."""
    n, k, h, w = hm.shape
    xc, yc = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    return np.where(inside, hm[ni, ki, yc, xc], 0.0)


def _quarter_offsets(hm: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """±0.25 toward the higher neighbour; a neighbour beyond the border counts as 0."""
    dx = _gather(hm, x + 1, y) - _gather(hm, x - 1, y)
    dy = _gather(hm, x, y + 1) - _gather(hm, x, y - 1)
    return 0.25 * np.stack([np.sign(dx), np.sign(dy)], axis=-1)


def _dark_offsets(hm: np.ndarray, x: np.ndarray, y: np.ndarray, sigma: float) -> np.ndarray:
    """DARK (Zhang et al. 2020): blur, log, second-order Taylor step at the argmax."""
    n, k, h, w = hm.shape
    ksize = int(2 * round(3 * sigma) + 1)
    blurred = np.stack([cv2.GaussianBlur(m, (ksize, ksize), sigma) for m in hm.reshape(-1, h, w)])
    blurred = blurred.reshape(n, k, h, w)
    peak = hm.reshape(n, k, -1).max(axis=2)[..., None, None]
    bpeak = np.maximum(blurred.reshape(n, k, -1).max(axis=2)[..., None, None], 1e-10)
    logm = np.log(np.maximum(blurred * (peak / bpeak), 1e-10))
    v = lambda dx, dy: _gather(logm, x + dx, y + dy)  # noqa: E731
    dx = 0.5 * (v(1, 0) - v(-1, 0))
    dy = 0.5 * (v(0, 1) - v(0, -1))
    dxx = v(1, 0) - 2 * v(0, 0) + v(-1, 0)
    dyy = v(0, 1) - 2 * v(0, 0) + v(0, -1)
    dxy = 0.25 * (v(1, 1) - v(-1, 1) - v(1, -1) + v(-1, -1))
    det = dxx * dyy - dxy ** 2
    ok = (det != 0) & (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2)
    det = np.where(ok, det, 1.0)
    ox = -(dyy * dx - dxy * dy) / det
    oy = -(-dxy * dx + dxx * dy) / det
    offset = np.stack([ox, oy], axis=-1)
    # Near the border the blur is distorted; keep the quarter-pixel step there.
    ok = ok & (np.abs(offset) <= 0.5).all(axis=-1)
    return np.where(ok[..., None], offset, _quarter_offsets(hm, x, y))


def flip_back(heatmaps_of_flipped: HeatmapsT, flip_perm: np.ndarray,
              shift: float = 0.0) -> HeatmapsT:
    """Heatmaps predicted on mirrored crops → heatmaps for the original crops.

    Mirror along W and swap left/right joints; exact under the pixel-centre convention.
    Other conventions (`HeatmapCodec.flip_shift`) also move the result `shift` heatmap
    pixels right (|shift| < 1), by linear interpolation. Works on NumPy arrays and torch
    tensors alike.
    """
    if isinstance(heatmaps_of_flipped, np.ndarray):
        out = heatmaps_of_flipped[:, flip_perm, :, ::-1]
        if shift:
            side = np.zeros_like(out)
            if shift > 0:
                side[..., 1:] = out[..., :-1]
            else:
                side[..., :-1] = out[..., 1:]
            out = (1.0 - abs(shift)) * out + abs(shift) * side
        return out
    import torch
    import torch.nn.functional as F

    out = torch.flip(heatmaps_of_flipped, dims=[3])[:, torch.as_tensor(flip_perm)]
    if shift:
        side = F.pad(out[..., :-1], (1, 0)) if shift > 0 else F.pad(out[..., 1:], (0, 1))
        out = (1.0 - abs(shift)) * out + abs(shift) * side
    return out
