"""Strong augmentations of the student's view, on batched tensors on any device.

Both take normalised images [B, 3, H, W] (ImageNet mean/std) and an explicit
torch.Generator, so a run is reproducible and no global RNG is touched. Random numbers
are drawn on the generator's device and moved to the images' device.

- Joint Cutout (Xie et al. 2021): square holes centred near joints the *teacher* found,
  so the student must infer occluded joints from the others.
- RandAugment (Cubuk et al. 2020), photometric ops only: the geometric part of the strong
  view is the affine θ (training/strong_view.py), which must also move the pseudo-labels.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

from posemum_deploy.data.codec import argmax_torch, to_input_torch
from posemum_deploy.data.device import device_constant, generator_device, host_to_device
from posemum_deploy.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    return host_to_device(torch.rand(shape, generator=generator,
                                     device=generator_device(generator, device)), device)


def _normal(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    return host_to_device(torch.randn(shape, generator=generator,
                                      device=generator_device(generator, device)), device)


def _randint(high: int, shape: tuple[int, ...], generator: torch.Generator | None,
             device: torch.device, low: int = 0) -> Tensor:
    return host_to_device(torch.randint(low, high, shape, generator=generator,
                                        device=generator_device(generator, device)), device)


def heatmap_argmax(heatmaps: Tensor, input_hw: tuple[int, int]) -> Tensor:
    """Argmax of heatmaps [B, K, h, w] as input-pixel coordinates [B, K, 2] (x, y), float32.

    The codec's torch argmax and convention x_input = (x_heatmap + 0.5)·stride − 0.5, with
    no sub-pixel step: a cutout is placed to ~10 px anyway.
    """
    x, y, _ = argmax_torch(heatmaps)
    return to_input_torch(torch.stack([x, y], dim=-1).float(), input_hw,
                          (heatmaps.shape[-2], heatmaps.shape[-1]))


def joint_cutout(images: Tensor, teacher_heatmaps: Tensor, generator: torch.Generator | None = None,
                 num_joints: int = 5, jitter_std: float = 10.0,
                 half_size: tuple[int, int] = (10, 19), fill: float = 0.0) -> Tensor:
    """Cut `num_joints` squares per image near teacher-predicted joints → [B, 3, H, W].

    Joints are drawn with replacement from the teacher's K argmax locations, jittered by
    N(0, jitter_std) px and clamped to the image; each square has a half-size drawn
    uniformly from [half_size[0], half_size[1]] px. x runs along W and y along H.
    """
    b, _, h, w = images.shape
    dev = images.device
    joints = heatmap_argmax(teacher_heatmaps, (h, w))                       # [B, K, 2]
    pick = _randint(joints.shape[1], (b, num_joints), generator, dev)       # [B, n]
    centers = joints.gather(1, pick.unsqueeze(-1).expand(b, num_joints, 2))
    centers = centers + _normal((b, num_joints, 2), generator, dev) * jitter_std
    cx = centers[..., 0].clamp(0, w - 1).unsqueeze(-1)                      # [B, n, 1]
    cy = centers[..., 1].clamp(0, h - 1).unsqueeze(-1)
    half = _randint(half_size[1] + 1, (b, num_joints, 1), generator, dev, low=half_size[0])
    xs = torch.arange(w, device=dev, dtype=cx.dtype)
    ys = torch.arange(h, device=dev, dtype=cy.dtype)
    in_x = (xs - cx).abs() <= half                                          # [B, n, W]
    in_y = (ys - cy).abs() <= half                                          # [B, n, H]
    holes = (in_y.unsqueeze(-1) & in_x.unsqueeze(-2)).any(dim=1)            # [B, H, W]
    return images.masked_fill(holes.unsqueeze(1), fill)


# ---- RandAugment: photometric ops on [N, 3, H, W] in [0, 1]; v [N, 1, 1, 1] in [0, 1] ----

def _gray(x: Tensor) -> Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    return (other + factor * (x - other)).clamp(0, 1)


def _signed(v: Tensor, sign: Tensor) -> Tensor:
    return 1.0 + 0.9 * v * sign


def _sharpen_base(x: Tensor) -> Tensor:
    kernel = device_constant([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]], x.device) / 13
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"),
                       kernel.expand(3, 1, 3, 3).to(x.dtype), groups=3)
    return blurred


def _autocontrast(x: Tensor, v: Tensor, sign: Tensor) -> Tensor:
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    return ((x - lo) / (hi - lo).clamp_min(1e-3)).clamp(0, 1)


def _equalize(x: Tensor, v: Tensor, sign: Tensor) -> Tensor:
    """Per-channel histogram equalisation with 256 bins, batched via scatter_add."""
    n, c, h, w = x.shape
    q = (x * 255).round().long().clamp(0, 255).reshape(n, c, h * w)
    hist = torch.zeros(n, c, 256, device=x.device, dtype=x.dtype)
    hist.scatter_add_(2, q, torch.ones_like(q, dtype=x.dtype))
    cdf = hist.cumsum(2)
    cdf_min = torch.where(hist > 0, cdf, torch.full_like(cdf, float(h * w))).amin(2, keepdim=True)
    lut = ((cdf - cdf_min) / (h * w - cdf_min).clamp_min(1)).clamp(0, 1)
    return lut.gather(2, q).reshape(n, c, h, w)


def _posterize(x: Tensor, v: Tensor, sign: Tensor) -> Tensor:
    """Keep 8 − ⌊4v⌋ bits per channel (torchvision's 8→4 bit range)."""
    step = 2.0 ** torch.floor(4 * v)
    return torch.floor(torch.floor(x * 255) / step) * step / 255


_OPS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "identity": lambda x, v, s: x,
    "autocontrast": _autocontrast,
    "equalize": _equalize,
    "brightness": lambda x, v, s: (x * _signed(v, s)).clamp(0, 1),
    "contrast": lambda x, v, s: _blend(x, _gray(x).mean(dim=(2, 3), keepdim=True), _signed(v, s)),
    "color": lambda x, v, s: _blend(x, _gray(x), _signed(v, s)),
    "sharpness": lambda x, v, s: _blend(x, _sharpen_base(x), _signed(v, s)),
    "posterize": _posterize,
    "solarize": lambda x, v, s: torch.where(x >= 1.0 - v, 1.0 - x, x),
}
RAND_AUGMENT_OPS: tuple[str, ...] = tuple(_OPS)


