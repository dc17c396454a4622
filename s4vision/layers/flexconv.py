"""FlexConv: convolution with a continuous kernel parameterised by a small network (CCNN).

The depthwise kernel of every feature is a function of the relative position, produced by a
kernel net (:mod:`s4vision.kernels.continuous`) and cropped by a learnable Gaussian mask. It
is sampled at the offsets between cell-centred samples of the input (a global kernel spanning
the whole input) and weighted by the cell volume, so the discrete convolution approximates the
same integral at every resolution. A pointwise convolution then mixes the features (the
separable FlexConv of the CCNN).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .._checks import check_channels_first, check_choice, check_ndim, check_positive_int, check_positive_number, check_sizes
from ..kernels.cache import EvalKernelCache
from ..kernels.continuous import KERNEL_NETS, kernel_net as build_kernel_net
from ..ops.fftconv import fft_conv_nd
from ..sampling import GridView, Rate, ReferenceGrid, offset_grid
from .pointwise import create_activation, create_out_proj

__all__ = ["FlexConv", "GaussianMask"]


class GaussianMask(nn.Module):
    """``exp(-1/2 sum_d ((x_d - mu_d) / sigma_d)^2)`` with learnable ``mu`` and ``sigma`` per axis.

    Args:
        ndim: coordinate dimensions.
        sigma: initial width in units of the extent (``mu`` starts at 0).
    """

    def __init__(self, ndim: int, sigma: float = 0.25, device=None, dtype=None) -> None:
        super().__init__()
        sigma = check_positive_number("mask sigma", sigma)
        self.mu = nn.Parameter(torch.zeros(ndim, device=device, dtype=dtype))
        self.log_sigma = nn.Parameter(torch.full((ndim,), math.log(sigma), device=device, dtype=dtype))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """``(..., ndim) -> (...)``."""
        z = (coords - self.mu.to(coords.dtype)) * torch.exp(-self.log_sigma.to(coords.dtype))
        return torch.exp(-0.5 * z.square().sum(-1))


class FlexConv(nn.Module):
    """Continuous-kernel convolution on ``(B, dim, *S)``, ``len(S) == ndim`` (CCNN's FlexConv).

    ``y = out_proj(dropout(act(K * x + bias)))`` where ``K`` is the depthwise kernel
    ``kernel_net(p) * mask(p)`` sampled at the offsets ``p`` between samples and weighted by the
    cell volume. The default, ``activation=None, out_proj="linear"``, is the CCNN's separable
    FlexConv (depthwise then pointwise); ``out_proj=None`` keeps only the depthwise convolution.
    The argument names are shared by every s4vision layer (see :mod:`s4vision.layers`).

    Args:
        dim: input features ``C``.
        ndim: spatial axes (1, 2 or 3).
        kernel_net: ``"magnet"``, ``"siren"``, ``"mlp"`` (ReLU MLP on random Fourier
            features) or ``"gabor"`` (single-layer Gabor network).
        l_max: reference grid (int, one per axis, or a view of a model's grid); ``None``: the
            first input size seen in training. Only an explicit ``rate`` makes it matter: the
            sample spacing is ``rate_i / ref_i``, which is ``1 / S_i`` by default.
        activation: ``"gelu"``, ``"silu"``, ``"relu"``, ``"tanh"`` or ``None``.
        out_proj: ``"linear"``, ``"glu"`` or ``None``.
        out_dim: output features (default ``dim``; another value needs an ``out_proj``).
        dropout: dropout after the activation.
        bias: add a bias per feature after the depthwise convolution.
        kernel_hidden, kernel_depth: width and number of layers of the kernel net.
        bandwidth: highest frequency of the initial kernel, in cycles per unit extent;
            ``None``: a quarter of the smallest ``l_max`` (half its Nyquist frequency) when
            ``l_max`` is given, else 4.
        mask: multiply the kernel by a learnable Gaussian mask; ``mask_sigma``: its initial width
            (units of the extent).
        device, dtype: where and in which dtype to create the parameters.

    ``forward(x, rate=None)``: ``rate`` (a number or one per axis) overrides ``ref_i / S_i``.
    """

    def __init__(
        self,
        dim: int,
        ndim: int = 2,
        kernel_net: str = "magnet",
        *,
        l_max: Optional[Union[int, Sequence[int], GridView]] = None,
        activation: Optional[str] = None,
        out_proj: Optional[str] = "linear",
        out_dim: Optional[int] = None,
        dropout: float = 0.0,
        bias: bool = True,
        kernel_hidden: int = 32,
        kernel_depth: int = 3,
        bandwidth: Optional[float] = None,
        mask: bool = True,
        mask_sigma: float = 0.25,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_ndim(ndim)
        check_choice("kernel net", kernel_net, KERNEL_NETS)
        out_dim = dim if out_dim is None else check_positive_int("out_dim", out_dim)
        self.grid = l_max if isinstance(l_max, GridView) else ReferenceGrid(ndim, l_max, device=device)
        if bandwidth is None:
            bandwidth = min(self.grid.sizes) / 4 if self.grid.is_set else 4.0
        dd = dict(device=device, dtype=dtype)
        self.dim, self.ndim, self.out_dim = dim, ndim, out_dim
        self.kernel_net = build_kernel_net(kernel_net, ndim, dim, hidden=kernel_hidden, depth=kernel_depth,
                                           bandwidth=bandwidth).to(**dd)
        self.mask = GaussianMask(ndim, mask_sigma, **dd) if mask else None
        self.bias = nn.Parameter(torch.zeros(dim, **dd)) if bias else None
        self.act = create_activation(activation)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = create_out_proj(out_proj, dim, out_dim, **dd)
        self._cache = EvalKernelCache()

    def _kernel(self, sizes: Tuple[int, ...], spacings: Tuple[float, ...]) -> torch.Tensor:
        param = next(self.kernel_net.parameters())
        dtype = torch.float64 if param.dtype == torch.float64 else torch.float32
        device = param.device
        with torch.autocast(device_type=device.type, enabled=False):
            coords = offset_grid(sizes, spacings, device=device, dtype=dtype)  # (*K, ndim)
            k = self.kernel_net(coords)  # (*K, dim)
            if self.mask is not None:
                k = k * self.mask(coords)[..., None]
            k = k * math.prod(spacings)  # cell volume: a Riemann sum of the continuous integral
            return k.movedim(-1, 0)

    def kernel(self, sizes: Sequence[int], rate: Optional[Rate] = None) -> torch.Tensor:
        """Depthwise kernel ``(dim, 2 S_1 - 1, ..., 2 S_N - 1)`` for inputs of spatial size ``sizes``."""
        sizes = check_sizes("sizes", tuple(sizes), self.ndim)
        spacings = self.grid.spacings(sizes, rate)
        return self._cache(self, ("kernel", sizes, spacings), lambda: self._kernel(sizes, spacings))

    def forward(self, x: torch.Tensor, rate: Optional[Rate] = None) -> torch.Tensor:
        """``x (B, dim, *S) -> (B, out_dim, *S)``."""
        check_channels_first(x, self.dim, self.ndim)
        sizes = tuple(x.shape[2:])
        self.grid.observe(sizes)
        y = fft_conv_nd(x, self.kernel(sizes, rate))
        if self.bias is not None:
            y = y + self.bias.view(-1, *(1,) * self.ndim).to(y.dtype)
        return self.out_proj(self.dropout(self.act(y)).to(x.dtype))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, ndim={self.ndim}, out_dim={self.out_dim}"
