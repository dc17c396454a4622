"""S4ND: multidimensional state-space convolution for images and video.

Each spatial axis has its own bank of 1D SSMs; the N-d kernel of feature ``h`` is a sum of
``channels`` outer products of per-axis kernels (S4ND, Nguyen et al. 2022). The layer treats
its input as samples of a continuous signal on a fixed extent (see
:mod:`s4vision.layers.resolution`): along an axis of ``L`` samples the SSM step is
``dt * ref / L``, the kernel spans the whole input, and its taps integrate the continuous
kernel over the cells between cell-centred samples, so an image at twice the resolution gives
the same output, twice as finely sampled.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.func import functional_call

from .._checks import check_choice, check_positive_int
from ..kernels.ssm import KERNELS, SSMKernelBase, centred_kernel, ssm_kernel
from ..ops.separable import SEPARABLE_PATHS, separable_conv_nd, separable_kernel
from .resolution import EvalKernelCache, Rate, ReferenceGrid, as_sizes, check_ndim
from .s4 import _ACTIVATIONS, check_channels_first

__all__ = ["S4ND", "PointwiseConv"]

_OUT_PROJ = ("linear", "glu")


class PointwiseConv(nn.Module):
    """A ``1 x ... x 1`` convolution for any number of spatial axes: ``(B, C, *S) -> (B, out, *S)``."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__()
        self.proj = nn.Conv1d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.flatten(2)).unflatten(2, x.shape[2:])


