import io

import pytest
import torch

from posemum_deploy.training.optimizer import load_adam_state, make_adam


def _stepped(opt_params, opt):
    for _ in range(3):
        opt.zero_grad()
        sum((p ** 2).sum() for p in opt_params).backward()
        opt.step()
    return [p.detach().clone() for p in opt_params]


def test_cpu_adam_is_the_default_implementation():
    opt = make_adam([torch.nn.Parameter(torch.ones(2))], 1e-3, "cpu")
    assert opt.param_groups[0]["fused"] is None and opt.param_groups[0]["lr"] == 1e-3


def test_loading_a_state_keeps_this_devices_kernel_choice():
    """A checkpoint from an unfused run must not switch a fused optimiser back, and the
    resumed optimiser must continue exactly as the saved one would have."""
    torch.manual_seed(0)
    init = [torch.randn(4, 3), torch.randn(5)]
    saved_params = [torch.nn.Parameter(t.clone()) for t in init]
    saved = torch.optim.Adam(saved_params, lr=1e-2)
    _stepped(saved_params, saved)

    resumed_params = [torch.nn.Parameter(p.detach().clone()) for p in saved_params]
    resumed = torch.optim.Adam(resumed_params, lr=1e-2, fused=True)  # as make_adam on CUDA
    buffer = io.BytesIO()  # through bytes, as a checkpoint: a live state dict shares tensors
    torch.save(saved.state_dict(), buffer)
    buffer.seek(0)
    load_adam_state(resumed, torch.load(buffer, weights_only=True))
    assert resumed.param_groups[0]["fused"] is True
    assert resumed.state_dict()["state"][0]["step"] == 3
    expected, got = _stepped(saved_params, saved), _stepped(resumed_params, resumed)
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_adam_is_fused_and_takes_adams_step():
    torch.manual_seed(0)
    init = [torch.randn(64, 32), torch.randn(32)]
    ref_params = [torch.nn.Parameter(t.clone()) for t in init]
    cuda_params = [torch.nn.Parameter(t.clone().cuda()) for t in init]
    opt = make_adam(cuda_params, 1e-2, "cuda")
    assert opt.param_groups[0]["fused"] is True
    expected = _stepped(ref_params, torch.optim.Adam(ref_params, lr=1e-2))
    for e, g in zip(expected, _stepped(cuda_params, opt), strict=True):
        torch.testing.assert_close(g.cpu(), e, rtol=1e-5, atol=1e-6)