def rand_augment(images: Tensor, generator: torch.Generator | None = None, n: int = 2,
                 magnitude: float = 9.0, num_bins: int = 31,
                 mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD) -> Tensor:
    """Apply `n` random photometric ops per image at `magnitude`/(num_bins−1) → [B, 3, H, W].

    Each image draws its own ops (uniformly from RAND_AUGMENT_OPS) and signs; the batch is
    processed op by op on the images that drew it, so the cost is ~n passes over the batch.
    Works in [0, 1] pixel space internally (un-normalise, augment, re-normalise).
    """
    b = images.shape[0]
    dev = images.device
    m = device_constant(mean, dev, images.dtype).view(1, 3, 1, 1)
    s = device_constant(std, dev, images.dtype).view(1, 3, 1, 1)
    x = (images * s + m).clamp(0, 1)
    level = torch.full((b, 1, 1, 1), magnitude / (num_bins - 1), device=dev, dtype=images.dtype)
    ops = list(_OPS.values())
    gen_device = generator_device(generator, dev)
    for _ in range(n):
        # The per-op index lists are built where the draw lives: on a CPU generator that
        # costs no host sync (nonzero() on a CUDA tensor waits for the GPU).
        choice = torch.randint(0, len(ops), (b,), generator=generator, device=gen_device)
        sign = torch.where(_uniform((b, 1, 1, 1), generator, dev) < 0.5, -1.0, 1.0).to(images.dtype)
        out = x.clone()
        for k, op in enumerate(ops):
            picked = (choice == k).nonzero().flatten()
            if picked.numel():
                idx = host_to_device(picked, dev)
                out.index_copy_(0, idx, op(x.index_select(0, idx), level.index_select(0, idx),
                                           sign.index_select(0, idx)))
        x = out
    return (x - m) / s
