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

from .._checks import check_choice, check_positive_int
from ..kernels.continuous import KERNEL_NETS, kernel_net as build_kernel_net
from ..ops.fftconv import fft_conv_nd
from ..ops.grids import offset_grid
from .resolution import EvalKernelCache, Rate, ReferenceGrid, as_sizes, check_ndim
from .s4 import check_channels_first
from .s4nd import PointwiseConv

__all__ = ["FlexConv", "GaussianMask"]


class GaussianMask(nn.Module):
    """``exp(-1/2 sum_d ((x_d - mu_d) / sigma_d)^2)`` with learnable ``mu`` and ``sigma`` per axis.

    Args:
        ndim: coordinate dimensions.
        sigma: initial width in units of the extent (``mu`` starts at 0).
    """

    def __init__(self, ndim: int, sigma: float = 0.25) -> None:
        super().__init__()
        if not sigma > 0:
            raise ValueError(f"mask sigma must be positive, got {sigma!r}")
        self.mu = nn.Parameter(torch.zeros(ndim))
        self.log_sigma = nn.Parameter(torch.full((ndim,), math.log(sigma)))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """``(..., ndim) -> (...)``."""
        z = (coords - self.mu.to(coords.dtype)) * torch.exp(-self.log_sigma.to(coords.dtype))
        return torch.exp(-0.5 * z.square().sum(-1))


class FlexConv(nn.Module):
    """Separable continuous-kernel convolution on ``(B, dim, *S)``, ``len(S) == ndim``.

    ``y = pointwise(K * x + bias)`` where ``K`` is the depthwise kernel ``kernel_net(p) * mask(p)``
    sampled at the offsets ``p`` between samples and weighted by the cell volume.

    Args:
        dim: input features ``C``.
        ndim: spatial axes (1, 2 or 3).
        kernel_net: ``"magnet"``, ``"siren"``, ``"mlp"`` (ReLU MLP on random Fourier
            features) or ``"gabor"`` (single-layer Gabor network).
        out_dim: output features of the pointwise mix (default ``dim``).
        separable: ``True``: depthwise conv then pointwise mix; ``False``: only the depthwise
            conv (``out_dim`` must then be ``dim`` or ``None``).
        hidden, depth: width and number of layers of the kernel net.
        bandwidth: highest frequency of the initial kernel, in cycles per unit extent;
            ``None``: a quarter of the smallest ``l_max`` (half its Nyquist frequency) when
            ``l_max`` is given, else 4.
        mask: multiply the kernel by a learnable Gaussian mask.
        mask_sigma: initial width of the mask (units of the extent).
        l_max: reference size (int or one per axis); ``None``: the first input size seen in
            training. Only an explicit ``rate`` makes it matter: the sample spacing is
            ``rate_i / ref_i``, which is ``1 / S_i`` by default.
        bias: add a bias per feature after the depthwise conv.

    ``forward(x, rate=None)``: ``rate`` (a number or one per axis) overrides ``ref_i / S_i``.
    """

    def __init__(
        self,
        dim: int,
        ndim: int = 2,
        kernel_net: str = "magnet",
        out_dim: Optional[int] = None,
        separable: bool = True,
        hidden: int = 32,
        depth: int = 3,
        bandwidth: Optional[float] = None,
        mask: bool = True,
        mask_sigma: float = 0.25,
        l_max: Optional[Union[int, Sequence[int]]] = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_ndim(ndim)
        check_choice("kernel net", kernel_net, KERNEL_NETS)
        out_dim = dim if out_dim is None else out_dim
        if not separable and out_dim != dim:
            raise ValueError(f"separable=False keeps the {dim} features; got out_dim={out_dim}")
        if bandwidth is None:
            bandwidth = min(as_sizes(l_max, ndim, "l_max")) / 4 if l_max is not None else 4.0
        self.dim, self.ndim, self.out_dim, self.separable = dim, ndim, out_dim, separable
        self.kernel_net = build_kernel_net(kernel_net, ndim, dim, hidden=hidden, depth=depth, bandwidth=bandwidth)
        self.mask = GaussianMask(ndim, mask_sigma) if mask else None
        self.grid = ReferenceGrid(ndim, l_max)
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None
        self.pointwise = PointwiseConv(dim, out_dim) if separable else None
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
        sizes = as_sizes(tuple(sizes), self.ndim, "sizes")
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
        y = y.to(x.dtype)
        return self.pointwise(y) if self.pointwise is not None else y

    def extra_repr(self) -> str:
        return f"dim={self.dim}, ndim={self.ndim}, out_dim={self.out_dim}, separable={self.separable}"
