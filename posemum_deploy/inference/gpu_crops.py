"""Person crops made on the device: JPEG decode with nvjpeg and affine warps with
grid_sample, so that GPU labeling is not bound by the CPU's decode and warp rate.

The warp uses the same image → crop affines as the CPU path (`transforms.affine_matrices`)
and samples bilinearly at pixel centres, so it matches cv2.warpAffine to rounding.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from posemum_deploy.data.device import device_constant, host_to_device


def decode_jpegs(paths: list[str | Path], device: str = "cuda") -> list[torch.Tensor]:
    """Decode JPEG files on the GPU (nvjpeg) → uint8 [3, H, W] tensors, EXIF applied."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    data = [read_file(str(p)) for p in paths]
    return decode_jpeg(data, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)


def warp_crops_torch(image: torch.Tensor, inverse: np.ndarray | torch.Tensor,
                     output_hw: tuple[int, int]) -> torch.Tensor:
    """Crops [N, 3, h, w] float (0..255) from one image [3, H, W] through crop → image
    affines [N, 2, 3]; outside the image is 0, like cv2's constant border."""
    index = torch.zeros(len(inverse), dtype=torch.long)
    return warp_crops_batched([image], index, inverse, output_hw)


def warp_crops_batched(images: list[torch.Tensor], image_index: np.ndarray | torch.Tensor,
                       inverse: np.ndarray | torch.Tensor, output_hw: tuple[int, int],
                       max_canvas_pixels: int = 64_000_000) -> torch.Tensor:
    """Crops [N, 3, h, w] float (0..255) of many images [3, H_i, W_i], few kernel launches.

    Crop n samples image `image_index[n]` through its crop → image affine `inverse[n]`.
    The images are laid side by side on a canvas with a zero column between neighbours,
    so bilinear samples at an image's edge blend with 0 exactly as padding_mode="zeros"
    would, and samples beyond the edge are masked to 0: the result equals a per-image
    warp with cv2's constant border. Images go onto canvases of at most
    `max_canvas_pixels` (one outsized image gets its own), so memory stays bounded.
    """
    device = images[0].device
    h, w = output_hw
    owner = torch.as_tensor(np.asarray(image_index), dtype=torch.long).cpu()
    inv = host_to_device(torch.as_tensor(np.asarray(inverse), dtype=torch.float32), device)
    out = torch.zeros(len(owner), 3, h, w, device=device)
    for group in _canvas_groups(images, max_canvas_pixels):
        first, last = group[0], group[-1]
        pick = ((owner >= first) & (owner <= last)).nonzero()[:, 0]
        if len(pick):
            on_device = host_to_device(pick, device)
            out[on_device] = _warp_on_canvas(images[first:last + 1], owner[pick] - first,
                                             inv[on_device], output_hw)
    return out


def _canvas_groups(images: list[torch.Tensor], budget: int) -> list[list[int]]:
    """Consecutive runs of image indices whose side-by-side canvas fits `budget` pixels."""
    groups: list[list[int]] = []
    height = width = 0
    for i, im in enumerate(images):
        h, w = im.shape[-2:]
        if groups and max(height, h) * (width + w + 1) <= budget:
            groups[-1].append(i)
            height, width = max(height, h), width + w + 1
        else:
            groups.append([i])
            height, width = h, w + 1
    return groups


def _warp_on_canvas(images: list[torch.Tensor], owner: torch.Tensor, inv: torch.Tensor,
                    output_hw: tuple[int, int]) -> torch.Tensor:
    """One grid_sample over a canvas of `images` side by side (see warp_crops_batched)."""
    device = images[0].device
    n = len(owner)
    h, w = output_hw
    idx = host_to_device(owner, device)
    heights = device_constant([im.shape[-2] for im in images], device)
    widths = device_constant([im.shape[-1] for im in images], device)
    canvas_h, stride = max(im.shape[-2] for im in images), max(im.shape[-1] for im in images) + 1
    if all(im.shape[-2:] == images[0].shape[-2:] for im in images):
        stacked = F.pad(torch.stack(images).float(), (0, 1))     # zero column on the right
        canvas = stacked.permute(1, 2, 0, 3).reshape(1, 3, canvas_h, -1)
    else:
        canvas = torch.zeros(1, 3, canvas_h, stride * len(images), device=device)
        for i, im in enumerate(images):
            canvas[0, :, :im.shape[-2], i * stride:i * stride + im.shape[-1]] = im.float()
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    grid = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(1, -1, 3)
    src = grid @ inv.transpose(1, 2)  # [N, h*w, 2] pixel coordinates in each crop's image
    x, y = src[..., 0], src[..., 1]
    inside = (x > -1) & (x < widths[idx, None]) & (y > -1) & (y < heights[idx, None])
    x = x.clamp(-1, stride - 1) + (idx * stride)[:, None]
    norm = torch.stack([(2 * x + 1) / canvas.shape[-1] - 1, (2 * y + 1) / canvas_h - 1], dim=-1)
    out = F.grid_sample(canvas, norm.reshape(1, n * h, w, 2), mode="bilinear",
                        padding_mode="zeros", align_corners=False)   # [1, 3, N*h, w]
    return out.reshape(3, n, h, w).permute(1, 0, 2, 3) * inside.reshape(n, 1, h, w)
