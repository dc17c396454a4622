import math

import pytest
import torch
import torch.nn.functional as F

from s4vision.kernels import KERNEL_NETS
from s4vision.layers import FlexConv

NETS = list(KERNEL_NETS)
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("ndim,sizes", [(1, (9,)), (2, (5, 7)), (3, (3, 4, 5)), (2, (1, 1))])
def test_shapes(net, ndim, sizes):
    x = torch.randn(2, 4, *sizes)
    y = FlexConv(4, ndim, kernel_net=net, out_dim=6, kernel_hidden=8)(x)
    assert y.shape == (2, 6, *sizes) and torch.isfinite(y).all()
    assert FlexConv(4, ndim, kernel_net=net, out_proj=None, kernel_hidden=8)(x).shape == x.shape


@pytest.mark.parametrize("ndim,sizes", [(1, (6,)), (2, (4, 5)), (3, (2, 3, 4))])
def test_kernel_samples_the_net_at_cell_offsets(ndim, sizes):
    layer = FlexConv(3, ndim, kernel_hidden=8).double()
    k = layer.kernel(sizes)
    assert k.shape == (3, *[2 * s - 1 for s in sizes])
    volume = 1.0 / math.prod(sizes)
    for index in [(0,) * ndim, tuple(s - 1 for s in sizes), tuple(2 * s - 2 for s in sizes)]:
        offset = torch.tensor([(i - (s - 1)) / s for i, s in zip(index, sizes)], dtype=torch.float64)
        ref = layer.kernel_net(offset) * layer.mask(offset) * volume
        torch.testing.assert_close(k[(slice(None),) + index], ref)


def test_finer_grid_samples_the_same_function_scaled_by_cell_volume():
    layer = FlexConv(3, 2, kernel_net="siren", kernel_hidden=8).double()
    coarse, fine = layer.kernel((6, 5)), layer.kernel((12, 10))
    # Every offset of the coarse grid is an even offset of the fine one; the cell is 4x smaller.
    torch.testing.assert_close(fine[:, 1::2, 1::2], coarse / 4)


def test_forward_matches_direct_convolution():
    layer = FlexConv(3, 2, kernel_hidden=8, out_dim=5).double()
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    k = layer.kernel((6, 7))
    depthwise = F.conv2d(x, k.flip(1, 2)[:, None], padding=(5, 6), groups=3) + layer.bias[:, None, None]
    w = layer.out_proj.weight[..., 0]
    ref = torch.einsum("oc,bchw->bohw", w, depthwise) + layer.out_proj.bias[:, None, None]
    torch.testing.assert_close(layer(x), ref)


def test_mask_crops_the_kernel():
    layer = FlexConv(2, 1, kernel_hidden=8, mask_sigma=0.1).double()
    k = layer.kernel((20,))
    bare = FlexConv(2, 1, kernel_hidden=8, mask=False).double()
    bare.kernel_net.load_state_dict(layer.kernel_net.state_dict())
    kb = bare.kernel((20,))
    offsets = (torch.arange(39, dtype=torch.float64) - 19) / 20
    torch.testing.assert_close(k, kb * torch.exp(-0.5 * (offsets / 0.1) ** 2))


def test_rate_override_and_reference():
    layer = FlexConv(2, 2, kernel_hidden=8, out_proj=None).double()
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
    fresh = FlexConv(2, 2, kernel_hidden=8, out_proj=None).double()
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
        for out_proj in ("linear", None):
            layer = FlexConv(4, 2, kernel_net=net, out_proj=out_proj, kernel_hidden=8)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = layer(x)
                assert layer.kernel((8, 8)).dtype == torch.float32
            assert y.dtype in (torch.bfloat16, torch.float32) and torch.isfinite(y).all()
    assert seen and all(d == torch.float32 for d in seen)


@pytest.mark.parametrize("net", NETS)
def test_gradients_reach_every_parameter(net):
    layer = FlexConv(3, 2, kernel_net=net, kernel_hidden=8)
    layer(torch.randn(2, 3, 5, 6)).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_eval_cache():
    layer = FlexConv(2, 2, kernel_hidden=8).eval()
    with torch.no_grad():
        k = layer.kernel((5, 5))
        assert layer.kernel((5, 5)) is k
        layer.mask.log_sigma.add_(0.3)
        assert not torch.allclose(layer.kernel((5, 5)), k)


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: FlexConv(3, 2, kernel_net="fourier"), "kernel net"),
        (lambda: FlexConv(3, 4), "ndim"),
        (lambda: FlexConv(3, 2, out_proj=None, out_dim=5), "out_dim"),
        (lambda: FlexConv(0, 2), "dim"),
        (lambda: FlexConv(3, 2, mask_sigma=0.0), "sigma"),
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
        FlexConv(3, ndim, kernel_hidden=8)(torch.randn(x_shape))
