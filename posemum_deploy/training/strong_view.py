"""The strong view's second random affine θ, applied to images *and* pseudo-labels.

The teacher labels the weak view; the student sees that crop warped once more by θ. The
teacher's heatmaps are warped by the same θ, so a joint at p in the weak view is expected
at θ(p) in the strong view — at input and at heatmap resolution alike.

θ is built in pixel space (scale and rotation about the crop centre, so rotations stay
rotations for non-square crops) and expressed in the normalised coordinates of
`F.affine_grid(..., align_corners=False)`: n = (2x + 1)/W − 1. With that convention the
same normalised matrix is exact at every resolution whose pixel grid follows the codec's
x_heatmap = (x_input + 0.5)/stride − 0.5, so heatmaps (input/4) and images agree.

No flip here: the weak view already flips (with joint swapping); a flip in θ would also
have to permute heatmap channels and would add nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from posemum_deploy.data.device import generator_device, host_to_device


@dataclass(frozen=True)
class StrongAffine:
    """Random scale/rotation for the strong view (SimpleBaseline's affine ranges).

    scale ~ clip(N(1, scale_sigma), *scale_clip); rotation (deg) ~ clip(N(0, rotation_sigma),
    ±rotation_clip) with probability rotation_prob, else 0.
    """

    scale_sigma: float = 0.25
    scale_clip: tuple[float, float] = (0.75, 1.25)
    rotation_sigma: float = 30.0
    rotation_clip: float = 60.0
    rotation_prob: float = 0.6

    def sample(self, batch: int, size_hw: tuple[int, int], generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> Tensor:
        """Forward maps θ [B, 2, 3] (weak-view → strong-view, normalised coordinates)."""
        gen_device = generator_device(generator, device)
        noise = torch.randn(batch, 2, generator=generator, device=gen_device)
        use_rot = torch.rand(batch, generator=generator, device=gen_device) < self.rotation_prob
        scale = (1.0 + noise[:, 0] * self.scale_sigma).clamp(*self.scale_clip)
        angle = (noise[:, 1] * self.rotation_sigma).clamp(-self.rotation_clip, self.rotation_clip)
        angle = torch.where(use_rot, angle, torch.zeros_like(angle))
        return host_to_device(affine_matrix(scale, angle, size_hw), device)


def affine_matrix(scale: Tensor, angle_deg: Tensor, size_hw: tuple[int, int]) -> Tensor:
    """Normalised forward map [B, 2, 3] of p' = s·R(angle)·(p − c) + c in pixel space.

    In normalised coordinates p − c = D·n with D = diag(W/2, H/2), so the map is
    n' = D⁻¹ s R D n — independent of resolution for a fixed aspect ratio.
    """
    h, w = size_hw
    rad = angle_deg * (math.pi / 180.0)
    cos, sin = torch.cos(rad) * scale, torch.sin(rad) * scale
    ratio = h / w  # D⁻¹ R D entries: off-diagonals pick up the aspect ratio
    zero = torch.zeros_like(cos)
    row0 = torch.stack([cos, -sin * ratio, zero], dim=-1)
    row1 = torch.stack([sin / ratio, cos, zero], dim=-1)
    return torch.stack([row0, row1], dim=1)


def invert(theta: Tensor) -> Tensor:
    """Inverse of affine maps [B, 2, 3] → [B, 2, 3], in closed form: [A | t]⁻¹ = [A⁻¹ | −A⁻¹t]
    with A⁻¹ = adj(A)/det(A). Elementwise ops only: `torch.linalg.inv` on a GPU checks for
    singular matrices with a device→host sync, twice per training step here."""
    a, b, c, d = theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1]
    det = a * d - b * c
    inv_a = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], 1) / det[:, None, None]
    shift = -(inv_a @ theta[:, :, 2:])
    return torch.cat([inv_a, shift], dim=2)


def warp(x: Tensor, theta: Tensor, mode: str = "bilinear") -> Tensor:
    """Warp x [B, C, H, W] by forward maps θ [B, 2, 3] → [B, C, H, W], zeros outside.

    affine_grid wants the *sampling* map (output → input), i.e. θ⁻¹. Use for images
    (normalised, so 0 = mean colour) and for heatmaps (0 = no joint) alike.
    """
    grid = F.affine_grid(invert(theta).to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def map_points(points_xy: Tensor, theta: Tensor, size_hw: tuple[int, int]) -> Tensor:
    """Pixel points [B, K, 2] (x, y) at resolution size_hw → their θ images [B, K, 2]."""
    h, w = size_hw
    half = points_xy.new_tensor([w / 2.0, h / 2.0])
    n = (points_xy + 0.5) / half - 1.0
    n2 = n @ theta[:, :, :2].transpose(1, 2) + theta[:, :, 2].unsqueeze(1)
    return (n2 + 1.0) * half - 0.5
