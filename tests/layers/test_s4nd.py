import math

import pytest
import torch

from _helpers import assert_same_values_and_grads
from s4vision.kernels import centred_kernel
from s4vision.layers import S4, S4ND
from s4vision.ops import fft_conv, fft_conv_nd


def make(dim=3, ndim=2, **kwargs):
    kwargs.setdefault("d_state", 8)
    return S4ND(dim, ndim, **kwargs)


@pytest.mark.parametrize("ndim,sizes", [(1, (11,)), (2, (6, 9)), (3, (4, 5, 3)), (2, (1, 1))])
@pytest.mark.parametrize("kernel", ["s4d", "s4"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_shapes(ndim, sizes, kernel, bidirectional):
    layer = make(4, ndim, kernel=kernel, bidirectional=bidirectional, channels=2)
    x = torch.randn(2, 4, *sizes)
    y = layer(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert make(4, ndim, out_proj="glu")(x).shape == x.shape


@pytest.mark.parametrize("channels", [1, 3])
def test_kernel_is_sum_of_outer_products_of_axis_kernels(channels):
    layer = make(3, 3, rank=channels).double()
    sizes = (4, 5, 6)
    kx, ky, kz = layer.kernel_factors(sizes)
    assert kx.shape == (channels, 3, 7) and ky.shape == (channels, 3, 9) and kz.shape == (channels, 3, 11)
    dense = layer.kernel(sizes)
    ref = torch.zeros(3, 7, 9, 11, dtype=torch.float64)
    for c in range(channels):
        for h in range(3):
            ref[h] += kx[c, h][:, None, None] * ky[c, h][None, :, None] * kz[c, h][None, None, :]
    torch.testing.assert_close(dense, ref)


@pytest.mark.parametrize("path", ["auto", "toeplitz", "fft", "fft_nd"])
def test_forward_is_dense_convolution_plus_skip(path):
    layer = make(3, 2, rank=2, activation=None, out_proj=None, conv_path=path).double()
    x = torch.randn(2, 3, 7, 10, dtype=torch.float64)
    ref = fft_conv_nd(x, layer.kernel((7, 10))) + layer.D.view(-1, 1, 1) * x
    torch.testing.assert_close(layer(x), ref)
    full = make(3, 2, rank=2).double()
    full.load_state_dict(layer.state_dict(), strict=False)
    torch.testing.assert_close(full(x), full.out_proj(full.act(ref)))


@pytest.mark.parametrize("bidirectional", [True, False])
def test_axis_kernel_integrates_the_continuous_kernel_over_cells(bidirectional):
    """Tap m of an axis kernel is the integral of the continuous S4D kernel over the cell
    [(m - 1/2) h, (m + 1/2) h] (h the SSM step per sample); the origin cell is split between the
    causal and the anti-causal half."""
    L, rate = 6, 0.7
    layer = make(2, 1, kernel="s4d", bidirectional=bidirectional).double()
    gen = layer.ssm[0]
    (k,) = layer.kernel_factors((L,), rate=rate)
    A = gen.diagonal_A()
    CB = torch.view_as_complex(gen.C) * torch.view_as_complex(gen.B)  # (halves, H, M)
    h = gen.dt(rate)[:, None]  # (H, 1)

    def integral(half, a, b):  # 2 Re sum_m CB_m (e^{A b} - e^{A a}) / A, for each feature
        return 2 * (CB[half] * (torch.exp(A * b) - torch.exp(A * a)) / A).sum(-1).real

    ref = torch.zeros(2, 2 * L - 1, dtype=torch.float64)
    for m in range(1, L):
        ref[:, L - 1 + m] = integral(0, (m - 0.5) * h, (m + 0.5) * h)
        if bidirectional:
            ref[:, L - 1 - m] = integral(1, (m - 0.5) * h, (m + 0.5) * h)
    ref[:, L - 1] = integral(0, 0 * h, 0.5 * h) + (integral(1, 0 * h, 0.5 * h) if bidirectional else 0)
    torch.testing.assert_close(k[0], ref)


@pytest.mark.parametrize("kernel", ["s4d", "s4"])
def test_ndim1_agrees_with_the_1d_s4_convolution(kernel):
    """S4ND(ndim=1) is the bidirectional S4 convolution: same generator parameters, the S4
    layer's 1D ``fft_conv`` with the cell-centred kernel from its generator."""
    H, L = 3, 12
    s4 = S4(H, 8, kernel=kernel, bidirectional=True, disc="zoh", out_proj=None, activation=None).double()
    nd = make(H, 1, kernel=kernel, l_max=L, activation=None, out_proj=None).double()
    nd.ssm[0].load_state_dict(s4.generator.state_dict())
    nd.D.data.copy_(s4.D)
    x = torch.randn(2, H, L, dtype=torch.float64)
    halves = s4.generator(2 * L, 0.5)  # at half step: pairs of taps tile the cells between samples
    k = centred_kernel(halves[:1], halves[1:], half_step=True)[0]
    ref = fft_conv(x, k, causal=False) + s4.D[0, :, None] * x
    torch.testing.assert_close(nd(x), ref)
    torch.testing.assert_close(nd(x), s4(x))  # the layer itself (identity activation, no projection)


def test_causal_layer_ignores_the_future():
    layer = make(2, 2, bidirectional=False).double().eval()
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    x2 = x.clone()
    x2[..., 4:, :] += 1.0
    x2[..., :, 5:] += 1.0
    y, y2 = layer(x), layer(x2)
    torch.testing.assert_close(y[..., :4, :5], y2[..., :4, :5])
    assert not torch.allclose(y[..., 4:, :], y2[..., 4:, :])


def test_reference_grid_and_rate_override():
    layer = make(3, 2, activation=None, out_proj=None).double()
    x32, x64 = torch.randn(1, 3, 8, 8, dtype=torch.float64), torch.randn(1, 3, 16, 12, dtype=torch.float64)
    assert not layer.grid.is_set
    layer.eval()(x32)
    assert not layer.grid.is_set  # eval with no reference uses the input size
    layer.train()(x32)
    assert layer.grid.reference((1, 1)) == (8, 8)
    layer.eval()
    fresh = make(3, 2, activation=None, out_proj=None).double().eval()
    fresh.load_state_dict(layer.state_dict())
    assert fresh.grid.reference((1, 1)) == (8, 8)  # saved in the checkpoint
    torch.testing.assert_close(fresh(x64), layer(x64))
    # An explicit rate overrides the derived one (8 / 16, 8 / 12).
    unset = make(3, 2, activation=None, out_proj=None).double().eval()
    unset.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.startswith("grid")}, strict=False)
    torch.testing.assert_close(unset(x64, rate=(0.5, 8 / 12)), layer(x64))
    assert not torch.allclose(unset(x64), layer(x64))


def test_bandlimit_removes_the_spectrum_above_the_cutoff():
    """Undamped modes on exact DFT bins: the centred kernel's spectrum is zero above the cutoff."""
    L, M, bandlimit = 32, 16, 0.2
    N = 2 * L - 1
    spectra = {}
    C = torch.randn(1, 2, M, dtype=torch.float64)
    for band in (None, bandlimit):
        layer = make(2, 1, d_state=2 * M, kernel="s4d", l_max=L, bandlimit=band).double()
        gen = layer.ssm[0]
        dt = 0.01
        with torch.no_grad():
            gen.log_dt.fill_(math.log(dt))
            gen.log_A_real.fill_(-40.0)  # Re A ~ -4e-18: undamped
            gen.A_imag.copy_(2 * math.pi * torch.arange(M, dtype=torch.float64) / (N * dt))  # bin k: k/N per sample
            gen.B.copy_(torch.stack([torch.ones(2, M), torch.zeros(2, M)], -1))
            gen.C.copy_(torch.stack([C.expand(2, 2, M), torch.zeros(2, 2, M)], -1))  # real, even kernel
        (k,) = layer.kernel_factors((L,))
        spectra[band] = torch.fft.rfft(torch.fft.ifftshift(k[0], dim=-1), dim=-1).abs()
    cutoff = math.ceil(N * bandlimit / 2)  # modes at k / N >= bandlimit / 2 are removed
    full, limited = spectra[None], spectra[bandlimit]
    assert full[:, cutoff:M].min() > 1e-4  # the modes exist without the band limit
    assert limited[:, cutoff:].max() < 1e-10 * full.max()
    torch.testing.assert_close(limited[:, :cutoff], full[:, :cutoff])


def test_bandlimit_is_relative_to_the_reference_grid():
    """Modes above the cutoff do not affect the kernel at the reference or any finer grid;
    grids so coarse that a kept mode would alias drop it too."""
    layer = make(2, 1, d_state=32, kernel="s4d", l_max=16, bandlimit=0.2).double()
    gen = layer.ssm[0]
    freq = gen.dt(1.0)[:, None] * gen.diagonal_A().imag.abs() / (2 * math.pi)  # per reference sample
    high = freq >= 0.1
    assert high.any() and (~high).any()
    before = [layer.kernel_factors((L,))[0] for L in (16, 32, 64)]
    with torch.no_grad():
        gen.C[:, high] += 1.0
    after = [layer.kernel_factors((L,))[0] for L in (16, 32, 64)]
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        gen.C[:, ~high] += 1.0
    assert not torch.allclose(layer.kernel_factors((16,))[0], before[0])
    # At 10x coarser than the reference, modes at 0.05..0.1 cycles per reference sample alias.
    alias = (freq >= 0.05) & ~high
    coarse = layer.kernel_factors((2,), rate=10.0)[0]
    with torch.no_grad():
        gen.C[:, alias] += 1.0
    torch.testing.assert_close(layer.kernel_factors((2,), rate=10.0)[0], coarse)


def test_bf16_autocast_keeps_kernels_and_ffts_in_fp32(monkeypatch):
    seen = []
    for name in ("rfft", "rfftn"):
        original = getattr(torch.fft, name)

        def spy(x, *args, _original=original, **kwargs):
            seen.append(x.dtype)
            return _original(x, *args, **kwargs)

        monkeypatch.setattr(torch.fft, name, spy)
    x = torch.randn(2, 4, 8, 8)
    for path in ("fft", "fft_nd", "toeplitz"):
        for out_proj in ("linear", None):
            layer = make(4, 2, conv_path=path, out_proj=out_proj)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = layer(x)
                assert all(k.dtype == torch.float32 for k in layer.kernel_factors((8, 8)))
            assert y.dtype in (torch.bfloat16, torch.float32) and torch.isfinite(y).all()
            y.float().sum().backward()
            assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None)
    assert seen and all(d == torch.float32 for d in seen)


