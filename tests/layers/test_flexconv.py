import math

import pytest
import torch
import torch.nn.functional as F

import _helpers
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


# -- cropping by the mask, direct and FFT paths ------------------------------------------------------


def _full_conv(layer, x):
    """The reference: the uncropped kernel by ``fft_conv_nd`` (no bias, no projection)."""
    from s4vision.ops import fft_conv_nd

    return fft_conv_nd(x, layer.kernel(tuple(x.shape[2:])))


def test_crop_changes_the_output_by_less_than_the_threshold_bound():
    """Every cropped tap has mask < threshold, so |y_crop - y_full| <= threshold * sum |net| * volume
    * max |x| per feature; the crop really happens and really changes the output a little."""
    threshold = 1e-2
    layer = FlexConv(3, 2, kernel_hidden=8, out_proj=None, bias=False, mask_sigma=0.1, mask_threshold=threshold).double()
    with torch.no_grad():
        layer.mask.mu.copy_(torch.tensor([0.1, -0.05]))
    sizes = (20, 24)
    x = torch.randn(2, 3, *sizes, dtype=torch.float64)
    half = layer.crop(sizes)
    assert all(0 < h < s - 1 for h, s in zip(half, sizes))
    full, cropped = _full_conv(layer, x), layer(x)
    coords = torch.stack(torch.meshgrid(*[(torch.arange(2 * s - 1, dtype=torch.float64) - (s - 1)) / s for s in sizes],
                                        indexing="ij"), -1)
    kept = torch.zeros(coords.shape[:2], dtype=torch.bool)
    kept[tuple(slice(s - 1 - h, s + h) for s, h in zip(sizes, half))] = True
    mu, sigma = layer.mask.mu.detach(), layer.mask.log_sigma.detach().exp()
    mask = torch.exp(-0.5 * ((coords - mu) / sigma).square().sum(-1))
    assert mask[~kept].max() < threshold <= mask[kept].max()
    dropped_mass = (layer.kernel_net(coords).abs() * ~kept[..., None] / math.prod(sizes)).sum((0, 1))  # (dim,)
    bound = threshold * dropped_mass[None, :, None, None] * x.abs().amax((2, 3), keepdim=True)
    change = (cropped - full).abs()
    assert (change <= bound).all()
    assert change.max() > 1e-6 * full.abs().max()  # the crop dropped something


def test_crop_follows_the_mask_extent():
    """The crop grows with sigma and follows mu; without a mask (or with a wide one) nothing is cropped."""
    layer = FlexConv(2, 2, kernel_hidden=8, mask_threshold=1e-3)
    widths = []
    for sigma in (0.02, 0.05, 0.1, 0.2):
        with torch.no_grad():
            layer.mask.log_sigma.fill_(math.log(sigma))
        widths.append(layer.crop((64, 64))[0])
    assert widths == sorted(widths) and widths[0] < widths[-1] < 63
    radius = math.sqrt(2 * math.log(1e3))  # where the mask drops below 1e-3, in units of sigma
    assert widths[2] == math.floor(0.1 * radius * 64)
    with torch.no_grad():
        layer.mask.mu.fill_(0.3)
    assert layer.crop((64, 64))[0] > widths[2]
    assert FlexConv(2, 2, kernel_hidden=8, mask=False).crop((64, 64)) == (63, 63)
    assert FlexConv(2, 2, kernel_hidden=8).crop((64, 64)) == (63, 63)  # default threshold, sigma 0.25


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("sigma", [0.01, 0.04, 0.3])  # direct conv, small FFT, full FFT
def test_direct_and_fft_paths_match_the_cropped_kernel(grad, sigma):
    from s4vision.ops import fft_conv_nd

    layer = FlexConv(3, 2, kernel_hidden=8, out_proj=None, bias=False, mask_sigma=sigma, mask_threshold=1e-3).double()
    sizes = (16, 18)
    x = torch.randn(2, 3, *sizes, dtype=torch.float64, requires_grad=grad)
    half = layer.crop(sizes)
    k = layer.kernel(sizes)[(slice(None),) + tuple(slice(s - 1 - h, s + h) for s, h in zip(sizes, half))]
    with torch.set_grad_enabled(grad):
        y = layer(x)
        ref = fft_conv_nd(x, k)
    torch.testing.assert_close(y, ref)
    if grad:
        g = torch.randn_like(y)
        params = [x] + [p for p in layer.parameters()]
        got = torch.autograd.grad((y * g).sum(), params, allow_unused=True)
        exp = torch.autograd.grad((ref * g).sum(), params, allow_unused=True)
        for a, b in zip(got, exp):
            torch.testing.assert_close(a, b)


def test_spectrum_is_cached_in_eval_and_invalidated():
    layer = FlexConv(2, 2, kernel_hidden=8).eval()
    x = torch.randn(1, 2, 12, 12)
    with torch.no_grad():
        y = layer(x)
        calls = []
        original = layer._kernel
        layer._kernel = lambda *a: calls.append(a) or original(*a)
        torch.testing.assert_close(layer(x), y)
        assert not calls  # the cached spectrum served the second call
        layer.mask.log_sigma.add_(0.2)
        assert not torch.allclose(layer(x), y) and calls


def test_mask_threshold_errors():
    for bad in (0.0, 1.0, -1e-3):
        with pytest.raises(ValueError, match="mask_threshold"):
            FlexConv(2, 2, mask_threshold=bad)


@pytest.mark.device
@pytest.mark.parametrize("sigma", [0.03, 0.25])  # direct (cropped) and FFT
def test_layer_on_the_test_device(device, sigma):
    ref = FlexConv(3, 2, kernel_hidden=8, mask_sigma=sigma, mask_threshold=1e-3).double()
    layer = FlexConv(3, 2, kernel_hidden=8, mask_sigma=sigma, mask_threshold=1e-3).to(device)
    layer.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    x = torch.randn(2, 3, 16, 20, dtype=torch.float64)
    y = layer(x.float().to(device))
    y_ref = ref(x)
    torch.testing.assert_close(y.double().cpu(), y_ref, atol=1e-4, rtol=1e-4)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    for p, p_ref in zip(layer.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad.double().cpu(), p_ref.grad, atol=1e-3, rtol=1e-3)


@_helpers.needs_compile
def test_compiled_layer_crops_like_the_eager_one():
    """Under torch.compile the crop cannot read the mask's values: the full kernel times the crop
    box must give the eager (cropped) output, not the uncropped one."""
    layer = FlexConv(3, 2, kernel_hidden=8, out_proj=None, bias=False, mask_sigma=0.05, mask_threshold=0.1).double()
    with torch.no_grad():
        layer.mask.mu.copy_(torch.tensor([0.07, -0.1]))
    x = torch.randn(2, 3, 20, 24, dtype=torch.float64)
    half = layer.crop((20, 24))
    assert all(0 < h < s - 1 for h, s in zip(half, (20, 24)))
    eager = layer(x)
    assert not torch.allclose(eager, _full_conv(layer, x), atol=1e-6)  # cropping at 0.1 matters
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="eager", fullgraph=True)(x)
    torch.testing.assert_close(compiled, eager)
