"""Host → accelerator copies that do not make the host wait for queued GPU work.

A copy from pageable host memory (`t.to("cuda")`, `torch.tensor(values, device="cuda")`)
blocks the Python thread until every kernel already queued on the stream has finished.
Inside a training step or a labeling batch that turns each small constant or random draw
(a normalisation mean, a mixing mask, an affine θ) into a full stop of the CPU/GPU
overlap: the GPU then idles while Python launches the next kernels. Staging the data
in pinned memory and copying with `non_blocking=True` keeps the host running ahead;
PyTorch's caching host allocator keeps the pinned source alive until its copy is done.
On the CPU (and for tensors already on the device) these are plain `.to` calls.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def generator_device(generator: torch.Generator | None,
                     device: torch.device | str | None) -> torch.device | str | None:
    """Where random draws happen: on the generator's own device (a CPU generator keeps a
    run reproducible for any model device, and its draws are read on the host without a
    sync), else on `device`. Draws then go to `device` with `host_to_device`."""
    return generator.device if generator is not None else device


def host_to_device(tensor: torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    """`tensor.to(device)`, without a host sync when a CPU tensor goes to a CUDA device."""
    if device is None:
        return tensor
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def device_constant(values: Sequence[float] | Sequence[Sequence[float]], device: torch.device | str,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`torch.tensor(values, device=device, dtype=dtype)` without a host sync."""
    return host_to_device(torch.tensor(values, dtype=dtype), device)