def test_gradients_reach_every_parameter():
    layer = make(3, 2, kernel="s4", channels=2)
    layer(torch.randn(2, 3, 5, 6)).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("first_context", [torch.no_grad, torch.inference_mode])
def test_eval_cache_reuses_and_invalidates_kernels(first_context):
    """Kernels computed under no_grad or inference_mode serve later no_grad calls until a
    parameter changes."""
    layer = make(2, 2, activation=None, out_proj=None).eval()
    x = torch.randn(1, 2, 5, 5)
    with first_context():
        k1 = layer.kernel_factors((5, 5))[0]
        assert layer.kernel_factors((5, 5))[0].data_ptr() == k1.data_ptr()
        y1 = layer(x)
    with torch.no_grad():
        assert layer.kernel_factors((5, 5))[0].data_ptr() == k1.data_ptr()
        torch.testing.assert_close(layer(x), y1)
        layer.ssm[0].log_dt.add_(0.5)
        assert layer.kernel_factors((5, 5))[0].data_ptr() != k1.data_ptr()
        assert not torch.allclose(layer(x), y1)


@pytest.mark.parametrize(
    "kwargs,x_shape,match",
    [
        (dict(dim=3, ndim=2), (1, 3, 5), "rank 4"),
        (dict(dim=3, ndim=3), (1, 3, 5, 5), "rank 5"),
        (dict(dim=3, ndim=2), (1, 4, 5, 5), "channels"),
    ],
)
def test_input_errors(kwargs, x_shape, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)(torch.randn(x_shape))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(ndim=4), "ndim"),
        (dict(kernel="s5"), "kernel"),
        (dict(out_proj="mlp"), "out_proj"),
        (dict(activation="swish"), "activation"),
        (dict(conv_path="direct"), "conv_path"),
        (dict(l_max=(8, 8, 8)), "l_max"),
        (dict(bandlimit=-1.0), "bandlimit"),
        (dict(channels=0), "channels"),
        (dict(rank=0), "rank"),
        (dict(channels=2, out_proj=None), "channels"),
        (dict(out_dim=5, out_proj=None), "out_dim"),
        (dict(stride=(2, 0)), "stride"),
    ],
)
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(3, **kwargs)


