"""Top-down geometry (SimpleBaseline conventions), batched over boxes.

A person box (x, y, w, h) becomes a center and a scale (in units of pixel_std = 200 px)
with aspect ratio W/H of the network input and 1.25 padding; a similarity transform maps
that region onto the input crop. Pixel centres are integer coordinates on both sides,
which is what cv2.warpAffine assumes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

PIXEL_STD = 200.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def box_to_center_scale(boxes: np.ndarray, aspect_ratio: float, padding: float = 1.25
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [N, 4] xywh → centers [N, 2], scales [N, 2] (w, h in units of 200 px).

    The box is grown to the input's aspect ratio (w/h) so the crop is not distorted.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x, y, w, h = boxes.T
    center = np.stack([x + w * 0.5, y + h * 0.5], axis=1)
    wide = w > aspect_ratio * h
    new_w = np.where(wide, w, h * aspect_ratio)
    new_h = np.where(wide, w / aspect_ratio, h)
    scale = np.stack([new_w, new_h], axis=1) / PIXEL_STD * padding
    return center, scale


def affine_matrices(center: np.ndarray, scale: np.ndarray, rotation: np.ndarray | float,
                    output_hw: tuple[int, int], inverse: bool = False) -> np.ndarray:
    """Similarity transforms image → crop ([N, 2, 3]); `inverse` gives crop → image.

    dst = dst_center + (out_w / (scale_w·200)) · R(−rot) · (src − center), rotation in
    degrees (positive = the person appears rotated counter-clockwise in the crop).
    """
    center = np.asarray(center, dtype=np.float64).reshape(-1, 2)
    scale = np.asarray(scale, dtype=np.float64).reshape(-1, 2)
    n = center.shape[0]
    rot = np.deg2rad(np.broadcast_to(np.asarray(rotation, dtype=np.float64), (n,)))
    out_h, out_w = output_hw
    k = out_w / (scale[:, 0] * PIXEL_STD)  # dst pixels per src pixel
    cos, sin = np.cos(rot), np.sin(rot)
    dst_c = np.array([out_w * 0.5, out_h * 0.5])
    mats = np.empty((n, 2, 3))
    if not inverse:
        # R(-rot) = [[cos, sin], [-sin, cos]]
        a = np.stack([np.stack([cos, sin], 1), np.stack([-sin, cos], 1)], 1) * k[:, None, None]
        mats[:, :, :2] = a
        mats[:, :, 2] = dst_c - np.einsum("nij,nj->ni", a, center)
    else:
        a = np.stack([np.stack([cos, -sin], 1), np.stack([sin, cos], 1)], 1) / k[:, None, None]
        mats[:, :, :2] = a
        mats[:, :, 2] = center - np.einsum("nij,j->ni", a, dst_c)
    return mats


def transform_points(points: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Apply per-instance 2×3 affines: points [N, K, 2], matrices [N, 2, 3] → [N, K, 2]."""
    return np.einsum("nij,nkj->nki", matrices[:, :, :2], points) + matrices[:, None, :, 2]


def warp_crops(image: np.ndarray, matrices: np.ndarray, output_hw: tuple[int, int]) -> np.ndarray:
    """Crops [N, H, W, 3] uint8 of one image through image → crop affines [N, 2, 3]."""
    out_h, out_w = output_hw
    crops = np.empty((len(matrices), out_h, out_w, image.shape[2]), dtype=image.dtype)
    for i, m in enumerate(matrices):
        cv2.warpAffine(image, m, (out_w, out_h), dst=crops[i], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crops


@dataclass(frozen=True)
class AffineAugment:
    """Random scale/rotation/flip of the SimpleBaseline training recipe ("Affine")."""

    scale_factor: float = 0.25
    rotation_factor: float = 30.0
    rotation_prob: float = 0.6
    flip_prob: float = 0.5

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-instance (scale multiplier [n], rotation degrees [n], flip flags [n])."""
        s = np.clip(rng.normal(1.0, self.scale_factor, n), 1 - self.scale_factor,
                    1 + self.scale_factor)
        r = np.clip(rng.normal(0.0, self.rotation_factor, n), -2 * self.rotation_factor,
                    2 * self.rotation_factor)
        r = np.where(rng.random(n) < self.rotation_prob, r, 0.0)
        f = rng.random(n) < self.flip_prob
        return s, r, f


def invert_affine(matrices: np.ndarray) -> np.ndarray:
    """Inverse 2×3 affines [N, 2, 3]: crop → image for image → crop, or back."""
    linear = np.linalg.inv(matrices[:, :, :2])
    return np.concatenate([linear, -linear @ matrices[:, :, 2:]], axis=2)


def flip_matrices(matrices: np.ndarray, output_w: int) -> np.ndarray:
    """Compose image → crop affines with a horizontal mirror of the crop (x → W−1−x)."""
    out = matrices.copy()
    out[:, 0, :] = -matrices[:, 0, :]
    out[:, 0, 2] += output_w - 1
    return out


def normalize_batch(crops: torch.Tensor, mean: tuple[float, ...] = IMAGENET_MEAN,
                    std: tuple[float, ...] = IMAGENET_STD) -> torch.Tensor:
    """0..255 crops [N, 3, H, W] (uint8 or float torch tensor, any device) → float32
    normalised RGB, the same values as `normalize_numpy` gives on the host."""
    from posemum_deploy.data.device import device_constant

    m = device_constant(mean, crops.device).view(1, -1, 1, 1) * 255.0
    s = device_constant(std, crops.device).view(1, -1, 1, 1) * 255.0
    return (crops.float() - m) / s


def normalize_numpy(crops: np.ndarray, mean: tuple[float, ...] = IMAGENET_MEAN,
                    std: tuple[float, ...] = IMAGENET_STD) -> np.ndarray:
    """uint8 crops [N, H, W, 3] → float32 normalised NCHW (the exported network's input)."""
    m = np.asarray(mean, dtype=np.float32) * 255.0
    s = np.asarray(std, dtype=np.float32) * 255.0
    out = (crops.astype(np.float32) - m) / s
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
