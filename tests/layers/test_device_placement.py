"""Every tensor a layer makes follows its input's device.

The layers run on the meta device, where an operation mixing a meta tensor with one left on the
host raises. Off the CPU the kernel caches and the CPU-only shortcuts (dropping band-limited
modes, cropping FlexConv kernels) are skipped, so these are the paths a GPU runs; without a GPU in
CI this is what catches a tensor created without ``device=``. Not covered, because they read
values on the host by design (one synchronisation on a GPU, impossible on meta): the exact DPLR
ZOH kernel (``_expm`` plans its squarings on the host), per-sample rates (validated on the host)
and the heads that read time (ViS4mer, the Transformer with sinusoidal positions), which size
their windows from the timestamps' values.
"""
import pytest
import torch

from s4vision.layers import S4, S4ND, FlexConv
from s4vision.models.heads import create_temporal_head, forward_with_time
from s4vision.ops import linear_scan

META = "meta"


def _train_step(layer, x, **kwargs):
    """Forward and backward on the meta device; every parameter's gradient is there too."""
    layer = layer.to(META).train()
    y = layer(x.to(META), **kwargs)
    y.sum().backward()
    assert y.device.type == META
    assert all(p.grad is not None and p.grad.device.type == META for p in layer.parameters())
    return y


def _eval(layer, x, **kwargs):
    with torch.no_grad():
        y = layer.to(META).eval()(x.to(META), **kwargs)
    assert y.device.type == META
    return y


@pytest.mark.parametrize("kernel, disc", [("s4d", "zoh"), ("s4d", "bilinear"), ("s4", "bilinear")])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_s4(kernel, disc, bidirectional):
    x = torch.randn(2, 16, 50)
    layer = S4(16, 8, kernel=kernel, disc=disc, bidirectional=bidirectional, channels=2)
    assert _train_step(layer, x).shape == (2, 16, 50)
    assert _eval(layer, x, rate=0.5).shape == (2, 16, 50)


@pytest.mark.parametrize("kernel", ["s4d", "s4"])
def test_s4_stream(kernel):
    layer = S4(16, 8, kernel=kernel, bidirectional=False).to(META).eval()
    with torch.no_grad():
        y, state = layer.stream(torch.randn(2, 16, 10, device=META))
        y, state = layer.stream(torch.randn(2, 16, 7, device=META), state, rate=2.0)
        y, state = layer.step(torch.randn(2, 16, device=META), state)
    assert y.device.type == state.device.type == META


@pytest.mark.parametrize("bandlimit", [None, 1.0])
@pytest.mark.parametrize("conv_path", ["auto", "fft"])
def test_s4nd_diagonal(bandlimit, conv_path):
    layer = S4ND(8, ndim=2, d_state=16, bandlimit=bandlimit, conv_path=conv_path, l_max=(12, 16))
    assert _train_step(layer, torch.randn(2, 8, 12, 16)).shape == (2, 8, 12, 16)
    assert _eval(layer, torch.randn(2, 8, 24, 20)).shape == (2, 8, 24, 20)  # another resolution


def test_s4nd_3d_pooled_and_dplr_bilinear():
    pooled = S4ND(8, ndim=3, d_state=16, stride=(1, 2, 2), bandlimit=1.0)
    assert _train_step(pooled, torch.randn(2, 8, 4, 12, 16)).shape == (2, 8, 4, 6, 8)
    dplr = S4ND(8, ndim=2, d_state=16, kernel="s4", disc="bilinear")
    assert _train_step(dplr, torch.randn(2, 8, 12, 16)).shape == (2, 8, 12, 16)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_flexconv(ndim):
    sizes = (9, 10, 11)[:ndim]
    layer = FlexConv(8, ndim=ndim, l_max=sizes)
    assert _train_step(layer, torch.randn(2, 8, *sizes)).shape == (2, 8, *sizes)
    assert _eval(layer, torch.randn(2, 8, *(s + 3 for s in sizes))).shape == (2, 8, *(s + 3 for s in sizes))


@pytest.mark.parametrize("decay_shape", [(64, 1), (64, 300)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_linear_scan_torch_backend(decay_shape, dtype):
    a = torch.rand(*decay_shape, dtype=dtype, device=META, requires_grad=True)
    b = torch.randn(64, 300, dtype=dtype, device=META, requires_grad=True)
    h0 = torch.randn(64, dtype=dtype, device=META)
    h = linear_scan(a, b, h0, backend="torch")
    torch.view_as_real(h).sum().backward() if dtype.is_complex else h.sum().backward()
    assert h.device.type == a.grad.device.type == b.grad.device.type == META


@pytest.mark.parametrize("name", ["transformer", "mean_pool"])  # frame-indexed heads
def test_temporal_heads(name):
    head = create_temporal_head(name, 24, 5).to(META)
    y = forward_with_time(head, torch.randn(2, 16, 24, device=META), torch.arange(16, device=META) / 8.0)
    y.sum().backward()
    assert y.device.type == META and y.shape == (2, 5)