def test_rate_errors():
    with pytest.raises(ValueError, match="rate"):
        make(3, 2)(torch.randn(1, 3, 4, 4), rate=(1.0, 2.0, 3.0))


@pytest.mark.parametrize("out_proj", ["glu", "linear"])
def test_channels_are_kernels_per_feature_mixed_by_the_projection(out_proj):
    """channels=c: every feature is convolved with c kernels; the c * dim maps, plus the skip term
    of each, go through the activation and the output projection (reference: a loop over
    kernels with torch's conv2d)."""
    dim, c, S = 3, 2, (5, 6)
    layer = make(dim, 2, channels=c, out_proj=out_proj).double()
    x = torch.randn(2, dim, *S, dtype=torch.float64)
    dense = layer.kernel(S)  # (c * dim, 2 S_1 - 1, 2 S_2 - 1)
    assert dense.shape == (c * dim, 9, 11)
    maps = []
    for j in range(c):
        for h in range(dim):
            w = dense[j * dim + h].flip(0, 1)[None, None]  # conv2d correlates: flip for a convolution
            y = torch.nn.functional.conv2d(x[:, h:h + 1], w, padding=(S[0] - 1, S[1] - 1))
            maps.append(y[:, 0] + layer.D[j, h] * x[:, h])
    ref = layer.out_proj(layer.act(torch.stack(maps, 1)))
    torch.testing.assert_close(layer(x), ref)


