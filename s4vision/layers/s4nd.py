"""S4ND: multidimensional state-space convolution for sequences, images and video.

Each spatial axis has its own bank of 1D SSMs (a kernel generator of :mod:`s4vision.kernels.ssm`);
the N-d kernel of a feature is a sum of ``rank`` outer products of per-axis kernels (S4ND,
Nguyen et al. 2022). The layer treats its input as samples of a continuous signal on a fixed
extent (:mod:`s4vision.sampling`): along an axis of ``S`` samples the SSM step is
``dt * ref / S``, the kernel spans the whole input, and its taps integrate the continuous
kernel over the cells between cell-centred samples, so an image at twice the resolution gives
the same output, twice as finely sampled.
"""
from __future__ import annotations

import functools
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .._checks import check_channels_first, check_choice, check_ndim, check_positive_int, check_sizes
from ..errors import InvalidValueError
from ..kernels.cache import EvalKernelCache
from ..kernels.ssm import KERNELS, centred_kernels, ssm_kernel
from ..ops.pointwise import pointwise_conv
from ..ops.separable import (
    SEPARABLE_PATHS,
    choose_separable_path,
    separable_conv_nd,
    separable_kernel,
    toeplitz_conv_nd,
    toeplitz_matrix,
)
from ..sampling import GridView, Rate, ReferenceGrid
from .pointwise import create_activation, create_out_proj

__all__ = ["S4ND"]

GridArg = Optional[Union[int, Sequence[int], GridView]]


