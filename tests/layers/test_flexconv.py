import math

import pytest
import torch
import torch.nn.functional as F

from s4vision.kernels import KERNEL_NETS, GaborNet, MAGNet, kernel_net
from s4vision.layers import FlexConv

NETS = list(KERNEL_NETS)
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("ndim,sizes", [(1, (9,)), (2, (5, 7)), (3, (3, 4, 5)), (2, (1, 1))])
def test_shapes(net, ndim, sizes):
    x = torch.randn(2, 4, *sizes)
    y = FlexConv(4, ndim, kernel_net=net, out_dim=6, hidden=8)(x)
    assert y.shape == (2, 6, *sizes) and torch.isfinite(y).all()
    assert FlexConv(4, ndim, kernel_net=net, separable=False, hidden=8)(x).shape == x.shape


@pytest.mark.parametrize("ndim,sizes", [(1, (6,)), (2, (4, 5)), (3, (2, 3, 4))])
def test_kernel_samples_the_net_at_cell_offsets(ndim, sizes):
    layer = FlexConv(3, ndim, hidden=8).double()
    k = layer.kernel(sizes)
    assert k.shape == (3, *[2 * s - 1 for s in sizes])
    volume = 1.0 / math.prod(sizes)
    for index in [(0,) * ndim, tuple(s - 1 for s in sizes), tuple(2 * s - 2 for s in sizes)]:
        offset = torch.tensor([(i - (s - 1)) / s for i, s in zip(index, sizes)], dtype=torch.float64)
        ref = layer.kernel_net(offset) * layer.mask(offset) * volume
        torch.testing.assert_close(k[(slice(None),) + index], ref)


def test_finer_grid_samples_the_same_function_scaled_by_cell_volume():
    layer = FlexConv(3, 2, kernel_net="siren", hidden=8).double()
    coarse, fine = layer.kernel((6, 5)), layer.kernel((12, 10))
    # Every offset of the coarse grid is an even offset of the fine one; the cell is 4x smaller.
    torch.testing.assert_close(fine[:, 1::2, 1::2], coarse / 4)


def test_forward_matches_direct_convolution():
    layer = FlexConv(3, 2, hidden=8, out_dim=5).double()
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    k = layer.kernel((6, 7))
    depthwise = F.conv2d(x, k.flip(1, 2)[:, None], padding=(5, 6), groups=3) + layer.bias[:, None, None]
    w = layer.pointwise.proj.weight[..., 0]
    ref = torch.einsum("oc,bchw->bohw", w, depthwise) + layer.pointwise.proj.bias[:, None, None]
    torch.testing.assert_close(layer(x), ref)


def test_mask_crops_the_kernel():
    layer = FlexConv(2, 1, hidden=8, mask_sigma=0.1).double()
    k = layer.kernel((20,))
    bare = FlexConv(2, 1, hidden=8, mask=False).double()
    bare.kernel_net.load_state_dict(layer.kernel_net.state_dict())
    kb = bare.kernel((20,))
    offsets = (torch.arange(39, dtype=torch.float64) - 19) / 20
    torch.testing.assert_close(k, kb * torch.exp(-0.5 * (offsets / 0.1) ** 2))


def test_rate_override_and_reference():
    layer = FlexConv(2, 2, hidden=8, separable=False).double()
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    y_default = layer.eval()(x)
    torch.testing.assert_close(layer(x, rate=1.0), y_default)
    # Reference 4x4: an 8x8 input has spacing 1/8 by default; rate 1 means the reference spacing 1/4.
    layer.train()(torch.randn(1, 2, 4, 4, dtype=torch.float64))
    layer.eval()
    assert layer.grid.reference((1, 1)) == (4, 4)
    torch.testing.assert_close(layer(x), y_default)
    # With rate 1 an 8x8 input is sampled at the reference spacing 1/4: taps at offsets m / 4.
    k = layer.kernel((8, 8), rate=1.0)
    offset = torch.tensor([0.25, -0.5], dtype=torch.float64)
    ref = layer.kernel_net(offset) * layer.mask(offset) / 16
    torch.testing.assert_close(k[:, 7 + 1, 7 - 2], ref)
    fresh = FlexConv(2, 2, hidden=8, separable=False).double()
    fresh.load_state_dict(layer.state_dict())
    assert fresh.grid.reference((1, 1)) == (4, 4)


def test_bf16_autocast_keeps_kernels_and_ffts_in_fp32(monkeypatch):
    seen = []
    original = torch.fft.rfftn

    def spy(x, *args, **kwargs):
        seen.append(x.dtype)
        return original(x, *args, **kwargs)

    monkeypatch.setattr(torch.fft, "rfftn", spy)
    x = torch.randn(2, 4, 8, 8)
    for net in NETS:
        for separable in (True, False):
            layer = FlexConv(4, 2, kernel_net=net, separable=separable, hidden=8)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = layer(x)
                assert layer.kernel((8, 8)).dtype == torch.float32
            assert y.dtype in (torch.bfloat16, torch.float32) and torch.isfinite(y).all()
    assert seen and all(d == torch.float32 for d in seen)