@pytest.mark.parametrize("sizes, stride, rank", [
    ((16, 12), (4, 4), 1),
    ((18, 13), (4, 2), 2),      # sizes not multiples of the stride: floor, like avg_pool
    ((5, 8, 8), (1, 2, 2), 1),  # 3D, time not pooled
    ((4, 6, 9), (2, 2, 4), 2),
    ((7, 5, 6), (2, 2, 3), 1),  # odd sizes pooled by 2 on the leading axes
])
def test_stride_pools_the_convolution_jointly(sizes, stride, rank):
    """stride=s gives avg_pool(K * x + D x, s) without forming the full output, with the same
    gradients for the input and every parameter."""
    ndim = len(sizes)
    kwargs = dict(rank=rank, activation=None, out_proj=None, dt_min=0.1, dt_max=1.0)
    linear = make(5, ndim, **kwargs).double()
    pooled = make(5, ndim, stride=stride, **kwargs).double()
    pooled.load_state_dict(linear.state_dict())
    x = torch.randn(2, 5, *sizes, dtype=torch.float64, requires_grad=True)
    pool = {2: torch.nn.functional.avg_pool2d, 3: torch.nn.functional.avg_pool3d}[ndim]
    expected = pool(linear(x), stride, stride)
    assert_same_values_and_grads(pooled(x), expected, [x, *pooled.parameters()], [x, *linear.parameters()])
    with pytest.raises(ValueError, match="smaller than the pooling stride"):
        pooled(torch.randn(1, 5, *(s - 1 if k > 1 else s for s, k in zip(stride, stride)), dtype=torch.float64))


IN_PROJ_CASES = [((18, 13), (4, 2), 1, 1), ((4, 6, 9), (2, 2, 4), 2, 1), ((16, 12), (4, 4), 1, 2), ((9, 7), None, 2, 1)]


def _conv_projection(x, weight, bias):
    """torch's own 1x1 convolution: the reference for ``in_proj``."""
    conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}[x.ndim - 2]
    return conv(x, weight.reshape(*weight.shape, *(1,) * (x.ndim - 2)), bias)


@pytest.mark.parametrize("sizes, stride, channels, rank", IN_PROJ_CASES)
def test_in_proj_equals_projecting_first(sizes, stride, channels, rank):
    """``layer(x, in_proj=(w, b))`` == ``layer(conv1x1(x, w, b))``, values and gradients (the skip
    pools the 3 input channels before projecting, by linearity)."""
    torch.manual_seed(0)
    ndim = len(sizes)
    layer = make(5, ndim, stride=stride, channels=channels, rank=rank, out_proj="glu", dt_min=0.1, dt_max=1.0).double()
    weight, bias = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    x = torch.randn(2, 3, *sizes, dtype=torch.float64)
    inputs = [x, weight, bias, *layer.parameters()]
    for t in (x, weight, bias):
        t.requires_grad_()
    assert_same_values_and_grads(layer(x, in_proj=(weight, bias)), layer(_conv_projection(x, weight, bias)), inputs, inputs)
    # a convolution's weight (5, 3, 1, ..., 1) and no bias
    conv_weight = weight.detach().reshape(5, 3, *(1,) * ndim)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, in_proj=(conv_weight, None)), layer(_conv_projection(x, weight, None)))


