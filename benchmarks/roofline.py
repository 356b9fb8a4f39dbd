"""What this CPU's matrix kernels reach, to read the speed tables against.

A backend's achieved GMAC/s (images/s × the network's MACs per image) over the GEMM
peak of the arithmetic it runs in (fp32, bf16, int8) says how much room is left: a
runtime at 90 % of the peak cannot get much faster on this machine, whatever it does.
Peaks are measured, not taken from a data sheet: square matrix products through
torch's CPU kernels (oneDNN/MKL: AVX-512 fp32 FMA, AVX-512 BF16 dot products, VNNI int8
dot products where the CPU has them), the best of several runs, on the threads given.

    python benchmarks/roofline.py [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.int8}


def gemm_gmacs(dtype: str, threads: int, n: int = 2048, reps: int = 8) -> float:
    """Best GMAC/s of an n×n×n matrix product in `dtype` on `threads` threads (the
    process's thread count is restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _best_rate(dtype, n, reps)
    finally:
        torch.set_num_threads(before)


def _best_rate(dtype: str, n: int, reps: int) -> float:
    gen = torch.Generator().manual_seed(0)
    if dtype == "int8":
        a = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=gen)
        b = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=gen)

        def product() -> torch.Tensor:
            return torch._int_mm(a, b)  # int8 × int8 → int32 (VNNI kernels on x86)
    else:
        a = torch.randn(n, n, generator=gen).to(DTYPES[dtype])
        b = torch.randn(n, n, generator=gen).to(DTYPES[dtype])

        def product() -> torch.Tensor:
            return a @ b
    product()  # warm-up: packing buffers, kernel selection
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - t)
    return n ** 3 / best / 1e9


def gemm_peaks(threads: int, reps: int = 8) -> dict[str, float]:
    """GMAC/s for each arithmetic the CPU backends use (best of `reps` products); a dtype
    this torch cannot run is left out."""
    peaks = {}
    for name in DTYPES:
        try:
            peaks[name] = gemm_gmacs(name, threads, reps=reps)
        except RuntimeError:  # e.g. no int8 matmul kernel for this CPU/torch
            continue
    return peaks


def arithmetic(backend: str) -> str:
    """The arithmetic a backend row runs in, from its name ('openvino bf16' → 'bf16')."""
    return next((d for d in ("int8", "bf16") if d in backend), "fp32")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    peaks = gemm_peaks(args.threads)
    for name, value in peaks.items():
        print(f"{name:>5} GEMM peak {value:8.1f} GMAC/s  ({value / peaks['fp32']:.2f}× fp32)")


if __name__ == "__main__":
    main()