class S4ND(nn.Module):
    """N-d state-space layer (S4ND) on ``(B, dim, *S)``, ``len(S) == ndim``, returning the same shape.

    ``y = out_proj(dropout(act(K * x + D x)))`` with ``K`` the depthwise N-d SSM kernel of
    every feature. With ``out_proj=False`` the layer is linear, ``y = K * x + D x``: a drop-in
    for a depthwise convolution (as in ConvNeXt-S4ND).

    Args:
        dim: features ``C`` of the input.
        ndim: spatial axes: 1 (sequences), 2 (images), 3 (video ``(B, C, T, H, W)``).
        d_state: real state size ``N`` of each 1D SSM (``N // 2`` complex modes).
        kernel: ``"s4d"`` (diagonal) or ``"s4"`` (diagonal plus low rank).
        bidirectional: kernels extend both ways from the origin (causal + anti-causal SSM per
            axis). ``False`` gives a kernel causal along every axis.
        channels: rank of the N-d kernel: the number of outer products summed.
        l_max: reference size (int or one per axis); ``None``: the first input size seen in
            training. Stored in the state dict.
        bandlimit: keep only SSM modes below ``bandlimit / 2`` cycles per reference sample (and
            below the Nyquist frequency of the input); S4ND used 0.2 for resolution changes.
        out_proj: ``"linear"`` or ``True`` (pointwise conv), ``"glu"`` (pointwise to ``2C``
            then GLU), ``False``/``None`` (no activation, dropout or projection).
        activation: ``"gelu"``, ``"silu"``, ``"relu"``, ``"tanh"`` or ``"identity"``.
        dropout: dropout after the activation.
        init: SSM initialisation (``"lin"``, ``"inv"``, ``"legs"``, ``"real"`` for s4d; a HiPPO
            measure for s4); ``None``: the generator's default.
        disc: ``"zoh"`` (default; it samples the continuous kernel exactly, so it is the
            resolution-consistent choice) or ``"bilinear"`` (warps frequencies).
        dt_min, dt_max: log-uniform initial range of the SSM step at the reference size.
        lr: optional learning rate tag for the SSM parameters (see :mod:`s4vision.kernels.ssm`).
        conv_path: ``"auto"`` or a :func:`s4vision.ops.separable_conv_nd` path.

    ``forward(x, rate=None)``: ``rate`` (a number or one per axis) overrides the derived
    ``ref_i / S_i``: the SSM step along axis ``i`` is ``dt * rate_i``.
    """

    def __init__(
        self,
        dim: int,
        ndim: int = 2,
        d_state: int = 64,
        kernel: str = "s4d",
        bidirectional: bool = True,
        channels: int = 1,
        l_max: Optional[Union[int, Sequence[int]]] = None,
        bandlimit: Optional[float] = None,
        out_proj: Union[bool, str, None] = True,
        activation: str = "gelu",
        dropout: float = 0.0,
        init: Optional[str] = None,
        disc: str = "zoh",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        lr: Optional[float] = None,
        conv_path: str = "auto",
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_ndim(ndim)
        check_choice("SSM kernel", kernel, KERNELS)
        check_positive_int("channels", channels)
        if bandlimit is not None and not bandlimit > 0:
            raise ValueError(f"bandlimit must be positive or None, got {bandlimit!r}")
        if out_proj is True:
            out_proj = "linear"
        if out_proj not in _OUT_PROJ + (False, None):
            raise ValueError(f"out_proj must be True, False, None, 'linear' or 'glu', got {out_proj!r}")
        check_choice("activation", activation, _ACTIVATIONS)
        if conv_path not in SEPARABLE_PATHS:
            raise ValueError(f"conv_path must be one of {SEPARABLE_PATHS}, got {conv_path!r}")
        self.dim, self.ndim, self.d_state, self.channels = dim, ndim, d_state, channels
        self.bidirectional, self.bandlimit, self.conv_path = bidirectional, bandlimit, conv_path
        halves = 2 if bidirectional else 1
        # The band limit is applied here, relative to the reference grid, not by the generator.
        self.ssm = nn.ModuleList(
            ssm_kernel(kernel, dim, d_state, channels * halves, init=init, disc=disc,
                       dt_min=dt_min, dt_max=dt_max, bandlimit=None, lr=lr)
            for _ in range(ndim)
        )
        self.grid = ReferenceGrid(ndim, l_max)
        self.D = nn.Parameter(torch.randn(dim))
        if out_proj:
            self.act = _ACTIVATIONS[activation]()
            self.dropout = nn.Dropout(dropout)
            width = 2 * dim if out_proj == "glu" else dim
            self.out_proj = nn.Sequential(PointwiseConv(dim, width), nn.GLU(dim=1)) if out_proj == "glu" \
                else PointwiseConv(dim, width)
        else:
            self.act = self.dropout = self.out_proj = None
        self._cache = EvalKernelCache()

    # -- kernels -----------------------------------------------------------------------------

    def _band_limited_C(self, gen: SSMKernelBase, rate: float) -> Optional[torch.Tensor]:
        """The generator's ``C`` with the modes above the band limit zeroed, or ``None``.

        A mode's frequency is measured per *reference* sample, so the kernel keeps the same
        modes at every resolution; modes above the Nyquist frequency of the actual grid
        (``rate * freq >= 1/2``) are dropped as well.
        """
        if self.bandlimit is None:
            return None
        freq = gen.dt(1.0)[:, None] * gen.diagonal_A().imag.abs() / (2 * math.pi)  # (H, M)
        keep = freq * max(1.0, rate * self.bandlimit) < self.bandlimit / 2
        return gen.C * keep[None, :, :, None].to(gen.C.dtype)

    def _axis_kernel(self, gen: SSMKernelBase, length: int, rate: float) -> torch.Tensor:
        """Centred kernel ``(channels, dim, 2 * length - 1)`` of one axis."""
        C = self._band_limited_C(gen, rate)
        # Sampled at half the step so that pairs of taps tile the cells between samples exactly.
        k = functional_call(gen, {} if C is None else {"C": C}, (2 * length, rate / 2))
        if self.bidirectional:
            fwd, bwd = k[: self.channels], k[self.channels:]
        else:
            fwd, bwd = k, torch.zeros_like(k)
        return centred_kernel(fwd, bwd, half_step=True)

    def _factors(self, sizes: Tuple[int, ...], rates: Tuple[float, ...]) -> List[torch.Tensor]:
        return self._cache(
            self, ("factors", sizes, rates),
            lambda: [self._axis_kernel(g, L, r) for g, L, r in zip(self.ssm, sizes, rates)],
        )

    def _sizes(self, sizes: Sequence[int]) -> Tuple[int, ...]:
        return as_sizes(tuple(sizes), self.ndim, "sizes")

    def kernel_factors(self, sizes: Sequence[int], rate: Optional[Rate] = None) -> List[torch.Tensor]:
        """Per-axis kernels for an input of spatial size ``sizes``: ``ndim`` tensors
        ``(channels, dim, 2 S_i - 1)``, centred, in fp32 (fp64 for a double layer)."""
        sizes = self._sizes(sizes)
        return self._factors(sizes, self.grid.rates(sizes, rate))

    def kernel(self, sizes: Sequence[int], rate: Optional[Rate] = None) -> torch.Tensor:
        """Dense N-d kernel ``(dim, 2 S_1 - 1, ..., 2 S_N - 1)``: the sum over ``channels`` of
        the outer products of :meth:`kernel_factors`."""
        return separable_kernel(self.kernel_factors(sizes, rate))

    # -- forward -----------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, rate: Optional[Rate] = None) -> torch.Tensor:
        """``x (B, dim, *S) -> (B, dim, *S)``."""
        check_channels_first(x, self.dim, self.ndim)
        sizes = tuple(x.shape[2:])
        self.grid.observe(sizes)
        factors = self._factors(sizes, self.grid.rates(sizes, rate))
        y = separable_conv_nd(x, factors, path=self.conv_path)
        y = y + self.D.view(-1, *(1,) * self.ndim).to(y.dtype) * x
        if self.out_proj is None:
            return y.to(x.dtype)
        return self.out_proj(self.dropout(self.act(y)).to(x.dtype))

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, ndim={self.ndim}, d_state={self.d_state}, channels={self.channels}, "
            f"bidirectional={self.bidirectional}, bandlimit={self.bandlimit}"
        )
