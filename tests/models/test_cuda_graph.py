import pytest
import torch
from torch import nn

from posemum_deploy.models.cuda_graph import GraphedForward
from posemum_deploy.models.simple_baseline import build_model

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_replay_equals_eager_and_sees_in_place_weight_updates():
    torch.manual_seed(0)
    net = build_model("resnet18").cuda().eval().to(memory_format=torch.channels_last)
    graphed = GraphedForward(torch.no_grad()(net))
    x = torch.randn(4, 3, 128, 96, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        eager = net(x).float()
        replay = graphed(x).float()
    torch.testing.assert_close(replay, eager, rtol=0, atol=1e-2 * eager.abs().max().item())

    with torch.no_grad():  # an EMAN-style update: in place, as the teacher does it
        params = list(net.parameters())
        torch._foreach_lerp_(params, [p * 0.5 for p in params], 0.5)  # weights × 0.75
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.mul_(0.5)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        eager2 = net(x).float()
        replay2 = graphed(x).float()
    # random-weight heatmaps are tiny (~1e-7): compare against their own scale
    assert (eager2 - eager).abs().max() > 0.1 * eager.abs().max()
    torch.testing.assert_close(replay2, eager2, rtol=0, atol=1e-2 * eager2.abs().max().item())


@cuda
def test_a_new_input_shape_gets_its_own_graph():
    net = nn.Conv2d(3, 2, 3, padding=1).cuda()
    graphed = GraphedForward(torch.no_grad()(net))
    for n in (2, 5, 2):
        x = torch.randn(n, 3, 8, 8, device="cuda")
        with torch.no_grad():
            torch.testing.assert_close(graphed(x), net(x))
    assert len(graphed._graphs) == 2


@cuda
def test_capture_survives_another_thread_pinning_memory():
    """The trainer captures the teacher lazily while the DataLoader's pin-memory thread
    allocates pinned memory; that must neither break the capture nor the other thread."""
    import threading

    net = nn.Conv2d(3, 4, 3, padding=1).cuda().eval()
    graphed = GraphedForward(torch.no_grad()(net))
    stop, errors = threading.Event(), []

    def pin_forever() -> None:
        try:
            while not stop.is_set():
                torch.empty(1 << 20, dtype=torch.uint8).pin_memory()
        except Exception as e:  # noqa: BLE001 - reported to the test thread
            errors.append(e)

    worker = threading.Thread(target=pin_forever)
    worker.start()
    try:
        for n in range(1, 6):  # several captures while the other thread pins
            x = torch.randn(n, 3, 16, 16, device="cuda")
            with torch.no_grad():
                torch.testing.assert_close(graphed(x), net(x))
    finally:
        stop.set()
        worker.join()
    assert not errors
