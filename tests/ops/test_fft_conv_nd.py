import pytest
import torch
import torch.nn.functional as F

from s4vision.ops import fft_conv_nd

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def direct_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The same centred depthwise convolution with torch's direct convolution."""
    nd = k.ndim - 1
    spatial = tuple(range(1, nd + 1))
    return CONV[nd](u, k.flip(spatial)[:, None], padding=[s // 2 for s in k.shape[1:]], groups=k.shape[0])


CASES = [
    ((7,), (3,)),
    ((16,), (31,)),  # global kernel, 2L - 1
    ((5,), (13,)),  # kernel larger than the whole global extent
    ((6, 9), (3, 5)),
    ((8, 8), (15, 15)),
    ((5, 4), (11, 9)),  # larger than the input on both axes
    ((1, 6), (3, 1)),
    ((4, 5, 6), (3, 3, 3)),
    ((4, 3, 5), (7, 9, 5)),
]


@pytest.mark.parametrize("sizes,ksizes", CASES)
def test_matches_direct_convolution(sizes, ksizes):
    u = torch.randn(2, 3, *sizes, dtype=torch.float64)
    k = torch.randn(3, *ksizes, dtype=torch.float64)
    torch.testing.assert_close(fft_conv_nd(u, k), direct_conv(u, k))


def test_is_not_circular():
    # A delta at the last sample must not wrap around to the start.
    u = torch.zeros(1, 1, 8, dtype=torch.float64)
    u[..., -1] = 1
    k = torch.ones(1, 15, dtype=torch.float64)
    y = fft_conv_nd(u, k)
    torch.testing.assert_close(y, torch.ones_like(y))
    k = torch.zeros(1, 5, dtype=torch.float64)
    k[0, 4] = 1  # shift by +2
    y = fft_conv_nd(u, k)
    assert y.abs().max() < 1e-12


def test_float32_and_gradients():
    u = torch.randn(2, 4, 6, 7, requires_grad=True)
    k = torch.randn(4, 5, 9, requires_grad=True)
    y = fft_conv_nd(u, k)
    assert y.dtype == torch.float32
    g = torch.randn_like(y)
    gu, gk = torch.autograd.grad(y, (u, k), g)
    ref = direct_conv(u, k)
    ru, rk = torch.autograd.grad(ref, (u, k), g)
    torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gu, ru, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gk, rk, atol=1e-4, rtol=1e-4)


def test_bf16_autocast_runs_in_fp32():
    u = torch.randn(1, 2, 8, 8)
    k = torch.randn(2, 15, 15)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fft_conv_nd(u.bfloat16(), k)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    torch.testing.assert_close(y, direct_conv(u.bfloat16().float(), k), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "u_shape,k_shape,match",
    [
        ((1, 2, 5, 5), (2, 4, 3), "odd"),
        ((1, 2, 5, 5), (2, 3), "rank"),
        ((1, 3, 5, 5), (2, 3, 3), "channels"),
        ((1, 2, 5, 5, 5, 5), (2, 3, 3, 3, 3), "1 to 3"),
        ((1, 2, 0, 5), (2, 3, 3), "non-empty"),
    ],
)
def test_errors(u_shape, k_shape, match):
    with pytest.raises(ValueError, match=match):
        fft_conv_nd(torch.randn(u_shape), torch.randn(k_shape))


def test_rejects_complex():
    with pytest.raises(TypeError, match="real"):
        fft_conv_nd(torch.randn(1, 2, 5, dtype=torch.complex64), torch.randn(2, 3))


@pytest.mark.parametrize("sizes,ksizes", [((16,), (31,)), ((12, 20), (23, 39)), ((9, 10), (7, 3)), ((6, 5, 7), (11, 9, 13))])
def test_centred_transforms_are_only_as_long_as_the_kept_outputs_need(monkeypatch, sizes, ksizes):
    """A centred convolution keeps outputs K//2 .. K//2 + S - 1 of the full linear one, so
    transforms of _fft_len(S + K // 2) samples suffice (not S + K - 1): still no wrap-around
    in what is kept, with gradients."""
    from s4vision.ops.fftconv import _fft_len

    seen = []
    original = torch.fft.rfftn
    monkeypatch.setattr(torch.fft, "rfftn", lambda x, s=None, dim=None, **kw: seen.append(tuple(s)) or original(x, s=s, dim=dim, **kw))
    u = torch.randn(2, 3, *sizes, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, *ksizes, dtype=torch.float64, requires_grad=True)
    y = fft_conv_nd(u, k)
    assert set(seen) == {tuple(_fft_len(s + K // 2) for s, K in zip(sizes, ksizes))}
    ref = direct_conv(u, k)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad((y * g).sum(), [u, k]), torch.autograd.grad((ref * g).sum(), [u, k])):
        torch.testing.assert_close(a, b)


@pytest.mark.device
@pytest.mark.parametrize("sizes,ksizes", [((64,), (127,)), ((20, 24), (39, 47)), ((6, 8, 10), (11, 15, 19))])
def test_on_the_test_device(device, sizes, ksizes):
    u = torch.randn(2, 3, *sizes, dtype=torch.float64)
    k = torch.randn(3, *ksizes, dtype=torch.float64) / 10
    y = fft_conv_nd(u.float().to(device), k.float().to(device))
    assert y.device.type == device.type
    torch.testing.assert_close(y.double().cpu(), direct_conv(u, k), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("sizes,ksizes", [((13,), (25,)), ((9, 10), (17, 7)), ((4, 5, 6), (7, 9, 11))])
def test_channel_groups_without_autograd_match_the_direct_convolution(monkeypatch, sizes, ksizes):
    """Without autograd the channels go through the FFTs in groups (small intermediates): the
    same result as the direct convolution, and really in several groups."""
    import s4vision.ops.fftconv as fftconv

    monkeypatch.setattr(fftconv, "_CHUNK_BYTES", 1)  # one channel per group
    calls = []
    original = torch.fft.rfftn
    monkeypatch.setattr(torch.fft, "rfftn", lambda x, *a, **kw: calls.append(x.shape) or original(x, *a, **kw))
    u = torch.randn(2, 5, *sizes, dtype=torch.float64)
    k = torch.randn(5, *ksizes, dtype=torch.float64)
    with torch.no_grad():
        y = fft_conv_nd(u, k)
    assert [shape[1] for shape in calls[1:]] == [1] * 5  # the kernel's transform, then one per channel
    torch.testing.assert_close(y, direct_conv(u, k))


@pytest.mark.parametrize("sizes,ksizes,channels", [((7,), (13,), 3), ((5, 6), (9, 3), 3), ((5, 6), (9, 11), 1), ((3, 4, 5), (5, 7, 3), 3)])
def test_planned_convolution_gradcheck(sizes, ksizes, channels):
    """The hand-written frequency-domain backward (correlations with the kernel and with the
    input) against finite differences, including a kernel broadcast over the channels, and
    equal to autograd through the direct convolution."""
    from s4vision.ops.fftconv import _PlannedConvolution, _plan

    u = torch.randn(2, 3, *sizes, dtype=torch.float64, requires_grad=True)
    k = torch.randn(channels, *ksizes, dtype=torch.float64, requires_grad=True)
    _, plan = _plan(sizes, k.detach(), [K // 2 for K in ksizes])
    assert torch.autograd.gradcheck(lambda u, k: _PlannedConvolution.apply(u, k, plan), (u, k))
    if channels == 3:
        y = fft_conv_nd(u, k)
        assert y.grad_fn.name().endswith("PlannedConvolutionBackward")
        g = torch.randn_like(y)
        ref = direct_conv(u, k)
        for a, b in zip(torch.autograd.grad((y * g).sum(), [u, k]), torch.autograd.grad((ref * g).sum(), [u, k])):
            torch.testing.assert_close(a, b)
