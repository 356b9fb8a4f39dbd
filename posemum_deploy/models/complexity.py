"""How much arithmetic a network does: multiply-accumulates per crop.

Speed figures mean more next to the work they move: a backend's images/s times the
network's MACs per image is its achieved GMAC/s, which can be set against what the
hardware's GEMM kernels reach (the benchmarks' roofline columns). Counted with forward
hooks on the layers that do the multiply-accumulates (convolutions, deconvolutions,
linear layers); batch norms, activations and pooling are not counted (they are memory
bound and small next to the convolutions).
"""
from __future__ import annotations

import torch
from torch import nn


def layer_macs(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    """MACs of one call of a conv / deconv / linear layer for a batch of one."""
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        return k * output[0].numel()
    if isinstance(module, nn.ConvTranspose2d):  # every input pixel scatters a full kernel
        k = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        return k * inputs[0][0].numel()
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features * (output[0].numel() // module.out_features)
    return 0


def count_macs(model: nn.Module, input_hw: tuple[int, int], in_channels: int = 3) -> int:
    """Multiply-accumulates of one forward pass of `model` on one [C, H, W] crop.

    Runs one real forward (on the model's device, no grad) so that every layer's actual
    output size is used; the model's train/eval mode is restored afterwards.
    """
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += layer_macs(module, inputs, output)

    counted = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, counted)]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_channels, *input_hw, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total