@pytest.mark.parametrize("net", NETS)
def test_gradients_reach_every_parameter(net):
    layer = FlexConv(3, 2, kernel_net=net, hidden=8)
    layer(torch.randn(2, 3, 5, 6)).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_eval_cache():
    layer = FlexConv(2, 2, hidden=8).eval()
    with torch.no_grad():
        k = layer.kernel((5, 5))
        assert layer.kernel((5, 5)) is k
        layer.mask.log_sigma.add_(0.3)
        assert not torch.allclose(layer.kernel((5, 5)), k)


# -- kernel nets ------------------------------------------------------------------------------


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("in_dim", [1, 2, 3])
def test_kernel_net_init(net, in_dim):
    f = kernel_net(net, in_dim, 5, hidden=16, bandwidth=3.0)
    coords = torch.rand(7, 11, in_dim) * 2 - 1
    assert f(coords).shape == (7, 11, 5)
    axis = torch.linspace(-1, 1, 33 if in_dim < 3 else 17)
    grid = torch.stack(torch.meshgrid(*[axis] * in_dim, indexing="ij"), -1)
    assert abs(f(grid).std().item() - 1) < 1e-3  # normalised output


@pytest.mark.parametrize("net", NETS)
def test_kernel_net_respects_bandwidth(net):
    """Almost no energy above the bandwidth (cycles per unit), essentially none above twice it."""
    n, bandwidth = 128, 3.0
    axis = (torch.arange(n, dtype=torch.float64) + 0.5) / n * 2 - 1
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1)
    f = kernel_net(net, 2, 4, bandwidth=bandwidth).double()
    with torch.no_grad():
        window = torch.hann_window(n, periodic=False, dtype=torch.float64)
        y = f(grid).permute(2, 0, 1) * window[:, None] * window
    power = torch.fft.fft2(y).abs().square().sum(0)
    freq = torch.fft.fftfreq(n, d=2 / n, dtype=torch.float64).abs()
    radius = torch.maximum(freq[:, None], freq[None, :])
    assert power[radius > bandwidth + 0.5].sum() / power.sum() < 0.05
    assert power[radius > 2 * bandwidth].sum() / power.sum() < 1e-3


def test_magnet_is_a_product_of_gabor_filters():
    f = MAGNet(2, 3, hidden=4, depth=2, bandwidth=2.0).double()
    x = torch.rand(5, 2, dtype=torch.float64) * 2 - 1

    def gabor(layer, p):
        env = torch.exp(-0.5 * (((p - layer.mu) * layer.gamma) ** 2).sum(-1))
        return env * torch.sin(layer.linear.weight @ p + layer.linear.bias)

    for p, out in zip(x, f(x)):
        h = gabor(f.filters[0], p)
        h = (f.linears[0].weight @ h + f.linears[0].bias) * gabor(f.filters[1], p)
        torch.testing.assert_close(out, f.head.weight @ h + f.head.bias)


def test_gabor_net_is_isotropic_single_layer():
    f = GaborNet(3, 2, hidden=6)
    assert f.atoms.gamma.shape == (6, 1)
    assert sum(isinstance(m, torch.nn.Linear) for m in f.modules()) == 2


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: FlexConv(3, 2, kernel_net="fourier"), "kernel net"),
        (lambda: kernel_net("fourier", 2, 3), "kernel net"),
        (lambda: FlexConv(3, 4), "ndim"),
        (lambda: FlexConv(3, 2, separable=False, out_dim=5), "out_dim"),
        (lambda: FlexConv(0, 2), "dim"),
        (lambda: FlexConv(3, 2, mask_sigma=0.0), "sigma"),
        (lambda: kernel_net("magnet", 2, 3, bandwidth=-1.0), "bandwidth"),
        (lambda: FlexConv(3, 2, l_max=(4, 4, 4)), "l_max"),
    ],
)
def test_argument_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    "ndim,x_shape,match",
    [(2, (1, 3, 5), "rank 4"), (3, (1, 3, 4, 4), "rank 5"), (2, (1, 2, 5, 5), "channels"), (1, (1, 3, 5, 5), "rank 3")],
)
def test_input_errors(ndim, x_shape, match):
    with pytest.raises(ValueError, match=match):
        FlexConv(3, ndim, hidden=8)(torch.randn(x_shape))


def test_kernel_net_coordinate_error():
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        kernel_net("siren", 2, 3)(torch.rand(4, 3))