@pytest.mark.parametrize("sizes, stride, channels, rank", IN_PROJ_CASES)
def test_in_proj_inference_in_channel_groups(sizes, stride, channels, rank, monkeypatch):
    """Without autograd on CPU the projection is formed a few channels of one sample at a time;
    groups of 2 and 3 (a partial last group) give the plain result."""
    from s4vision.ops import separable

    torch.manual_seed(0)
    layer = make(5, len(sizes), stride=stride, channels=channels, rank=rank, out_proj="glu").double().eval()
    weight, bias = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    x = torch.randn(3, 3, *sizes, dtype=torch.float64)
    with torch.no_grad():
        expected = layer(_conv_projection(x, weight, bias))
        for group in (2, 3):
            monkeypatch.setattr(separable, "_GROUP_BYTES", group * math.prod(sizes) * 8)
            torch.testing.assert_close(layer(x, in_proj=(weight, bias)), expected)


def test_in_proj_refuses_mismatched_shapes():
    layer = make(5, 2, stride=2)
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="in_proj"):
        layer(x, in_proj=(torch.randn(4, 3), None))
    with pytest.raises(ValueError, match="in_proj"):
        layer(x, in_proj=(torch.randn(5, 3), torch.randn(4)))
    with pytest.raises(ValueError, match="4 channels"):
        layer(torch.randn(2, 4, 8, 8), in_proj=(torch.randn(5, 3), None))


def test_stride_with_projection_changes_width():
    layer = make(4, 3, stride=(1, 2, 2), activation=None, out_proj="glu", out_dim=6)
    assert layer(torch.randn(2, 4, 3, 8, 8)).shape == (2, 6, 3, 4, 4)


def test_pooled_matrices_are_cached_in_eval_and_invalidated():
    layer = make(2, 2, stride=2, activation=None, out_proj=None).eval()
    x = torch.randn(1, 2, 6, 6)
    with torch.no_grad():
        y = layer(x)
        first = layer._matrices((6, 6), (1.0, 1.0))
        assert layer._matrices((6, 6), (1.0, 1.0)) is first
        layer.ssm[1].log_dt.add_(0.3)
        assert layer._matrices((6, 6), (1.0, 1.0)) is not first
        assert not torch.allclose(layer(x), y)


def test_eval_again_keeps_the_cached_kernels():
    """Calling eval() before every inference (a common pattern) must not regenerate kernels;
    going back to training frees them."""
    layer = make(2, 2).eval()
    with torch.no_grad():
        k1 = layer.kernel_factors((5, 5))[0]
        layer.eval()
        assert layer.kernel_factors((5, 5))[0].data_ptr() == k1.data_ptr()
        layer.train()
        layer.eval()
        assert layer.kernel_factors((5, 5))[0].data_ptr() != k1.data_ptr()


@pytest.mark.device
@pytest.mark.parametrize("kernel", ["s4d", "s4"])
@pytest.mark.parametrize("stride", [None, 2])
def test_layer_on_the_test_device(device, kernel, stride):
    """float32 forward and backward on the test device against float64 on the CPU; bf16 autocast runs."""
    ref = make(6, 2, kernel=kernel, stride=stride, out_proj="glu", bandlimit=1.0).double()
    layer = make(6, 2, kernel=kernel, stride=stride, out_proj="glu", bandlimit=1.0).to(device)
    layer.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    x = torch.randn(2, 6, 20, 18, dtype=torch.float64)
    xd = x.float().to(device).requires_grad_()
    y = layer(xd)
    y_ref = ref(x)
    torch.testing.assert_close(y.double().cpu(), y_ref, atol=1e-4, rtol=1e-4)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    for (name, p), p_ref in zip(layer.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad.double().cpu(), p_ref.grad, atol=1e-3, rtol=1e-3, msg=name)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        assert torch.isfinite(layer(xd)).all()
