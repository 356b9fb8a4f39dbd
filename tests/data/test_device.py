"""Host → device copies without a host sync: same values as `.to`, any device."""
from __future__ import annotations

import pytest
import torch

from posemum_deploy.data.device import device_constant, host_to_device
from posemum_deploy.data.transforms import normalize_batch, normalize_numpy


def test_cpu_copies_are_plain_and_exact() -> None:
    t = torch.arange(6, dtype=torch.int64).view(2, 3)
    assert host_to_device(t, None) is t
    assert torch.equal(host_to_device(t, "cpu"), t)
    c = device_constant([[1.0, 2.0], [3.5, 4.0]], "cpu", torch.float64)
    assert c.dtype == torch.float64 and c.tolist() == [[1.0, 2.0], [3.5, 4.0]]


def test_normalize_batch_equals_the_host_normalisation() -> None:
    crops = torch.randint(0, 256, (3, 16, 12, 3), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    ours = normalize_batch(crops.permute(0, 3, 1, 2))
    assert torch.equal(ours, torch.from_numpy(normalize_numpy(crops.numpy())))
    assert torch.equal(normalize_batch(crops.permute(0, 3, 1, 2).float()), ours)  # float 0..255 too


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_copy_does_not_wait_for_queued_work() -> None:
    big = torch.randn(4096, 4096, device="cuda")
    torch.cuda.synchronize()
    done = torch.cuda.Event()
    for _ in range(20):  # ~tens of ms of queued matmuls
        big = big @ big / 64
    done.record()
    out = host_to_device(torch.arange(5.0), "cuda")
    assert not done.query()  # the host got past the copy while the matmuls still ran
    assert out.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
