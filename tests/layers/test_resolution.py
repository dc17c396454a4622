"""Resolution consistency: a layer sees the same continuous signal at two sampling rates.

The signals are smooth functions on the unit extent, sampled on a fine grid and
area-downsampled, so the coarse input is exactly the 2x average pool of the fine one. A
resolution-agnostic layer must then commute with the pooling: ``avg_pool(layer(x_fine))``
matches ``layer(x_coarse)``. A plain 3x3 convolution (whose kernel shrinks with the pixels)
is the control showing the comparison can fail.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from s4vision.kernels import KERNEL_NETS
from s4vision.layers import S4, S4ND, FlexConv

TOL = 0.03


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def smooth_signal(batch: int, channels: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """``(batch, channels, n)`` values of low-frequency cosines plus a Gaussian bump on the
    cell centres of ``[0, 1]``."""
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    freq = torch.randint(0, 4, (batch, channels, 3, 1), generator=generator)
    phase = torch.rand(batch, channels, 3, 1, generator=generator, dtype=torch.float64) * 2 * math.pi
    amp = torch.randn(batch, channels, 3, 1, generator=generator, dtype=torch.float64)
    x = (amp * torch.cos(2 * math.pi * freq * t + phase)).sum(2)
    centre = torch.rand(batch, channels, 1, generator=generator, dtype=torch.float64)
    width = 0.1 + 0.2 * torch.rand(batch, channels, 1, generator=generator, dtype=torch.float64)
    return x + torch.randn(batch, channels, 1, generator=generator, dtype=torch.float64) * torch.exp(
        -((t - centre) ** 2) / (2 * width**2)
    )


def images(batch=2, channels=6, fine=256, seed=0):
    """Smooth images at 64x64 and 32x32, area-downsampled from ``fine`` x ``fine``."""
    g = torch.Generator().manual_seed(seed)
    x = smooth_signal(batch, channels, fine, g)[..., :, None] * smooth_signal(batch, channels, fine, g)[..., None, :]
    x = x + smooth_signal(batch, channels, fine, g)[..., :, None]  # not separable
    return F.avg_pool2d(x, fine // 64).float(), F.avg_pool2d(x, fine // 32).float()


def clips(batch=2, channels=4, fine=256, hw=5, seed=0):
    """Clips ``(B, C, T, H, W)`` smooth in time with T = 32 and 16; the frames are arbitrary."""
    g = torch.Generator().manual_seed(seed)
    pattern = torch.randn(batch, channels, 2, hw, hw, generator=g, dtype=torch.float64)
    series = smooth_signal(batch, channels * 2, fine, g).view(batch, channels, 2, fine)
    x = torch.einsum("bckt,bckhw->bcthw", series, pattern)
    return F.avg_pool3d(x, (fine // 32, 1, 1)).float(), F.avg_pool3d(x, (fine // 16, 1, 1)).float()


def pool2(y: torch.Tensor, ndim: int) -> torch.Tensor:
    return F.avg_pool2d(y, 2) if ndim == 2 else F.avg_pool3d(y, (2, 1, 1))


@torch.no_grad()
def mismatch(layer, fine, coarse, ndim=2):
    return rel_err(pool2(layer(fine), ndim), layer(coarse))


def test_control_3x3_conv_misses():
    fine, coarse = images()
    conv = torch.nn.Conv2d(6, 6, 3, padding=1)
    assert mismatch(conv, fine, coarse) > 0.15
    fine, coarse = clips()
    conv = torch.nn.Conv3d(4, 4, 3, padding=1)
    assert mismatch(conv, fine, coarse, ndim=3) > 0.15


@pytest.mark.parametrize("kernel", ["s4d", "s4"])
@pytest.mark.parametrize("l_max", [32, 64])
def test_s4nd_2d(kernel, l_max):
    fine, coarse = images()
    layer = S4ND(6, 2, d_state=32, kernel=kernel, bandlimit=0.2, l_max=l_max).eval()
    assert mismatch(layer, fine, coarse) < TOL
    # The convolution on its own, without the skip term that could hide it.
    conv = S4ND(6, 2, d_state=32, kernel=kernel, bandlimit=0.2, l_max=l_max, activation=None, out_proj=None).eval()
    conv.D.data.zero_()
    assert mismatch(conv, fine, coarse) < TOL


@pytest.mark.parametrize("kernel", ["s4d", "s4"])
def test_s4nd_3d_time_axis(kernel):
    fine, coarse = clips()
    layer = S4ND(4, 3, d_state=32, kernel=kernel, bandlimit=0.2, l_max=(16, 5, 5)).eval()
    assert mismatch(layer, fine, coarse, ndim=3) < TOL
    conv = S4ND(4, 3, d_state=32, kernel=kernel, bandlimit=0.2, l_max=(32, 5, 5), activation=None, out_proj=None).eval()
    conv.D.data.zero_()
    assert mismatch(conv, fine, coarse, ndim=3) < TOL


def test_s4nd_without_reference_grid_is_not_consistent():
    # Each input taken as its own reference: the kernel shrinks with the pixels, like the control.
    fine, coarse = images()
    conv = S4ND(6, 2, d_state=32, bandlimit=0.2, activation=None, out_proj=None).eval()
    conv.D.data.zero_()
    assert mismatch(conv, fine, coarse) > 0.15
    # The reference set in training fixes it.
    conv.train()(coarse)
    conv.eval()
    assert mismatch(conv, fine, coarse) < TOL


@pytest.mark.parametrize("net", list(KERNEL_NETS))
def test_flexconv_2d(net):
    fine, coarse = images()
    conv = FlexConv(6, 2, kernel_net=net, out_proj=None).eval()
    assert mismatch(conv, fine, coarse) < TOL
    layer = FlexConv(6, 2, kernel_net=net, out_dim=8).eval()
    assert mismatch(layer, fine, coarse) < TOL


@pytest.mark.parametrize("net", list(KERNEL_NETS))
def test_flexconv_3d_time_axis(net):
    fine, coarse = clips()
    conv = FlexConv(4, 3, kernel_net=net, out_proj=None).eval()
    assert mismatch(conv, fine, coarse, ndim=3) < TOL


def sequences(batch=2, channels=6, fine=512, seed=0):
    """Smooth sequences at 64 and 32 samples, area-downsampled from ``fine``."""
    g = torch.Generator().manual_seed(seed)
    x = smooth_signal(batch, channels, fine, g)
    return F.avg_pool1d(x, fine // 64).float(), F.avg_pool1d(x, fine // 32).float()


@pytest.mark.parametrize("kernel", ["s4d", "s4"])
def test_bidirectional_s4_1d(kernel):
    """S4 has the reference grid every other layer has: a sequence at twice the rate is the
    same signal, and the layer's output pooled back matches."""
    fine, coarse = sequences()
    layer = S4(6, 32, kernel=kernel, bidirectional=True, bandlimit=0.2, l_max=32, disc="zoh").eval()
    assert rel_err(F.avg_pool1d(layer(fine), 2), layer(coarse)) < TOL
    # the control: the same layer told that both inputs are sampled at the reference rate
    assert rel_err(F.avg_pool1d(layer(fine, rate=1.0), 2), layer(coarse, rate=1.0)) > 0.15
