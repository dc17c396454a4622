"""Convolutions computed with the FFT.

Both functions compute a *linear* (zero-padded) convolution, never a circular one: the
transform length is at least ``L + Lk - 1`` along every axis, rounded up to a size the FFT
handles quickly. Transforms run in fp32 (or fp64 for fp64 inputs) even under autocast,
because half-precision FFTs lose too much accuracy for long kernels.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch.autograd.function import once_differentiable

from .._amp import autocast_off
from ..errors import InvalidTypeError, InvalidValueError

__all__ = ["fft_conv", "fft_conv_nd", "next_fast_len"]


def next_fast_len(n: int) -> int:
    """Smallest integer >= ``n`` whose only prime factors are 2, 3 and 5."""
    if n <= 0:
        raise InvalidValueError(f"next_fast_len needs a positive size, got {n}")
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


# Odd parts of the transform lengths the convolutions use. On the development CPU (MKL) a
# transform of 2^a, 3 2^a, 5 2^a, 9 2^a or 15 2^a samples costs 1.5-2.3 ns per sample, while
# other 5-smooth lengths with odd parts 25, 27, 45, 125, 243 cost 2.7-3.6 ns: 256 samples
# transform faster than 243 or 250, so "the next 5-smooth length" is not the fastest choice.
_FAST_ODD_PARTS = (1, 3, 5, 9, 15)


def _fft_len(n: int) -> int:
    """Smallest length ``>= n`` of the form ``2^a * r``, ``r`` in ``_FAST_ODD_PARTS`` (at most
    25% above ``n`` for ``n >= 16``)."""
    best = 1 << max(n - 1, 0).bit_length()
    for r in _FAST_ODD_PARTS[1:]:
        m = r
        while m < n:
            m *= 2
        best = min(best, m)
    return best


def _fft_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _check_real(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise InvalidTypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.is_complex():
        raise InvalidTypeError(f"{name} must be real, got dtype {t.dtype}")


def _fft_conv_axes(u: torch.Tensor, k: torch.Tensor, starts: Sequence[int]) -> torch.Tensor:
    """Linear convolution over the trailing ``len(starts)`` axes, cropped to ``u``'s size.

    ``u`` is ``(B, C, *S)``, ``k`` is ``(C, *K)``; output index ``s`` along an axis is the
    full linear convolution at ``s + start``.
    """
    k, plan = _plan(u.shape[-len(starts):], k, starts)
    dtype = _fft_dtype(u, k)
    with autocast_off(u.device):
        return _fft_conv_planned(u.to(dtype), k.to(dtype), plan)


class _Plan:
    """Transform sizes and output offsets of a linear convolution computed by FFT.

    Only the outputs ``start .. start + S - 1`` of the full linear convolution are kept, so a
    transform of ``n >= max(S + K - 1 - start, start + S)`` samples suffices: every sample that
    wraps around lands outside the kept range. Centred kernels (``start = K // 2``) need
    ``n >= S + K // 2``, not ``S + K - 1`` (for a global kernel ``2S - 1`` instead of ``3S - 2``
    per axis). Kernel taps that never meet the input are cropped first.
    """

    def __init__(self, sizes: Sequence[int], ksizes: Sequence[int], starts: Sequence[int]) -> None:
        self.sizes, self.starts = tuple(sizes), tuple(starts)
        self.fft_sizes = [_fft_len(max(S + K - 1 - st, st + S)) for S, K, st in zip(sizes, ksizes, starts)]
        self.dims = tuple(range(-len(sizes), 0))


def _plan(sizes: Sequence[int], k: torch.Tensor, starts: Sequence[int]) -> tuple[torch.Tensor, _Plan]:
    """Crop ``k`` to the taps that meet an input of ``sizes`` (output ``s`` uses taps
    ``s + start - S + 1 .. s + start``) and plan the transforms."""
    nd = len(starts)
    new_starts = []
    for a, (S, st) in enumerate(zip(sizes, starts)):
        axis = k.ndim - nd + a
        lo, hi = max(0, st - S + 1), min(k.shape[axis], st + S)
        if (lo, hi) != (0, k.shape[axis]):
            k = k.narrow(axis, lo, hi - lo)
        new_starts.append(st - lo)
    return k, _Plan(sizes, k.shape[-nd:], new_starts)


# Without autograd, channels are convolved in groups whose spectrum takes about this many bytes.
# Every intermediate then stays small enough for the C allocator to reuse its memory: glibc
# hands blocks above 32 MB back to the system on free, and a new 60 MB spectrum costs more in
# page faults than its FFT (2 x 140 x 224^2 at once: 0.33 s; in groups of 7 channels: 0.13 s).
_CHUNK_BYTES = 4 << 20


def _fft_conv_spectrum(u: torch.Tensor, k_f: torch.Tensor, plan: _Plan) -> torch.Tensor:
    """The planned convolution of ``u (B, C, *S)`` with a kernel given by its spectrum
    ``k_f = rfftn(k, s=plan.fft_sizes)``, ``(C, ...)`` or broadcastable to it, without autograd
    (under autograd: :func:`_fft_conv_planned`), in groups of channels (see ``_CHUNK_BYTES``)."""
    C = u.shape[1]
    per_channel = u.shape[0] * math.prod(plan.fft_sizes[:-1]) * (plan.fft_sizes[-1] // 2 + 1) * k_f.element_size()
    group = max(1, _CHUNK_BYTES // max(per_channel, 1))
    if group >= C or k_f.shape[0] != C:
        return _spectrum_product(u, k_f, plan)
    out = torch.empty(u.shape, dtype=u.dtype, device=u.device)
    for c in range(0, C, group):
        out[:, c:c + group] = _spectrum_product(u[:, c:c + group], k_f[c:c + group], plan)
    return out


def _spectrum_product(u: torch.Tensor, k_f: torch.Tensor, plan: _Plan) -> torch.Tensor:
    """``_fft_conv_spectrum`` in one go (the product formed in place)."""
    u_f = torch.fft.rfftn(u, s=plan.fft_sizes, dim=plan.dims)
    return _cropped_inverse(u_f.mul_(k_f), plan, plan.starts, plan.sizes)


def _cropped_inverse(y_f: torch.Tensor, plan: _Plan, starts: Sequence[int], sizes: Sequence[int]) -> torch.Tensor:
    """Samples ``starts .. starts + sizes - 1`` along each axis of ``irfftn(y_f, s=plan.fft_sizes)``.
    The inverse runs one axis at a time and drops the rows outside the kept range before the
    last (real) axis: 25-30% less work than ``irfftn`` in 2D."""
    for dim, st, S in zip(plan.dims[:-1], starts, sizes):
        y_f = torch.fft.ifft(y_f, dim=dim).narrow(dim, st, S)
    y = torch.fft.irfft(y_f, n=plan.fft_sizes[-1], dim=-1)
    return y.narrow(-1, starts[-1], sizes[-1])


def _fft_conv_planned(u: torch.Tensor, k: torch.Tensor, plan: _Plan) -> torch.Tensor:
    """The planned convolution of ``u (B, C, *S)`` with the real kernel ``k (C, *K)`` (or one
    broadcast over ``C``): under autograd one graph node (:class:`_PlannedConvolution`), else the
    spectrum product in channel groups."""
    if u.numel() == 0:  # an empty batch: MKL's FFT refuses zero-sized transforms
        return u.new_zeros(u.shape, dtype=torch.promote_types(u.dtype, k.dtype))
    if torch.is_grad_enabled() and (u.requires_grad or k.requires_grad):
        return _PlannedConvolution.apply(u, k, plan)
    return _fft_conv_spectrum(u, torch.fft.rfftn(k, s=plan.fft_sizes, dim=plan.dims), plan)


class _PlannedConvolution(torch.autograd.Function):
    """:func:`_fft_conv_planned` with a hand-written backward in the frequency domain.

    The forward keeps outputs ``starts .. starts + S - 1`` of the ``n``-periodic convolution
    ``z = irfftn(U K)`` of the zero-padded input and kernel. Its adjoints are correlations: with
    ``G`` the transform of the output gradient placed at the kept samples,
    ``grad u = irfftn(G conj(K))`` on the input's samples and ``grad k = irfftn(sum_b G conj(U))``
    on the kernel's. One forward transform of the gradient serves both, and nothing is
    zero-filled or copied per intermediate, as autograd does through the crops and the
    half-spectrum transforms (40-50 % of a FlexConv training step's FFT work)."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, k: torch.Tensor, plan: _Plan) -> torch.Tensor:
        k_f = torch.fft.rfftn(k, s=plan.fft_sizes, dim=plan.dims)
        u_f = torch.fft.rfftn(u, s=plan.fft_sizes, dim=plan.dims)
        ctx.save_for_backward(u_f, k_f)
        ctx.plan, ctx.kernel_shape = plan, k.shape
        return _cropped_inverse(u_f * k_f, plan, plan.starts, plan.sizes)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        u_f, k_f = ctx.saved_tensors
        plan, kernel_shape = ctx.plan, ctx.kernel_shape
        nd = len(plan.dims)
        placed = grad.new_zeros(*grad.shape[:-nd], *plan.fft_sizes)
        placed[(..., *(slice(st, st + S) for st, S in zip(plan.starts, plan.sizes)))] = grad
        g_f = torch.fft.rfftn(placed, s=plan.fft_sizes, dim=plan.dims)
        origin = (0,) * nd
        grad_u = grad_k = None
        if ctx.needs_input_grad[0]:
            grad_u = _cropped_inverse(g_f * k_f.conj().resolve_conj(), plan, origin, plan.sizes)
        if ctx.needs_input_grad[1]:  # conj(G) U in place, summed, then conjugated: no conj(U) copy
            correlation = g_f.conj_physical_().mul_(u_f).sum(0).sum_to_size(k_f.shape).conj()
            grad_k = _cropped_inverse(correlation, plan, origin, kernel_shape[-nd:]).sum_to_size(kernel_shape)
        return grad_u, grad_k, None


def fft_conv(u: torch.Tensor, k: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """Depthwise 1D convolution of ``u (B, H, L)`` with ``k (H, Lk)``, returning ``(B, H, L)``.

    ``causal=True``: ``y[t] = sum_j k[j] u[t - j]`` (``k[0]`` multiplies the current sample),
    equal to ``F.conv1d(F.pad(u, (Lk - 1, 0)), k.flip(-1)[:, None], groups=H)``.

    ``causal=False``: ``Lk`` must be odd and the kernel is centred on ``k[Lk // 2]``, equal to
    ``F.conv1d(u, k.flip(-1)[:, None], padding=Lk // 2, groups=H)``. ``Lk`` may exceed ``L``
    (a global kernel).
    """
    _check_real("u", u)
    _check_real("k", k)
    if u.ndim != 3:
        raise InvalidValueError(f"fft_conv expects u of shape (B, H, L), got rank {u.ndim} {tuple(u.shape)}")
    if k.ndim != 2:
        raise InvalidValueError(f"fft_conv expects k of shape (H, Lk), got rank {k.ndim} {tuple(k.shape)}")
    if k.shape[0] != u.shape[1]:
        raise InvalidValueError(f"fft_conv: k has {k.shape[0]} channels but u has {u.shape[1]}")
    if u.shape[-1] == 0 or k.shape[-1] == 0:
        raise InvalidValueError(f"fft_conv needs non-empty sequences, got L={u.shape[-1]}, Lk={k.shape[-1]}")
    out_dtype = torch.promote_types(u.dtype, k.dtype)
    if causal:
        return _fft_conv_axes(u, k, [0]).to(out_dtype)
    if k.shape[-1] % 2 == 0:
        raise InvalidValueError(f"fft_conv(causal=False) needs an odd kernel length, got Lk={k.shape[-1]}")
    return _fft_conv_axes(u, k, [k.shape[-1] // 2]).to(out_dtype)


def fft_conv_nd(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Depthwise centred N-d convolution (N = 1, 2 or 3) by FFT.

    Args:
        u: input ``(B, C, *S)``.
        k: kernel ``(C, *K)`` with odd sizes, centred on ``K_i // 2``; ``K_i`` may exceed ``S_i``.

    Returns:
        ``(B, C, *S)``, equal to ``F.conv{N}d(u, k.flip(spatial)[:, None], padding=[K_i // 2],
        groups=C)``: a zero-padded linear convolution.
    """
    _check_real("u", u)
    _check_real("k", k)
    nd = k.ndim - 1
    if nd not in (1, 2, 3):
        raise InvalidValueError(f"fft_conv_nd expects k of shape (C, *K) with 1 to 3 spatial axes, got {tuple(k.shape)}")
    if u.ndim != nd + 2:
        raise InvalidValueError(
            f"fft_conv_nd: k has {nd} spatial axes so u must be (B, C, *S) of rank {nd + 2}, "
            f"got rank {u.ndim} {tuple(u.shape)}"
        )
    if k.shape[0] != u.shape[1]:
        raise InvalidValueError(f"fft_conv_nd: k has {k.shape[0]} channels but u has {u.shape[1]}")
    even = [s for s in k.shape[1:] if s % 2 == 0]
    if even:
        raise InvalidValueError(f"fft_conv_nd needs odd kernel sizes, got {tuple(k.shape[1:])}")
    if min(u.shape[2:]) == 0:
        raise InvalidValueError(f"fft_conv_nd needs non-empty inputs, got {tuple(u.shape)}")
    out_dtype = torch.promote_types(u.dtype, k.dtype)
    return _fft_conv_axes(u, k, [s // 2 for s in k.shape[1:]]).to(out_dtype)
