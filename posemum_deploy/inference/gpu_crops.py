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


def decode_jpegs(paths: list[str | Path], device: str = "cuda") -> list[torch.Tensor]:
    """Decode JPEG files on the GPU (nvjpeg) → uint8 [3, H, W] tensors, EXIF applied."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    data = [read_file(str(p)) for p in paths]
    return decode_jpeg(data, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)


def warp_crops_torch(image: torch.Tensor, inverse: np.ndarray | torch.Tensor,
                     output_hw: tuple[int, int]) -> torch.Tensor:
    """Crops [N, 3, h, w] float (0..255) from one image [3, H, W] through crop → image
    affines [N, 2, 3]; outside the image is 0, like cv2's constant border."""
    n = len(inverse)
    h, w = output_hw
    inv = torch.as_tensor(np.asarray(inverse), dtype=torch.float32, device=image.device)
    ys, xs = torch.meshgrid(torch.arange(h, device=image.device, dtype=torch.float32),
                            torch.arange(w, device=image.device, dtype=torch.float32),
                            indexing="ij")
    grid = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(1, -1, 3)
    src = grid @ inv.transpose(1, 2)  # [N, h*w, 2] image pixel coordinates
    height, width = image.shape[-2:]
    norm = torch.stack([(2 * src[..., 0] + 1) / width - 1, (2 * src[..., 1] + 1) / height - 1], -1)
    img = image.float().unsqueeze(0).expand(n, -1, -1, -1)
    out = F.grid_sample(img, norm.reshape(n, h, w, 2), mode="bilinear",
                        padding_mode="zeros", align_corners=False)
    return out


def normalize_crops(crops: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
                    ) -> torch.Tensor:
    """0..255 float crops [N, 3, h, w] → normalised network input on the same device."""
    m = torch.tensor(mean, device=crops.device).view(1, -1, 1, 1) * 255.0
    s = torch.tensor(std, device=crops.device).view(1, -1, 1, 1) * 255.0
    return (crops - m) / s
