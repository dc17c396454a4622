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
import torch.nn.functional as F
from torch import nn

from .._amp import autocast_off
from .._checks import check_channels_first, check_choice, check_ndim, check_positive_int, check_positive_number, check_sizes
from ..kernels.cache import EvalKernelCache
from ..kernels.continuous import KERNEL_NETS, kernel_net as build_kernel_net
from ..errors import InvalidValueError
from ..ops.fftconv import _fft_conv_planned, _fft_conv_spectrum, _plan
from ..sampling import GridView, Rate, ReferenceGrid, offset_grid
from .pointwise import create_activation, create_out_proj

__all__ = ["FlexConv", "GaussianMask"]

# The default mask threshold: the float32 unit roundoff. Taps whose mask is below it are below
# the rounding error of the kernel's peak, so cropping them changes no float32 output beyond
# rounding; larger thresholds trade the kernel's tails for speed (FlexConv's "dynamic cropping").
NEGLIGIBLE_MASK = 2.0**-24
# Kernels of at most this many taps each side of the centre are convolved directly (oneDNN's
# depthwise convolution); wider ones by FFT. Measured on the development CPU: direct wins up to
# 9x9 for inference and about 5x5 with gradients; from 15x15 on it is 10-50x slower than FFT.
_DIRECT_HALF_WIDTH = 4
_DIRECT_HALF_WIDTH_TRAIN = 2


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
        mask_threshold: the kernel is cropped to the box outside which the mask is below this
            value (FlexConv's learned kernel size; see :meth:`crop`). A cropped tap ``p`` weighs
            less than ``mask_threshold * |net(p)| * cell volume``, so the output changes by at
            most ``mask_threshold * sum_p |net(p)| * volume * max |x|`` per feature. The default,
            :data:`NEGLIGIBLE_MASK` (the float32 unit roundoff), changes nothing beyond rounding;
            a larger value (e.g. ``1e-3``) makes narrow masks cheap: the cost follows the
            cropped extent, not the input's.
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
        mask_threshold: float = NEGLIGIBLE_MASK,
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
        with torch.device("cpu"):  # the net evaluates itself to normalise its output: real tensors
            net = build_kernel_net(kernel_net, ndim, dim, hidden=kernel_hidden, depth=kernel_depth,
                                   bandwidth=bandwidth)
        self.kernel_net = net.to(device=device if device is not None else torch.get_default_device(), dtype=dtype)
        self.mask = GaussianMask(ndim, mask_sigma, **dd) if mask else None
        check_positive_number("mask_threshold", mask_threshold)
        if mask_threshold >= 1:
            raise InvalidValueError(f"mask_threshold must be below 1 (the mask's peak), got {mask_threshold}")
        self.mask_threshold = mask_threshold
        self.bias = nn.Parameter(torch.zeros(dim, **dd)) if bias else None
        self.act = create_activation(activation)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = create_out_proj(out_proj, dim, out_dim, **dd)
        self._cache = EvalKernelCache()

    def _kernel(self, sizes: Tuple[int, ...], spacings: Tuple[float, ...]) -> torch.Tensor:
        """The kernel ``(dim, 2 s_1 - 1, ...)`` at the offsets ``-(s - 1) .. s - 1`` times the
        spacings (``sizes`` the input's, or smaller for a cropped kernel)."""
        param = next(self.kernel_net.parameters())
        dtype = torch.float64 if param.dtype == torch.float64 else torch.float32
        device = param.device
        with autocast_off(device):
            coords = offset_grid(sizes, spacings, device=device, dtype=dtype)  # (*K, ndim)
            if param.dtype == dtype:
                k = self.kernel_net(coords)  # (*K, dim)
            else:  # a half-precision layer (.half(), .bfloat16()): the kernel is still computed in fp32
                state = {name: t.to(dtype) if t.is_floating_point() else t
                         for name, t in (*self.kernel_net.named_parameters(), *self.kernel_net.named_buffers())}
                k = torch.func.functional_call(self.kernel_net, state, (coords,))
            if self.mask is not None:
                k = k * self.mask(coords)[..., None]
            k = k * math.prod(spacings)  # cell volume: a Riemann sum of the continuous integral
            return k.movedim(-1, 0)

    def kernel(self, sizes: Sequence[int], rate: Optional[Rate] = None) -> torch.Tensor:
        """Depthwise kernel ``(dim, 2 S_1 - 1, ..., 2 S_N - 1)`` for inputs of spatial size ``sizes``
        (uncropped: ``forward`` uses its central ``2 h + 1`` taps, ``h`` from :meth:`crop`)."""
        sizes = check_sizes("sizes", tuple(sizes), self.ndim)
        spacings = self.grid.spacings(sizes, rate)
        return self._cache(self, ("kernel", sizes, spacings), lambda: self._kernel(sizes, spacings))

    def forward(self, x: torch.Tensor, rate: Optional[Rate] = None) -> torch.Tensor:
        """``x (B, dim, *S) -> (B, out_dim, *S)``."""
        check_channels_first(x, self.dim, self.ndim)
        sizes = tuple(x.shape[2:])
        self.grid.observe(sizes)
        y = self._convolve(x, sizes, self.grid.spacings(sizes, rate))
        if self.bias is not None:  # y is always a new tensor: add in place when nothing records it
            bias = self.bias.view(-1, *(1,) * self.ndim).to(y.dtype)
            y = y + bias if torch.is_grad_enabled() else y.add_(bias)
        return self.out_proj(self.dropout(self.act(y)).to(x.dtype))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, ndim={self.ndim}, out_dim={self.out_dim}"

    # -- cropping and the convolution --------------------------------------------------------

    def crop(self, sizes: Sequence[int], rate: Optional[Rate] = None) -> Tuple[int, ...]:
        """Half-widths ``h`` (taps each side of the centre, at most ``S - 1``) of the kernel
        actually used for inputs of ``sizes``: every tap outside ``[-h, h]`` along some axis has
        a Gaussian mask below ``mask_threshold`` (the mask is a product of per-axis factors, each
        at most 1, so one factor below the threshold is enough). Without a mask: ``S - 1``."""
        sizes = check_sizes("sizes", tuple(sizes), self.ndim)
        return self._half_widths(sizes, self.grid.spacings(sizes, rate))

    def _half_widths(self, sizes: Tuple[int, ...], spacings: Tuple[float, ...]) -> Tuple[int, ...]:
        full = tuple(s - 1 for s in sizes)
        if self.mask is None or torch.compiler.is_compiling() or self.mask.mu.is_meta:  # meta: no values
            return full
        radius = math.sqrt(2 * math.log(1 / self.mask_threshold))  # in units of sigma
        mu = self.mask.mu.detach().double().cpu().tolist()
        sigma = self.mask.log_sigma.detach().double().exp().cpu().tolist()
        half = []
        for m, sd, d, limit in zip(mu, sigma, spacings, full):
            lo, hi = (m - radius * sd) / d, (m + radius * sd) / d  # kept offsets, in taps
            if hi < -limit or lo > limit:  # the mask is negligible over the whole kernel
                half.append(0)
            else:
                half.append(min(limit, max(abs(math.ceil(lo)), abs(math.floor(hi)))))
        return tuple(half)

    def _crop_box(self, sizes: Tuple[int, ...], spacings: Tuple[float, ...]) -> torch.Tensor:
        """``(2 S_1 - 1, ...)``: 1 on the taps :meth:`_half_widths` keeps, 0 elsewhere, from
        tensor operations (under ``torch.compile``, where the crop cannot read the parameters'
        values, the full kernel times this box is the cropped kernel)."""
        radius = math.sqrt(2 * math.log(1 / self.mask_threshold))
        mu = self.mask.mu.detach().double()
        sigma = self.mask.log_sigma.detach().double().exp()
        box = None
        for a, (s, d) in enumerate(zip(sizes, spacings)):
            lo, hi = (mu[a] - radius * sigma[a]) / d, (mu[a] + radius * sigma[a]) / d
            h = torch.maximum(torch.ceil(lo).abs(), torch.floor(hi).abs()).clamp(max=s - 1)
            h = torch.where((hi < -(s - 1)) | (lo > s - 1), torch.zeros_like(h), h)
            keep = torch.arange(1 - s, s, device=mu.device, dtype=mu.dtype).abs() <= h
            box = keep if box is None else box[..., None] & keep
        param = next(self.kernel_net.parameters())
        return box.to(device=param.device, dtype=torch.float64 if param.dtype == torch.float64 else torch.float32)

    def _convolve(self, x: torch.Tensor, sizes: Tuple[int, ...], spacings: Tuple[float, ...]) -> torch.Tensor:
        """Depthwise convolution with the kernel cropped to :meth:`crop`: directly when it is tiny
        (``F.conv``), else by FFT with its spectrum cached in eval mode."""
        half = self._half_widths(sizes, spacings)
        crop = tuple(h + 1 for h in half)  # the offset grid of a (2h + 1)-tap kernel
        grad = torch.is_grad_enabled()
        if max(half) <= (_DIRECT_HALF_WIDTH_TRAIN if grad else _DIRECT_HALF_WIDTH):
            k = self._cache(self, ("kernel", crop, spacings), lambda: self._kernel(crop, spacings))
            with autocast_off(x.device):
                weight = k.flip(tuple(range(1, self.ndim + 1))).unsqueeze(1)
                conv = (F.conv1d, F.conv2d, F.conv3d)[self.ndim - 1]
                return conv(x.to(k.dtype), weight, padding=half, groups=self.dim)

        def planned_kernel():
            k = self._kernel(crop, spacings)
            if self.mask is not None and torch.compiler.is_compiling():  # no crop: zero those taps
                k = k * self._crop_box(sizes, spacings)
            return _plan(sizes, k, half)

        if torch.is_grad_enabled():  # the kernel carries a graph (nothing is cached then)
            k, plan = planned_kernel()
            with autocast_off(x.device):
                return _fft_conv_planned(x.to(k.dtype), k, plan)

        def spectrum():
            k, plan = planned_kernel()
            return torch.fft.rfftn(k, s=plan.fft_sizes, dim=plan.dims), plan

        k_f, plan = self._cache(self, ("spectrum", sizes, spacings, half), spectrum)
        dtype = k_f.real.dtype
        if x.numel() == 0:
            return x.new_zeros(x.shape, dtype=dtype)
        with autocast_off(x.device):
            return _fft_conv_spectrum(x.to(dtype), k_f, plan)
