import pytest
import torch
import torch.nn.functional as F

import _helpers
from s4vision.kernels import centred_kernel
from s4vision.layers import S4

KERNELS = ["s4d", "s4"]


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("kernel", KERNELS)
def test_step_reproduces_forward(kernel):
    layer = S4(8, 16, kernel=kernel, channels=2).eval()
    x = torch.randn(2, 8, 1000)
    with torch.no_grad():
        y = layer(x)
        state = layer.default_state(2)
        steps = []
        for t in range(x.shape[-1]):
            y_t, state = layer.step(x[..., t], state)
            steps.append(y_t)
    assert _rel(torch.stack(steps, -1), y) < 1e-4


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("sizes", [[1, 7, 300, 2, 690], [500, 500], [1000]])
def test_stream_chunks_reproduce_forward(kernel, sizes):
    layer = S4(6, 8, kernel=kernel).eval()
    x = torch.randn(3, 6, sum(sizes))
    with torch.no_grad():
        y = layer(x)
        outs, state, start = [], None, 0
        for size in sizes:
            y_c, state = layer.stream(x[..., start : start + size], state)
            outs.append(y_c)
            start += size
    assert _rel(torch.cat(outs, -1), y) < 1e-5


@pytest.mark.parametrize("kernel", KERNELS)
def test_conv_view_equals_conv1d_reference(kernel):
    """forward = GLU(W act(K * x + D x)) with K from the generator, checked with F.conv1d."""
    layer = S4(4, 8, kernel=kernel, activation=None).double()
    x = torch.randn(2, 4, 30, dtype=torch.float64)
    k = layer.kernel(30)  # (H, L): one kernel per feature
    conv = F.conv1d(F.pad(x, (29, 0)), k.flip(-1)[:, None], groups=4)
    ref = layer.out_proj(conv + layer.D[0, :, None] * x)
    torch.testing.assert_close(layer(x), ref)


@pytest.mark.parametrize("kernel", KERNELS)
def test_bidirectional_is_causal_plus_anticausal(kernel):
    """Each tap m of the centred kernel sums the half-step taps 2m-1 and 2m of its side; the
    origin tap is the first half-step tap of both sides."""
    L, H = 20, 3
    layer = S4(H, 8, kernel=kernel, bidirectional=True, activation=None).double()
    x = torch.randn(2, H, L, dtype=torch.float64)
    halves = layer.generator(2 * L, 0.5)  # (2, H, 2L): causal halves at half the step
    fwd = torch.cat([halves[0, :, :1], halves[0, :, 1:-1:2] + halves[0, :, 2::2]], -1)  # (H, L)
    bwd = torch.cat([halves[1, :, :1], halves[1, :, 1:-1:2] + halves[1, :, 2::2]], -1)
    causal = F.conv1d(F.pad(x, (L - 1, 0)), fwd.flip(-1)[:, None], groups=H)
    anti = F.conv1d(F.pad(x, (0, L - 1)), bwd[:, None], groups=H)
    ref = layer.out_proj(causal + anti + layer.D[0, :, None] * x)
    torch.testing.assert_close(layer(x), ref)
    assert centred_kernel(halves[0], halves[1], half_step=True).shape[-1] == 2 * L - 1


def test_long_sequence_is_finite():
    layer = S4(4, 16, kernel="s4d")
    y = layer(torch.randn(1, 4, 65536))
    assert y.shape == (1, 4, 65536) and torch.isfinite(y).all()


@pytest.mark.parametrize("kernel", KERNELS)
def test_long_sequence_dplr_is_finite(kernel):
    layer = S4(2, 8, kernel=kernel)
    y = layer(torch.randn(1, 2, 65536))
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_keeps_kernel_fp32(kernel, dtype):
    layer = S4(8, 16, kernel=kernel)
    x = torch.randn(2, 8, 128)
    with torch.autocast("cpu", dtype=dtype):
        assert layer.kernel(128).dtype == torch.float32
        y = layer(x)
    assert torch.isfinite(y).all()
    assert _rel(y.float(), layer(x)) < 0.05


@pytest.mark.parametrize("kernel", KERNELS)
def test_gradients_reach_every_parameter(kernel):
    layer = S4(4, 8, kernel=kernel, channels=2, bidirectional=True)
    layer(torch.randn(2, 4, 50)).square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@_helpers.needs_compile
def test_torch_compile():
    layer = S4(4, 8, kernel="s4d").eval()
    x = torch.randn(2, 4, 32)
    compiled = torch.compile(layer)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), layer(x), atol=1e-5, rtol=1e-4)


def test_state_dict_roundtrip():
    a, b = S4(4, 8, kernel="s4"), S4(4, 8, kernel="s4")
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 4, 16)
    torch.testing.assert_close(a(x), b(x))


@pytest.mark.parametrize(
    "x,match",
    [
        (torch.randn(4, 16), "rank 3"),
        (torch.randn(2, 4, 5, 16), "rank 3"),
        (torch.randn(2, 5, 16), "5 channels"),
        (torch.randn(2, 4, 0), "empty"),
    ],
)
def test_bad_input(x, match):
    with pytest.raises(ValueError, match=match):
        S4(4, 8)(x)


def test_bad_construction_and_recurrent_misuse():
    with pytest.raises(ValueError, match="unknown SSM kernel"):
        S4(4, kernel="s3")
    with pytest.raises(ValueError, match="unknown activation"):
        S4(4, activation="swish2")
    with pytest.raises(ValueError, match="bidirectional"):
        S4(4, 8, bidirectional=True).default_state(1)
    layer = S4(4, 8)
    with pytest.raises(ValueError, match="state must have shape"):
        layer.stream(torch.randn(2, 4, 3), torch.zeros(1, 4, 4, 2))
    with pytest.raises(ValueError, match=r"\(B, dim\)"):
        layer.step(torch.randn(2, 4, 3), layer.default_state(2))


@pytest.mark.device
@pytest.mark.parametrize("kernel", KERNELS)
def test_stream_on_the_test_device(device, kernel):
    """The causal convolution and the chunked recurrence agree on the test device."""
    layer = S4(8, 16, kernel=kernel, channels=2).to(device).eval()
    x = torch.randn(2, 8, 300, device=device)
    with torch.no_grad():
        y = layer(x, rate=1.0)
        first, state = layer.stream(x[..., :120])
        second, _ = layer.stream(x[..., 120:], state)
    assert y.device.type == device.type
    assert _rel(torch.cat([first, second], -1).cpu(), y.cpu()) < 1e-4
