"""Depthwise N-d convolution with a separable kernel, one axis at a time.

A separable kernel is a sum of ``R`` outer products of per-axis 1D kernels,
``k[c, x_1, ..., x_N] = sum_r k_1[r, c, x_1] * ... * k_N[r, c, x_N]`` (S4ND kernels have this
form, with ``R`` its ``rank``). Instead of one zero-padded N-d FFT, the convolution can run
as ``R`` passes of ``N`` successive 1D convolutions, each along one axis, by either

* ``"toeplitz"``: the axis as a per-channel ``(L, L)`` Toeplitz matrix applied with a batched
  matmul. ``L`` multiply-adds per output sample, but at GEMM speed: the fastest path for the
  short axes of vision feature maps (on CPU up to ~500 samples).
* ``"fft"``: a 1D zero-padded FFT convolution along the axis, ``O(log L)`` per sample.

or as ``"fft_nd"``: one N-d FFT whose kernel spectrum is built from the per-axis spectra
(cost independent of ``R``). :func:`choose_separable_path` picks per shape with a small cost
model. Every path computes the same zero-padded linear convolution as
:func:`s4vision.ops.fft_conv_nd` on :func:`separable_kernel`; all run in fp32 (fp64 for fp64
inputs) even under autocast.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch

from .._amp import autocast_off
from .._checks import check_positive_int, is_tracked
from .fftconv import next_fast_len
from .pointwise import pointwise_conv
from ..errors import InvalidTypeError, InvalidValueError

__all__ = [
    "SEPARABLE_PATHS",
    "separable_kernel",
    "toeplitz_matrix",
    "toeplitz_conv_nd",
    "conv_along_axis",
    "choose_separable_path",
    "separable_conv_nd",
]

SEPARABLE_PATHS = ("auto", "toeplitz", "fft", "fft_nd")
_AXIS_METHODS = ("toeplitz", "fft")

# Cost model per output sample, in units of one Toeplitz tap (a GEMM multiply-add), forward +
# backward. Measured on the 2-core development CPU (torch 2.x, pocketfft, fp32): a Toeplitz pass
# costs ~L units; a 1D FFT pass costs about the same at any length, ~600 units along the last
# axis and ~1.7x that along a strided one (the crossover is L ~ 500); the N-d FFT costs ~1200
# units per sample of its zero-padded volume.
_FFT_AXIS_COST = 600.0
_FFT_STRIDED_FACTOR = 1.7
_FFT_ND_COST = 1200.0
# Extra cost of each additional rank of the kernel (expanding the input, reducing the output).
_RANK_OVERHEAD = 4.0
# Without autograd, Toeplitz passes over axes at least this long run per sample without layout
# copies; shorter ones (and all with autograd) as C larger GEMMs on a transposed copy (measured on
# the development CPU, S4ND-ConvNeXt mixers, batch 1 to 32: per sample 1.1-1.5x faster at 14
# samples, 1.1-3.5x slower at 7).
_PER_SAMPLE_MIN_LENGTH = 12

PathSpec = Union[str, Tuple[str, ...]]


def _as_rank3(kernels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(kernels, torch.Tensor) or not len(kernels):
        raise InvalidTypeError("kernels must be a non-empty sequence of per-axis kernel tensors")
    out = []
    for a, k in enumerate(kernels):
        if not isinstance(k, torch.Tensor):
            raise InvalidTypeError(f"kernels[{a}] must be a torch.Tensor, got {type(k).__name__}")
        if k.is_complex():
            raise InvalidTypeError(f"kernels[{a}] must be real, got dtype {k.dtype}")
        if k.ndim == 2:
            k = k.unsqueeze(0)
        if k.ndim != 3:
            raise InvalidValueError(f"kernels[{a}] must be (C, K) or (R, C, K), got shape {tuple(k.shape)}")
        if k.shape[-1] % 2 == 0:
            raise InvalidValueError(f"kernels[{a}] needs an odd length, got K={k.shape[-1]}")
        out.append(k)
    ranks = {k.shape[0] for k in out}
    chans = {k.shape[1] for k in out}
    if len(ranks) != 1 or len(chans) != 1:
        raise InvalidValueError(
            f"per-axis kernels disagree on (R, C): {[tuple(k.shape[:2]) for k in out]}"
        )
    return out


def separable_kernel(kernels: Sequence[torch.Tensor]) -> torch.Tensor:
    """Dense N-d kernel ``(C, K_1, ..., K_N)`` from per-axis factors.

    Args:
        kernels: ``N`` tensors, each ``(C, K_a)`` (one outer product) or ``(R, C, K_a)`` (a sum
            of ``R`` outer products).
    """
    ks = _as_rank3(kernels)
    nd = len(ks)
    dense = None
    for a, k in enumerate(ks):
        shape = [k.shape[0], k.shape[1]] + [1] * nd
        shape[2 + a] = k.shape[-1]
        factor = k.reshape(shape)
        dense = factor if dense is None else dense * factor
    return dense.sum(0)


def _fit_kernel(k: torch.Tensor, length: int) -> torch.Tensor:
    """Crop a centred odd kernel to at most ``2 * length - 1`` taps (the rest never meets the input)."""
    K = k.shape[-1]
    full = 2 * length - 1
    if K <= full:
        return k
    start = (K - full) // 2
    return k[..., start:start + full]


def _flush_negligible_taps(k: torch.Tensor) -> torch.Tensor:
    """``k (..., K)`` with the taps below ``eps**2 * max|k|`` along the last axis set to zero.

    ``eps`` is the machine epsilon of fp32 (of fp64 for a double kernel): in any product sum the
    taps take part in, the flushed ones change the result by at most ``K * eps**2`` relative to
    the largest tap's term, well under one rounding step. What it buys is speed: an SSM kernel
    decays exponentially, and taps near or below the smallest normal float (and their products
    with the input) are subnormal numbers, which CPUs process 10-100x slower. Differentiable
    (no gradient reaches a flushed tap).
    """
    size = k.detach().abs()
    eps = torch.finfo(torch.promote_types(k.dtype, torch.float32)).eps
    return k.masked_fill(size < (eps * eps) * size.amax(-1, keepdim=True), 0)


def toeplitz_matrix(k: torch.Tensor, length: int, stride: int = 1) -> torch.Tensor:
    """Matrix of a centred 1D convolution on ``length`` samples, optionally average-pooled.

    Args:
        k: ``(..., K)`` centred kernel, ``K`` odd (any size; taps beyond ``length - 1`` from the
            centre are dropped).
        length: number of samples ``L``.
        stride: average the output over windows of ``stride`` samples (a trailing partial
            window is dropped, as ``avg_pool`` does).

    Returns:
        ``(..., L // stride, L)``; with ``stride=1``, ``T[..., i, j] = k[..., i - j + K // 2]``
        (zero outside the kernel), so ``T @ u`` is the zero-padded convolution of ``u``. A
        pooled matrix convolves and pools in one product, never forming the full output.

    Taps smaller than ``eps**2`` times the largest tap of their kernel (``eps`` of fp32, or of
    fp64 for a double kernel) are set to zero: far below what the
    products' sums can resolve, and the decaying tails of SSM kernels would otherwise put
    subnormal numbers into the GEMMs (and their backward), which CPUs run many times slower.
    """
    if k.shape[-1] % 2 == 0:
        raise InvalidValueError(f"toeplitz_matrix needs an odd kernel length, got K={k.shape[-1]}")
    check_positive_int("toeplitz_matrix length", length)
    check_positive_int("toeplitz_matrix stride", stride)
    if stride > length:
        raise InvalidValueError(f"toeplitz_matrix stride {stride} exceeds the length {length}")
    k = _flush_negligible_taps(_fit_kernel(k, length))
    pad = (2 * length - 1 - k.shape[-1]) // 2
    if pad:
        k = torch.nn.functional.pad(k, (pad, pad))
    # Row i holds k[L-1+i-j] for j = 0..L-1: a sliding window of the padded kernel, reversed.
    if stride == 1:
        return k.unfold(-1, length, 1).flip(-1)
    # Pooled row i is the mean of rows s*i .. s*i+s-1: the same window of the kernel box-filtered
    # over s taps, taken every s taps (only the L // s rows that remain are ever formed).
    box = k.unfold(-1, stride, 1).mean(-1)
    return box.unfold(-1, length, stride).flip(-1)


def _matmul_along(u: torch.Tensor, t: torch.Tensor, dim: int) -> torch.Tensor:
    """Apply a per-channel matrix ``t (C, M, L)`` along axis ``dim`` of ``u (B, C, *S)``
    (``S[dim] == L``): ``(B, C, *S)`` with that axis resized to ``M``."""
    B, C = u.shape[:2]
    L, M = u.shape[dim], t.shape[-2]
    p = math.prod(u.shape[2:dim])
    q = math.prod(u.shape[dim + 1:])
    if (q == 1 or p == 1) and B > 1 and not is_tracked(u, t):
        return _matmul_along_per_sample(u, t, dim, p, q)
    if q == 1:  # last axis: rows of u times T^T
        y = u.reshape(B, C, p, L) @ t.transpose(-1, -2)
    elif p == 1:  # first axis: T times the (L, q) slab
        y = t @ u.reshape(B, C, L, q)
    else:
        y = t.unsqueeze(1) @ u.reshape(B, C, p, L, q)
    return y.reshape(*u.shape[:dim], M, *u.shape[dim + 1:])


def _matmul_along_per_sample(u: torch.Tensor, t: torch.Tensor, dim: int, p: int, q: int) -> torch.Tensor:
    """:func:`_matmul_along` for the first or last axis without autograd: one batched matmul of
    ``C`` GEMMs per sample, written in place. ``matmul`` would broadcast ``t`` over the batch by
    copying it once per sample (as large as the activation itself for square feature maps)."""
    B, C, L, M = u.shape[0], u.shape[1], u.shape[dim], t.shape[-2]
    y = u.new_empty(*u.shape[:dim], M, *u.shape[dim + 1:], dtype=torch.promote_types(u.dtype, t.dtype))
    if q == 1:
        rows, t_right = u.reshape(B, C, p, L), t.transpose(-1, -2)
        out = y.view(B, C, p, M)
        for b in range(B):
            torch.bmm(rows[b], t_right, out=out[b])
    else:
        cols = u.reshape(B, C, L, q)
        out = y.view(B, C, M, q)
        for b in range(B):
            torch.bmm(t, cols[b], out=out[b])
    return y


def _toeplitz_along(u: torch.Tensor, k: torch.Tensor, dim: int) -> torch.Tensor:
    return _matmul_along(u, toeplitz_matrix(k, u.shape[dim]), dim)


def toeplitz_conv_nd(
    u: torch.Tensor,
    matrices: Sequence[torch.Tensor],
    skip: Optional[Tuple[torch.Tensor, Sequence[int]]] = None,
    in_proj: Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]] = None,
) -> torch.Tensor:
    """Apply per-axis matrices to ``u (B, C, *S)``: ``sum_r T_1[r] x_1 ... x_N T_N[r] u``.

    Args:
        u: ``(B, C, *S)``, or ``(B, I, *S)`` with ``in_proj``.
        matrices: ``N`` tensors ``(R, C, M_a, S_a)`` (e.g. :func:`toeplitz_matrix` of each
            axis kernel, pooled or not), the same ``R`` for every axis.
        skip: ``(weight (C,), stride)``: also add ``weight[c] * avg_pool(u, stride)`` (trailing
            partial windows dropped, so ``M_a = S_a // stride_a``). The leading axes are summed
            over their windows, the last axis' pooling is one more (small) matrix product; both
            cost less than ``avg_pool`` on the full input.
        in_proj: ``(weight (C, I), bias (C,) or None)``: the matrices (and the skip) apply to the
            pointwise projection ``weight @ u + bias`` of ``u``, the same as
            ``toeplitz_conv_nd(pointwise_conv(u, weight, bias), ...)``. The skip pools the ``I``
            input channels before projecting (by linearity); in CPU inference the projection,
            the largest tensor when ``C > I`` at full resolution, is formed a few channels of
            one sample at a time and used while it is in cache.

    Returns:
        ``(B, C, M_1, ..., M_N)`` in the matrices' dtype (fp32 even under autocast).
    """
    if len(matrices) != u.ndim - 2:
        raise InvalidValueError(f"{len(matrices)} per-axis matrices for an input of shape {tuple(u.shape)}")
    dtype = matrices[0].dtype
    with autocast_off(u.device):
        u = u.to(dtype)
        weight = bias = None
        if in_proj is not None:
            weight, bias = in_proj
            weight = weight.reshape(weight.shape[0], -1).to(dtype)
            bias = None if bias is None else bias.to(dtype)
            if weight.shape[1] != u.shape[1]:
                raise InvalidValueError(f"in_proj weight {tuple(weight.shape)} for an input of {u.shape[1]} channels")
        if weight is not None and _project_in_groups(u, weight, bias, matrices):
            y = _grouped_products(u, weight, bias, matrices)
        else:
            v = u if weight is None else pointwise_conv(u, weight, bias)
            y = None
            for r in range(matrices[0].shape[0]):
                z = _toeplitz_products(v, [t[r] for t in matrices])
                y = z if y is None else y + z
        if skip is not None:
            skip_weight, stride = skip
            pooled = _avg_pool(u, stride)
            if weight is not None:
                pooled = pointwise_conv(pooled, weight, bias)
            y = torch.addcmul(y, pooled, skip_weight.to(dtype).reshape(-1, *(1,) * (u.ndim - 2)))
    return y


def _avg_pool(u: torch.Tensor, stride: Sequence[int]) -> torch.Tensor:
    """Window means of ``u (B, C, *S)`` over ``stride`` (trailing partial windows dropped): the
    leading axes summed over their windows, the last axis' means one GEMM with a matrix shared by
    every channel (no per-channel copy), cheaper than ``avg_pool`` on channels-first CPU tensors."""
    for a, k in enumerate(stride[:-1]):
        u = _window_sum(u, 2 + a, k)
    S, k = u.shape[-1], stride[-1]
    windows = torch.arange(S, device=u.device) // k == torch.arange(S // k, device=u.device).unsqueeze(-1)
    pool = windows.to(u.dtype) / math.prod(stride)  # (S // k, S): the mean over every window
    return u @ pool.transpose(0, 1)


# Most bytes of the projected input formed at once by :func:`_grouped_products` (per sample; the
# channels are split into equal groups under it). S4ND stem, 32 channels at 224 px (6.4 MB per
# image), one and two threads: groups of 16 fastest, whole images 2-5 % slower and groups of 4-5
# (L2-sized) 10-25 % slower.
_GROUP_BYTES = 4 << 20


def _project_in_groups(u: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                       matrices: Sequence[torch.Tensor]) -> bool:
    """Whether the projection is formed in channel groups: CPU inference, and a projected sample
    larger than one group."""
    if u.device.type != "cpu" or is_tracked(u, weight, bias, *matrices):
        return False
    return weight.shape[0] * math.prod(u.shape[2:]) * u.element_size() > _GROUP_BYTES


def _grouped_products(u: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                      matrices: Sequence[torch.Tensor]) -> torch.Tensor:
    """The products of ``weight @ u + bias`` formed a group of channels of one sample at a time:
    ``(B, I, *S) -> (B, C, *M)``, without autograd."""
    B, S = u.shape[0], u.shape[2:]
    C = weight.shape[0]
    groups = -(-C * math.prod(S) * u.element_size() // _GROUP_BYTES)
    group = -(-C // groups)
    y = u.new_empty(B, C, *(t.shape[-2] for t in matrices))
    if bias is not None:  # the bias as one more input channel of ones: no extra pass over the projection
        weight = torch.cat([weight, bias.unsqueeze(-1)], dim=1)
    projected = u.new_empty(min(group, C), math.prod(S))  # reused by every group
    for b in range(B):
        inputs = u[b].reshape(u.shape[1], -1)
        if bias is not None:
            inputs = torch.cat([inputs, inputs.new_ones(1, inputs.shape[1])])
        for c in range(0, C, group):
            rows = slice(c, min(c + group, C))
            v = torch.mm(weight[rows], inputs, out=projected[: rows.stop - c]).view(1, -1, *S)
            for r in range(matrices[0].shape[0]):
                z = _toeplitz_products(v, [t[r, rows] for t in matrices])
                if r == 0:
                    y[b, rows] = z[0]
                else:
                    y[b, rows] += z[0]
    return y


def _window_sum(x: torch.Tensor, axis: int, k: int) -> torch.Tensor:
    """Sums over windows of ``k`` samples along ``axis`` (a trailing partial window dropped)."""
    if k == 1:
        return x
    n = x.shape[axis] // k
    x = x.narrow(axis, 0, n * k)
    if k == 2:  # even plus odd samples: 3-6x faster than a reduction over a middle axis of 2
        lead = (slice(None),) * axis
        return x[lead + (slice(0, None, 2),)] + x[lead + (slice(1, None, 2),)]
    return x.unflatten(axis, (n, k)).sum(axis + 1)


def _toeplitz_products(u: torch.Tensor, matrices: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-channel matrices ``(C, M_a, S_a)`` applied along every spatial axis of ``u (B, C, *S)``.

    Without autograd, axes of ``_PER_SAMPLE_MIN_LENGTH`` samples or more: per sample, one batched
    matmul of ``C`` GEMMs per axis, read and written in place (no layout copies; the output is
    contiguous). Otherwise a channels-first view ``(C, B, *S)`` so that each axis is one batched
    matmul of ``C`` GEMMs ``(rows, L) @ (L, M)``, at the price of a copy per axis (the axis is
    moved last, every other index becomes a row). With autograd the channels-first form is the
    faster at every size measured (1.2-2.9x, forward + backward, 14 to 56 samples: its backward is
    ``C`` larger GEMMs too); without, the in-place one (1.1-1.6x at 14 to 56 samples).
    """
    if not is_tracked(u, *matrices) and min(u.shape[2:]) >= _PER_SAMPLE_MIN_LENGTH:
        for a, t in enumerate(matrices):
            u = _matmul_along(u, t, 2 + a)
        return u
    C = u.shape[1]
    x = u.transpose(0, 1)
    for a in reversed(range(len(matrices))):
        d = 2 + a
        xa = x.movedim(d, -1)
        y = xa.reshape(C, -1, xa.shape[-1]) @ matrices[a].transpose(-1, -2)
        x = y.view(*xa.shape[:-1], y.shape[-1]).movedim(-1, d)
    return x.transpose(0, 1)


def _fft_along(u: torch.Tensor, k: torch.Tensor, dim: int) -> torch.Tensor:
    L = u.shape[dim]
    k = _fit_kernel(k, L)
    K = k.shape[-1]
    n = next_fast_len(L + K - 1)
    u_f = torch.fft.rfft(u, n=n, dim=dim)
    k_f = torch.fft.rfft(k, n=n, dim=-1)  # (C, F)
    k_f = k_f.reshape(k_f.shape[:1] + (1,) * (dim - 2) + k_f.shape[1:] + (1,) * (u.ndim - 1 - dim))
    y = torch.fft.irfft(u_f * k_f, n=n, dim=dim)
    return y.narrow(dim, K // 2, L)


def _fft_nd(u: torch.Tensor, kernels: list[torch.Tensor]) -> torch.Tensor:
    nd = len(kernels)
    sizes = u.shape[2:]
    kernels = [_fit_kernel(k, L) for k, L in zip(kernels, sizes)]
    ns = [next_fast_len(L + k.shape[-1] - 1) for L, k in zip(sizes, kernels)]
    spectrum = None
    for a, (k, n) in enumerate(zip(kernels, ns)):
        f = torch.fft.rfft(k, n=n) if a == nd - 1 else torch.fft.fft(k, n=n)  # (R, C, F_a)
        shape = [f.shape[0], f.shape[1]] + [1] * nd
        shape[2 + a] = f.shape[-1]
        f = f.reshape(shape)
        spectrum = f if spectrum is None else spectrum * f
    spectrum = spectrum.sum(0)
    dims = tuple(range(-nd, 0))
    y = torch.fft.irfftn(torch.fft.rfftn(u, s=ns, dim=dims) * spectrum, s=ns, dim=dims)
    index = [slice(None), slice(None)] + [slice(k.shape[-1] // 2, k.shape[-1] // 2 + L) for k, L in zip(kernels, sizes)]
    return y[tuple(index)]


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def conv_along_axis(u: torch.Tensor, k: torch.Tensor, dim: int, method: str = "toeplitz") -> torch.Tensor:
    """Depthwise centred 1D convolution along one spatial axis of ``u``.

    Args:
        u: ``(B, C, *S)``.
        k: ``(C, K)`` centred kernel, ``K`` odd, any size.
        dim: the spatial axis of ``u`` (``2 <= dim < u.ndim``, or negative).
        method: ``"toeplitz"`` or ``"fft"``.

    Returns:
        ``(B, C, *S)`` in the promoted dtype of ``u`` and ``k``.
    """
    if method not in _AXIS_METHODS:
        raise InvalidValueError(f"method must be one of {_AXIS_METHODS}, got {method!r}")
    if u.ndim < 3:
        raise InvalidValueError(f"conv_along_axis expects u of shape (B, C, *S), got {tuple(u.shape)}")
    d = dim + u.ndim if dim < 0 else dim
    if not 2 <= d < u.ndim:
        raise InvalidValueError(f"dim must name a spatial axis of u with shape {tuple(u.shape)}, got {dim}")
    (k,) = _as_rank3([k])
    if k.shape[0] != 1:
        raise InvalidValueError(f"conv_along_axis takes a (C, K) kernel, got {tuple(k.shape)}")
    if k.shape[1] != u.shape[1]:
        raise InvalidValueError(f"conv_along_axis: k has {k.shape[1]} channels but u has {u.shape[1]}")
    out_dtype = torch.promote_types(u.dtype, k.dtype)
    dtype = _compute_dtype(u, k)
    with autocast_off(u.device):
        step = _toeplitz_along if method == "toeplitz" else _fft_along
        return step(u.to(dtype), k[0].to(dtype), d).to(out_dtype)


def _axis_costs(L: int, K: int, last: bool) -> dict[str, float]:
    """Cost per output sample of one 1D pass along an axis of ``L`` samples."""
    del K  # a Toeplitz pass costs L whatever the kernel; the FFT cost barely depends on length
    fft = _FFT_AXIS_COST * (1.0 if last else _FFT_STRIDED_FACTOR)
    return {"toeplitz": float(L), "fft": fft}


def choose_separable_path(sizes: Sequence[int], ksizes: Sequence[int], rank: int = 1) -> PathSpec:
    """Pick the cheapest way to convolve inputs of spatial size ``sizes`` with a separable kernel.

    Args:
        sizes: spatial sizes ``S``.
        ksizes: per-axis kernel sizes ``K``.
        rank: number ``R`` of outer products summed in the kernel.

    Returns:
        ``"fft_nd"``, or a tuple giving ``"toeplitz"`` or ``"fft"`` for each axis.
    """
    sizes, ksizes = tuple(sizes), tuple(ksizes)
    if len(sizes) != len(ksizes) or not sizes:
        raise InvalidValueError(f"sizes {sizes} and ksizes {ksizes} must be non-empty and of equal length")
    nd = len(sizes)
    per_axis = [_axis_costs(L, K, a == nd - 1) for a, (L, K) in enumerate(zip(sizes, ksizes))]
    methods = tuple(min(c, key=c.get) for c in per_axis)
    separable = rank * sum(c[m] for c, m in zip(per_axis, methods)) + (rank - 1) * _RANK_OVERHEAD
    ns = [next_fast_len(L + min(K, 2 * L - 1) - 1) for L, K in zip(sizes, ksizes)]
    fft_nd = _FFT_ND_COST * math.prod(ns) / math.prod(sizes)
    return "fft_nd" if fft_nd < separable else methods


def separable_conv_nd(u: torch.Tensor, kernels: Sequence[torch.Tensor], path: PathSpec = "auto") -> torch.Tensor:
    """Depthwise centred N-d convolution with a separable kernel (N = 1, 2 or 3).

    Args:
        u: ``(B, C, *S)``.
        kernels: ``N`` per-axis factors, each ``(C, K_a)`` or ``(R, C, K_a)`` with odd ``K_a``
            (any size, may exceed ``S_a``); the kernel is their sum of outer products,
            :func:`separable_kernel`.
        path: ``"auto"`` (:func:`choose_separable_path`), ``"toeplitz"``, ``"fft"``,
            ``"fft_nd"``, or a tuple of ``"toeplitz"``/``"fft"``, one per axis.

    Returns:
        ``(B, C, *S)``, equal to ``fft_conv_nd(u, separable_kernel(kernels))``.
    """
    if not isinstance(u, torch.Tensor):
        raise InvalidTypeError(f"u must be a torch.Tensor, got {type(u).__name__}")
    ks = _as_rank3(kernels)
    nd = len(ks)
    if nd not in (1, 2, 3):
        raise InvalidValueError(f"separable_conv_nd supports 1 to 3 axes, got {nd} kernels")
    if u.ndim != nd + 2:
        raise InvalidValueError(f"{nd} per-axis kernels need u of shape (B, C, *S) with rank {nd + 2}, got {tuple(u.shape)}")
    R, C = ks[0].shape[:2]
    if u.shape[1] != C:
        raise InvalidValueError(f"separable_conv_nd: kernels have {C} channels but u has {u.shape[1]}")
    if min(u.shape[2:]) == 0:
        raise InvalidValueError(f"separable_conv_nd needs non-empty inputs, got {tuple(u.shape)}")
    if path == "auto":
        path = choose_separable_path(u.shape[2:], [k.shape[-1] for k in ks], R)
    elif isinstance(path, str):
        if path not in SEPARABLE_PATHS:
            raise InvalidValueError(f"path must be one of {SEPARABLE_PATHS} or a per-axis tuple, got {path!r}")
        if path != "fft_nd":
            path = (path,) * nd
    else:
        path = tuple(path)
        if len(path) != nd or any(m not in _AXIS_METHODS for m in path):
            raise InvalidValueError(f"a per-axis path needs {nd} entries from {_AXIS_METHODS}, got {path!r}")

    out_dtype = torch.promote_types(u.dtype, ks[0].dtype)
    dtype = _compute_dtype(u, *ks)
    with autocast_off(u.device):
        u = u.to(dtype)
        ks = [k.to(dtype) for k in ks]
        if path == "fft_nd":
            return _fft_nd(u, ks).to(out_dtype)
        B = u.shape[0]
        S = u.shape[2:]
        if R > 1:  # one pass per rank: fold R into the channels
            u = u.unsqueeze(2).expand(B, C, R, *S).reshape(B, C * R, *S)
            ks = [k.transpose(0, 1).reshape(C * R, -1) for k in ks]
        else:
            ks = [k[0] for k in ks]
        if all(m == "toeplitz" for m in path):
            u = _toeplitz_products(u, [toeplitz_matrix(k, L) for k, L in zip(ks, S)])
        else:
            for a, method in enumerate(path):
                step = _toeplitz_along if method == "toeplitz" else _fft_along
                u = step(u, ks[a], 2 + a)
        if R > 1:
            u = u.reshape(B, C, R, *S).sum(2)
        return u.to(out_dtype)
