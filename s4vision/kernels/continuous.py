"""Continuous kernel networks: small networks mapping relative positions to kernel values.

A kernel net maps coordinates ``(..., in_dim)`` (offsets in units of the input's extent, so
``(-1, 1)`` covers every pair of samples) to kernel values ``(..., out_dim)``. Because the
kernel is a function rather than a table of taps, it can be sampled on any grid: this is what
makes FlexConv / CCNN layers resolution-agnostic (Romero et al., "FlexConv", ICLR 2022;
Knigge et al., "Modelling Long Range Dependencies in ND", the CCNN, 2023).

Every net takes ``bandwidth``: the highest spatial frequency, in cycles per unit extent, that
its initial output contains (approximately for SIREN and the MLP). Sampling the kernel on a grid
whose Nyquist frequency exceeds the bandwidth keeps it free of aliasing, so the same layer agrees
with itself across resolutions. Outputs are normalised at initialisation to unit standard
deviation over ``[-1, 1]^in_dim``.

Nets:
    :class:`MAGNet`: multiplicative anisotropic Gabor network (FlexConv's kernel net).
    :class:`GaborNet`: a single layer of isotropic Gabor atoms (a one-layer MFN).
    :class:`SIREN`: sine-activated MLP.
    :class:`RFFMLP`: ReLU MLP on random Fourier features.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_choice
from ..errors import InvalidValueError

__all__ = ["KernelNet", "MAGNet", "GaborNet", "SIREN", "RFFMLP", "KERNEL_NETS", "kernel_net"]


def _check_positive(name: str, value, kind=int) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if kind is int:
        ok = ok and isinstance(value, int)
    if not ok:
        raise InvalidValueError(f"{name} must be a positive {kind.__name__}, got {value!r}")


class KernelNet(nn.Module):
    """Base class: ``forward(coords (..., in_dim)) -> (..., out_dim)``."""

    def __init__(self, in_dim: int, out_dim: int, bandwidth: float) -> None:
        super().__init__()
        _check_positive("in_dim", in_dim)
        _check_positive("out_dim", out_dim)
        _check_positive("bandwidth", bandwidth, float)
        self.in_dim, self.out_dim, self.bandwidth = in_dim, out_dim, float(bandwidth)

    def _check_coords(self, coords: torch.Tensor) -> None:
        if coords.shape[-1] != self.in_dim:
            raise InvalidValueError(f"{type(self).__name__} expects coordinates (..., {self.in_dim}), got {tuple(coords.shape)}")

    @torch.no_grad()
    def _normalise_output(self, head: nn.Linear, points_per_axis: int = 33) -> None:
        """Scale ``head`` so the output has unit std over a uniform grid of ``[-1, 1]^in_dim``."""
        nn.init.zeros_(head.bias)
        axis = torch.linspace(-1, 1, points_per_axis if self.in_dim < 3 else 17)
        grid = torch.stack(torch.meshgrid(*[axis] * self.in_dim, indexing="ij"), dim=-1)
        std = self(grid).std()
        if std > 0:
            head.weight.div_(std)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, bandwidth={self.bandwidth}"


class GaborLayer(nn.Module):
    """``n`` Gabor filters ``exp(-1/2 sum_d gamma_d^2 (x_d - mu_d)^2) sin(<omega, x> + phi)``.

    Args:
        in_dim: coordinate dimensions.
        n: number of filters.
        max_frequency: frequencies ``|omega_d| / 2 pi`` are drawn uniformly below it.
        gamma_shape: the envelope sharpness ``gamma`` is drawn from ``Gamma(gamma_shape, 1)``.
        anisotropic: one ``gamma`` per coordinate (``True``) or shared (``False``).
    """

    def __init__(self, in_dim: int, n: int, max_frequency: float, gamma_shape: float, anisotropic: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, n)
        with torch.no_grad():
            self.linear.weight.uniform_(-1, 1).mul_(2 * math.pi * max_frequency)
            self.linear.bias.uniform_(-math.pi, math.pi)
        self.mu = nn.Parameter(torch.rand(n, in_dim) * 2 - 1)
        gamma = torch.distributions.Gamma(gamma_shape, 1.0).sample((n, in_dim if anisotropic else 1))
        self.gamma = nn.Parameter(gamma.sqrt())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_dim) -> (..., n)``."""
        envelope = torch.exp(-0.5 * ((x[..., None, :] - self.mu) * self.gamma).square().sum(-1))
        return envelope * torch.sin(self.linear(x))


