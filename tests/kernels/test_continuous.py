"""Kernel nets (``s4vision.kernels.continuous``): coordinates ``(..., in_dim)`` -> kernel values ``(..., out_dim)``."""
import re

import numpy as np
import pytest
import torch

from s4vision.kernels import KERNEL_NETS, RFFMLP, SIREN, GaborNet, MAGNet, kernel_net

NETS = sorted(KERNEL_NETS)


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("in_dim", [1, 2, 3])
def test_output_shape(net, in_dim):
    f = kernel_net(net, in_dim, 5, hidden=8)
    assert f(torch.rand(7, 11, in_dim) * 2 - 1).shape == (7, 11, 5)
    assert f(torch.rand(4, in_dim)).shape == (4, 5)
    assert f(torch.zeros(in_dim)).shape == (5,)


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("in_dim", [1, 2, 3])
def test_output_has_unit_std_over_the_cube(net, in_dim):
    """Measured at 20,000 uniform random points of ``[-1, 1]^in_dim``. The nets normalise on a
    33-point (3-D: 17-point) grid per axis, which estimates the std over the cube to a few
    percent (up to 9% in 3-D over 20 seeds), hence the 10% tolerance."""
    f = kernel_net(net, in_dim, 5, hidden=16, bandwidth=3.0)
    coords = torch.rand(20_000, in_dim, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        std = f(coords).std().item()
    assert abs(std - 1) < 0.1


@pytest.mark.parametrize("net", ["magnet", "gabor"])
@pytest.mark.parametrize("in_dim", [1, 2])
@pytest.mark.parametrize("bandwidth", [2.0, 6.0])
def test_spectrum_stays_below_the_bandwidth(net, in_dim, bandwidth):
    """Less than 0.1% of the energy lies above ``bandwidth + 1`` cycles per unit on any axis.

    The net is sampled at ``n`` cell centres of ``[-1, 1]`` per axis (frequency bins 0.5 cycles
    apart) under a Hann window, whose main lobe spreads a pure tone over +-1 cycle; the Gabor
    envelopes spread it by less. Over 20 seeds the largest fraction measured was 8e-5.
    """
    n = 1024 if in_dim == 1 else 128
    axis = (np.arange(n) + 0.5) / n * 2 - 1
    grid = np.stack(np.meshgrid(*[axis] * in_dim, indexing="ij"), -1)
    f = kernel_net(net, in_dim, 4, hidden=32, bandwidth=bandwidth).double()
    with torch.no_grad():
        y = f(torch.from_numpy(grid)).numpy()
    window = np.hanning(n)
    for d in range(in_dim):
        y = y * window.reshape([n if a == d else 1 for a in range(in_dim)] + [1])
    power = (np.abs(np.fft.fftn(y, axes=range(in_dim))) ** 2).sum(-1)
    freq = np.abs(np.fft.fftfreq(n, d=2 / n))
    highest = np.max(np.stack(np.meshgrid(*[freq] * in_dim, indexing="ij")), axis=0)  # on any axis
    assert power[highest > bandwidth + 1].sum() / power.sum() < 1e-3
    # and the content reaches up to the bandwidth (the test would pass for a constant net)
    assert power[highest > bandwidth / 2].sum() / power.sum() > 1e-2


def test_magnet_is_a_product_of_gabor_filters():
    """``h_1 = g_1(x)``, ``h_2 = (W h_1 + b) * g_2(x)``, output ``W_out h_2 + b_out``, one point at a time."""
    f = MAGNet(2, 3, hidden=4, depth=2, bandwidth=2.0).double()

    def gabor(layer, p):
        envelope = torch.exp(-0.5 * (((p - layer.mu) * layer.gamma) ** 2).sum(-1))
        return envelope * torch.sin(layer.linear.weight @ p + layer.linear.bias)

    x = torch.rand(5, 2, dtype=torch.float64) * 2 - 1
    for p, out in zip(x, f(x)):
        h = gabor(f.filters[0], p)
        h = (f.linears[0].weight @ h + f.linears[0].bias) * gabor(f.filters[1], p)
        torch.testing.assert_close(out, f.head.weight @ h + f.head.bias)


def test_gabor_net_has_one_isotropic_layer():
    f = GaborNet(3, 2, hidden=6)
    assert f.atoms.gamma.shape == (6, 1)  # one envelope width per atom, shared by the axes
    assert sum(isinstance(m, torch.nn.Linear) for m in f.modules()) == 2


@pytest.mark.parametrize("net", NETS)
def test_gradients_reach_every_parameter(net):
    f = kernel_net(net, 2, 3, hidden=8)
    f(torch.rand(50, 2) * 2 - 1).square().sum().backward()
    for name, p in f.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_rff_frequencies_are_saved_and_restored():
    a, b = RFFMLP(2, 3, hidden=8), RFFMLP(2, 3, hidden=8)
    assert "frequencies" in a.state_dict() and not torch.equal(a.frequencies, b.frequencies)
    b.load_state_dict(a.state_dict())
    x = torch.rand(6, 2)
    torch.testing.assert_close(b(x), a(x))


SIZE_ARGS = [(cls, arg) for cls in (MAGNet, GaborNet, SIREN, RFFMLP) for arg in ("in_dim", "out_dim", "hidden", "depth")
             if not (cls is GaborNet and arg == "depth")]


@pytest.mark.parametrize("cls,arg", SIZE_ARGS)
@pytest.mark.parametrize("value", [0, -2, 1.5, True])
def test_sizes_must_be_positive_integers(cls, arg, value):
    kwargs = dict(in_dim=2, out_dim=3, hidden=8) if cls is GaborNet else dict(in_dim=2, out_dim=3, hidden=8, depth=2)
    kwargs[arg] = value
    with pytest.raises(ValueError, match=rf"{arg}.*{re.escape(repr(value))}"):
        cls(**kwargs)


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("value", [0.0, -1.0, 0, float("nan")])
def test_bandwidth_must_be_positive(net, value):
    with pytest.raises(ValueError, match=rf"bandwidth.*{re.escape(repr(value))}"):
        kernel_net(net, 2, 3, bandwidth=value)


def test_unknown_net_name():
    with pytest.raises(ValueError, match="'fourier'"):
        kernel_net("fourier", 2, 3)


@pytest.mark.parametrize("net", NETS)
def test_coordinates_must_match_in_dim(net):
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\).*\(4, 3\)"):
        kernel_net(net, 2, 3)(torch.rand(4, 3))