class S4ND(nn.Module):
    """N-d state-space layer on ``(B, dim, *S)``, ``len(S) == ndim``.

    ``y = out_proj(dropout(act(K * x + D x)))`` where ``K`` holds ``channels`` depthwise N-d SSM
    kernels per feature (their ``channels * dim`` outputs are mixed back to ``out_dim`` by
    ``out_proj``), each the sum of ``rank`` outer products of per-axis kernels. With
    ``activation=None, out_proj=None`` the layer is linear, ``y = K * x + D x``: a drop-in for
    a depthwise convolution (as in ConvNeXt-S4ND). The argument names are shared by every
    s4vision layer (see :mod:`s4vision.layers`).

    Args:
        dim: features ``C`` of the input.
        ndim: spatial axes: 1 (sequences), 2 (images), 3 (video ``(B, C, T, H, W)``).
        d_state: real state size ``N`` of each 1D SSM (``N // 2`` complex modes).
        kernel: ``"s4d"`` (diagonal) or ``"s4"`` (diagonal plus low rank).
        bidirectional: kernels extend both ways from the origin (a causal and an anti-causal SSM
            per axis); ``False`` gives a kernel causal along every axis.
        channels: SSM kernels per feature, mixed by ``out_proj`` (``1`` with ``out_proj=None``).
        rank: outer products summed in each N-d kernel.
        l_max: reference grid (an int or one per axis, or a view of a model's grid); ``None``:
            the first input size seen in training. Stored in the state dict when owned.
        bandlimit: keep only SSM modes below ``bandlimit / 2`` cycles per reference sample
            (and below the Nyquist frequency of the input); S4ND used 0.2 for resolution changes.
        activation: ``"gelu"``, ``"silu"``, ``"relu"``, ``"tanh"`` or ``None``.
        out_proj: ``"glu"`` (pointwise to ``2 out_dim`` then GLU), ``"linear"`` or ``None``.
        out_dim: output features (default ``dim``; another value needs an ``out_proj``).
        dropout: dropout after the activation.
        stride: average-pool the output by ``stride`` per axis (an int or one per axis), jointly
            with the convolution: the full-resolution output is never formed.
        conv_path: ``"auto"`` or a :func:`s4vision.ops.separable_conv_nd` path.
        device, dtype: where and in which dtype to create the parameters.
        **kernel_kwargs: for the kernel generators: ``init``, ``disc`` (``"zoh"``, the default
            here: it samples the continuous kernel exactly, or ``"bilinear"``), ``dt_min``,
            ``dt_max`` (initial step range per reference sample), ``lr`` (an optimiser hint for
            the SSM parameters), and for ``kernel="s4"`` ``dplr_rank`` and ``method``.

    ``forward(x, rate=None, in_proj=None)``: ``rate`` (a number or one per axis) overrides the
    derived ``ref_i / S_i``: the SSM step along axis ``i`` is ``dt * rate_i``. ``in_proj``
    ``(weight, bias)`` is a pointwise projection ``I -> dim`` to apply to ``x (B, I, *S)`` first
    (``weight (dim, I)`` or a convolution's ``(dim, I, 1, ...)``, ``bias (dim,)`` or ``None``):
    the same as ``layer(pointwise_conv(x, weight, bias))``, but with a ``stride`` the projected
    input is never formed whole in CPU inference and the skip term pools the ``I`` channels
    before projecting (:func:`~s4vision.ops.toeplitz_conv_nd`): the S4ND stem projects a
    3-channel image to 32 channels at full resolution.
    """

    def __init__(
        self,
        dim: int,
        ndim: int = 2,
        d_state: int = 64,
        kernel: str = "s4d",
        *,
        bidirectional: bool = True,
        channels: int = 1,
        rank: int = 1,
        l_max: GridArg = None,
        bandlimit: Optional[float] = None,
        activation: Optional[str] = "gelu",
        out_proj: Optional[str] = "glu",
        out_dim: Optional[int] = None,
        dropout: float = 0.0,
        stride: Optional[Union[int, Sequence[int]]] = None,
        conv_path: str = "auto",
        device=None,
        dtype=None,
        **kernel_kwargs: Any,
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_ndim(ndim)
        check_choice("SSM kernel", kernel, KERNELS)
        check_positive_int("channels", channels)
        check_positive_int("rank", rank)
        check_choice("conv_path", conv_path, SEPARABLE_PATHS)
        out_dim = dim if out_dim is None else check_positive_int("out_dim", out_dim)
        if out_proj is None and channels != 1:
            raise InvalidValueError(f"out_proj=None keeps one kernel per feature; got channels={channels}")
        kernel_kwargs.setdefault("disc", "zoh")
        self.dim, self.ndim, self.d_state, self.out_dim = dim, ndim, d_state, out_dim
        self.kernel_name, self.channels, self.rank = kernel, channels, rank
        self.bidirectional, self.bandlimit, self.conv_path = bidirectional, bandlimit, conv_path
        self.stride = None if stride is None else check_sizes("stride", stride, ndim)
        dd = dict(device=device, dtype=dtype)
        halves = 2 if bidirectional else 1
        # Generator channels are ordered (half, rank, channel): see :meth:`kernel_factors`.
        self.ssm = nn.ModuleList(
            ssm_kernel(kernel, dim, d_state, halves * rank * channels, bandlimit=bandlimit, **dd, **kernel_kwargs)
            for _ in range(ndim)
        )
        self.grid = l_max if isinstance(l_max, GridView) else ReferenceGrid(ndim, l_max, device=device)
        self.D = nn.Parameter(torch.randn(channels, dim, **dd))
        self.act = create_activation(activation)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = create_out_proj(out_proj, channels * dim, out_dim, **dd)
        self._linear = activation is None and out_proj is None
        self._cache = EvalKernelCache()

    # -- kernels -----------------------------------------------------------------------------

    def kernel_factors(self, sizes: Sequence[int], rate: Optional[Rate] = None) -> List[torch.Tensor]:
        """Per-axis kernels for an input of spatial size ``sizes``: ``ndim`` tensors
        ``(rank, channels * dim, 2 S_i - 1)``, centred, in fp32 (fp64 for a double layer).
        Kernel ``c * dim + h`` convolves feature ``h``."""
        sizes = check_sizes("sizes", sizes, self.ndim)
        return self._factors(sizes, self.grid.rates(sizes, rate))

    def _factors(self, sizes: Tuple[int, ...], rates: Tuple[float, ...]) -> List[torch.Tensor]:
        """All axes' kernels in one pass (:func:`~s4vision.kernels.ssm.centred_kernels`), cached
        in eval mode until a parameter of the kernel generators changes."""

        def compute() -> List[torch.Tensor]:
            kernels = centred_kernels(self.ssm, sizes, rates, self.bidirectional)  # (rank * channels, dim, 2L - 1)
            return [k.reshape(self.rank, self.channels * self.dim, -1) for k in kernels]

        return self._cache(self.ssm, ("factors", sizes, rates), compute)

    def train(self, mode: bool = True) -> "S4ND":
        if mode:  # free the eval-mode kernels; (re)entering eval keeps them (they are still valid)
            self._cache.clear()
        return super().train(mode)

    def kernel(self, sizes: Sequence[int], rate: Optional[Rate] = None) -> torch.Tensor:
        """Dense N-d kernel ``(channels * dim, 2 S_1 - 1, ..., 2 S_N - 1)``: the sum over
        ``rank`` of the outer products of :meth:`kernel_factors`."""
        return separable_kernel(self.kernel_factors(sizes, rate))

    # -- forward -----------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, rate: Optional[Rate] = None,
                in_proj: Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]] = None) -> torch.Tensor:
        """``x (B, dim, *S) -> (B, out_dim, *S)`` (``*S // stride`` with a ``stride``; ``x (B, I, *S)``
        with ``in_proj``)."""
        if in_proj is not None:
            weight, bias = in_proj
            check_channels_first(x, weight.shape[1], self.ndim)
            if weight.shape[0] != self.dim or weight[0].numel() != weight.shape[1] or (
                    bias is not None and tuple(bias.shape) != (self.dim,)):
                raise InvalidValueError(
                    f"in_proj needs a weight (dim={self.dim}, I) (or (dim, I, 1, ...)) and a bias ({self.dim},) or "
                    f"None, got {tuple(weight.shape)} and {None if bias is None else tuple(bias.shape)}")
            if self.stride is None:  # nothing to fuse: project, then the plain layer
                x, in_proj = pointwise_conv(x, weight, bias), None
            elif self.channels > 1:  # the rows of _per_kernel's copies
                in_proj = (weight.reshape(self.dim, -1).repeat(self.channels, 1),
                           None if bias is None else bias.repeat(self.channels))
        if in_proj is None:
            check_channels_first(x, self.dim, self.ndim)
        sizes = tuple(x.shape[2:])
        if self.stride is not None and any(s < k for s, k in zip(sizes, self.stride)):
            raise InvalidValueError(f"input of spatial size {sizes} is smaller than the pooling stride {self.stride}")
        self.grid.observe(sizes)
        rates = self.grid.rates(sizes, rate)
        if self.stride is not None:  # the skip is average-pooled too, inside the convolve-and-pool product
            u = x if in_proj is not None else self._per_kernel(x)
            y = toeplitz_conv_nd(u, self._matrices(sizes, rates), skip=(self.D.reshape(-1), self.stride), in_proj=in_proj)
        else:
            u = self._per_kernel(x)
            if self._toeplitz(sizes):
                y = toeplitz_conv_nd(u, self._matrices(sizes, rates))
            else:
                y = separable_conv_nd(u, self._factors(sizes, rates), path=self.conv_path)
            skip = self._skip_weight(y.dtype)
            # in place without autograd: one full-size buffer fewer per call
            y = torch.addcmul(y, skip, u) if torch.is_grad_enabled() else y.addcmul_(skip, u)
        return self._mix(y, x.dtype)

    def _toeplitz(self, sizes: Tuple[int, ...]) -> bool:
        """Whether the convolution runs as Toeplitz products on every axis (chosen or forced)."""
        if self.conv_path != "auto":
            return self.conv_path == "toeplitz"
        if torch.compiler.is_compiling():  # dynamo warns about (and skips) the memo: trace the choice itself
            return _toeplitz_chosen.__wrapped__(sizes, self.rank)
        return _toeplitz_chosen(sizes, self.rank)

    def _matrices(self, sizes: Tuple[int, ...], rates: Tuple[float, ...]) -> List[torch.Tensor]:
        """Per axis, the ``(rank, channels * dim, S // stride, S)`` convolve(-and-pool) matrices
        (cached in eval mode until a parameter changes)."""
        stride = self.stride or (1,) * self.ndim
        return self._cache(
            self.ssm, ("matrices", sizes, rates),
            lambda: [toeplitz_matrix(k, L, s) for k, L, s in zip(self._factors(sizes, rates), sizes, stride)],
        )

    def _per_kernel(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, dim, *S) -> (B, channels * dim, *S)``: each feature once per kernel."""
        if self.channels == 1:
            return x
        return x.unsqueeze(1).expand(x.shape[0], self.channels, *x.shape[1:]).flatten(1, 2)

    def _skip_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return self.D.reshape(-1, *(1,) * self.ndim).to(dtype)

    def _mix(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Activation, dropout and output projection: ``(B, channels * dim, *S) -> (B, out_dim, *S)``."""
        if self._linear and (self.dropout.p == 0 or not self.training):  # a ConvNeXt mixer: nothing to call
            return y.to(dtype)
        return self.out_proj(self.dropout(self.act(y)).to(dtype))

    # -- checkpoints -------------------------------------------------------------------------

    @staticmethod
    def inflated_key(key: str, new_axes: int = 1) -> str:
        """The name of a parameter of this layer (``key`` relative to it) in a layer with
        ``new_axes`` more leading axes (2D -> 3D: ``ssm.{i}`` becomes ``ssm.{i + 1}``).
        The new axes' generators ``ssm.0 ... ssm.{new_axes - 1}`` have no source."""
        if key.startswith("ssm."):
            axis, rest = key[len("ssm."):].split(".", 1)
            return f"ssm.{int(axis) + new_axes}.{rest}"
        return key

    def extra_repr(self) -> str:
        s = (f"dim={self.dim}, ndim={self.ndim}, d_state={self.d_state}, kernel={self.kernel_name!r}, "
             f"bidirectional={self.bidirectional}, channels={self.channels}, rank={self.rank}")
        if self.bandlimit is not None:
            s += f", bandlimit={self.bandlimit}"
        if self.out_dim != self.dim:
            s += f", out_dim={self.out_dim}"
        return s + (f", stride={self.stride}" if self.stride is not None else "")


@functools.lru_cache(maxsize=256)
def _toeplitz_chosen(sizes: Tuple[int, ...], rank: int) -> bool:
    """Whether :func:`choose_separable_path` picks Toeplitz products on every axis for a kernel
    spanning the input (memoised: it runs on every call of every layer)."""
    return choose_separable_path(sizes, [2 * s - 1 for s in sizes], rank) == ("toeplitz",) * len(sizes)