class MAGNet(KernelNet):
    """Multiplicative anisotropic Gabor network: ``h_1 = g_1(x)``,
    ``h_{l+1} = (W_l h_l + b_l) * g_{l+1}(x)``, output ``W h_depth + b``.

    The output is a sum of products of ``depth`` Gabor filters, so its frequencies are sums of
    ``depth`` filter frequencies: each layer draws its frequencies below ``bandwidth / depth``.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 32, depth: int = 3, bandwidth: float = 4.0) -> None:
        super().__init__(in_dim, out_dim, bandwidth)
        _check_positive("hidden", hidden)
        _check_positive("depth", depth)
        self.filters = nn.ModuleList(
            GaborLayer(in_dim, hidden, bandwidth / depth, gamma_shape=6.0 / depth) for _ in range(depth)
        )
        self.linears = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth - 1))
        for lin in self.linears:
            nn.init.uniform_(lin.weight, -math.sqrt(6 / hidden), math.sqrt(6 / hidden))
            nn.init.zeros_(lin.bias)
        self.head = nn.Linear(hidden, out_dim)
        self._normalise_output(self.head)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        self._check_coords(coords)
        h = self.filters[0](coords)
        for lin, filt in zip(self.linears, self.filters[1:]):
            h = lin(h) * filt(coords)
        return self.head(h)


class GaborNet(KernelNet):
    """One layer of ``hidden`` isotropic Gabor atoms mixed linearly (a single-layer MFN)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 32, bandwidth: float = 4.0) -> None:
        super().__init__(in_dim, out_dim, bandwidth)
        _check_positive("hidden", hidden)
        self.atoms = GaborLayer(in_dim, hidden, bandwidth, gamma_shape=6.0, anisotropic=False)
        self.head = nn.Linear(hidden, out_dim)
        self._normalise_output(self.head)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        self._check_coords(coords)
        return self.head(self.atoms(coords))


class SIREN(KernelNet):
    """Sine-activated MLP (Sitzmann et al. 2020): ``sin(W_1 x + b_1)``, then ``depth - 1``
    layers ``sin(W h + b)`` with SIREN's variance-preserving init, then a linear output.

    First-layer frequencies are drawn below ``bandwidth / depth`` (each sine layer can at most
    add its own frequencies again).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 32, depth: int = 3, bandwidth: float = 4.0) -> None:
        super().__init__(in_dim, out_dim, bandwidth)
        _check_positive("hidden", hidden)
        _check_positive("depth", depth)
        self.layers = nn.ModuleList([nn.Linear(in_dim, hidden)] + [nn.Linear(hidden, hidden) for _ in range(depth - 1)])
        with torch.no_grad():
            self.layers[0].weight.uniform_(-1, 1).mul_(2 * math.pi * bandwidth / depth)
            self.layers[0].bias.uniform_(-math.pi, math.pi)
            for lin in self.layers[1:]:
                lin.weight.uniform_(-math.sqrt(6 / hidden), math.sqrt(6 / hidden))
                lin.bias.uniform_(-math.pi, math.pi)
        self.head = nn.Linear(hidden, out_dim)
        self._normalise_output(self.head)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        self._check_coords(coords)
        h = coords
        for lin in self.layers:
            h = torch.sin(lin(h))
        return self.head(h)


class RFFMLP(KernelNet):
    """ReLU MLP on random Fourier features ``[cos 2 pi F x, sin 2 pi F x]`` (Tancik et al. 2020).

    The feature frequencies ``F (hidden // 2, in_dim)`` are fixed (a persistent buffer) and
    drawn from a normal distribution with standard deviation ``bandwidth / 3``.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 32, depth: int = 3, bandwidth: float = 4.0) -> None:
        super().__init__(in_dim, out_dim, bandwidth)
        _check_positive("hidden", hidden)
        _check_positive("depth", depth)
        features = max(1, hidden // 2)
        self.register_buffer("frequencies", torch.randn(features, in_dim) * (bandwidth / 3))
        widths = [2 * features] + [hidden] * (depth - 1)
        self.layers = nn.ModuleList(nn.Linear(a, hidden) for a in widths)
        self.head = nn.Linear(hidden, out_dim)
        self._normalise_output(self.head)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        self._check_coords(coords)
        phase = 2 * math.pi * coords @ self.frequencies.to(coords.dtype).T
        h = torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)
        for lin in self.layers:
            h = torch.relu(lin(h))
        return self.head(h)


KERNEL_NETS = {"magnet": MAGNet, "gabor": GaborNet, "siren": SIREN, "mlp": RFFMLP}


def kernel_net(
    name: str, in_dim: int, out_dim: int, hidden: int = 32, depth: int = 3, bandwidth: float = 4.0
) -> KernelNet:
    """Build a kernel net by name: ``"magnet"``, ``"gabor"`` (single layer: ``depth`` is
    ignored), ``"siren"`` or ``"mlp"``."""
    check_choice("kernel net", name, KERNEL_NETS)
    if name == "gabor":
        return GaborNet(in_dim, out_dim, hidden=hidden, bandwidth=bandwidth)
    return KERNEL_NETS[name](in_dim, out_dim, hidden=hidden, depth=depth, bandwidth=bandwidth)
