"""Replay a fixed-shape forward from a captured CUDA graph: one launch instead of hundreds.

A ResNet-18 forward at 256×192 is ~140 kernels; on a Hopper GPU Python launches them
slower than the GPU runs them, so eager inference and the teacher's half of a training
step are bound by the host. A graph captured once per input layout replays them all
with one launch. Used by the fast inference backend and by the semi-supervised step's
teacher.

The graph reads the module's parameters and buffers at the addresses they had at
capture: in-place updates (EMA/EMAN `lerp_`, `load_state_dict`) are seen by the next
replay (autocast re-casts them inside the graph), replaced tensors (`.to(...)`, a new
Parameter) are not: `reset()` after those.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def capture(fn: Callable[[Tensor], Tensor], static_in: Tensor,
            warmup: int = 3) -> tuple[torch.cuda.CUDAGraph, Tensor]:
    """(graph, its output buffer) for `fn(static_in)`; callers write inputs into
    `static_in` and call `graph.replay()`. Grad mode and autocast are taken from the
    caller's context, as for an eager call."""
    # Autocast caches the low-precision copy of each trainable weight for the rest of
    # its region; a graph captured on cached copies would never re-cast, and so miss
    # in-place weight updates. With the cache off the casts are part of the graph.
    cache = torch.is_autocast_cache_enabled()
    torch.set_autocast_cache_enabled(False)
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):  # cuDNN autotuning and lazy init stay outside the capture
                fn(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # "thread_local": the capture is lazy (first call), so other threads may be
        # mid-work: a DataLoader's pin-memory thread allocating pinned memory, or the
        # labeler's decode thread on its own stream. Under the default "global" mode their
        # CUDA calls would invalidate the capture (and poison the pin-memory thread); none
        # of them touch the capturing stream, so none belongs in the graph.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_out = fn(static_in)
    finally:
        torch.set_autocast_cache_enabled(cache)
    # The warm-up's activations sit in the cache, outside the graph's own pool: give them
    # back, so several labeling processes fit on one GPU.
    torch.cuda.empty_cache()
    return graph, static_out


class GraphedForward:
    """`fn(x)` through one captured CUDA graph per input shape, strides and dtype.

    The returned tensor is the graph's output buffer: the next call overwrites it, so a
    caller that keeps it past that clones it (a dtype conversion copies anyway).
    """

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.fn = fn
        self._graphs: dict[tuple, tuple[Tensor, torch.cuda.CUDAGraph, Tensor]] = {}

    def __call__(self, x: Tensor) -> Tensor:
        key = (tuple(x.shape), x.stride(), x.dtype, x.device)
        if key not in self._graphs:
            static_in = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device)
            static_in.copy_(x)
            self._graphs[key] = (static_in, *capture(self.fn, static_in))
        static_in, graph, static_out = self._graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out

    def reset(self) -> None:
        """Drop every captured graph (and the memory its pool holds)."""
        self._graphs.clear()
