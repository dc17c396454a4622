"""Depthwise 1D convolution by FFT with a lean backward, for the S4 layer in training.

``torch.fft`` under autograd keeps the input's spectrum (``n / 2 + 1`` complex values per
feature, twice the input) for the backward; this function keeps only the input itself (which the
layer's skip term keeps anyway) and the kernel's spectrum (no batch axis), and recomputes the
input's spectrum in the backward: one more FFT, half the activation memory of a long sequence.
The transform length is the least a linear convolution needs for the kept outputs (``2L - 1``
for a causal or a centred global kernel), so nothing is spent on padding beyond that.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from .._amp import autocast_off
from ..ops.fftconv import next_fast_len

__all__ = ["fft_conv1d"]


def _transform_length(L: int, K: int, start: int) -> int:
    """Samples of a circular convolution whose outputs ``start .. start + L - 1`` are the linear
    ones (every wrapped term lands outside them, in the forward and in the adjoint)."""
    return next_fast_len(max(L + K - 1 - start, start + L))


class _FFTConv1d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: torch.Tensor, k: torch.Tensor, start: int) -> torch.Tensor:
        L, K = u.shape[-1], k.shape[-1]
        n = _transform_length(L, K, start)
        k_f = torch.fft.rfft(k, n=n)
        y = torch.fft.irfft(torch.fft.rfft(u, n=n) * k_f, n=n)[..., start:start + L]
        ctx.save_for_backward(u, k_f)
        ctx.shape = (n, start, K)
        return y.contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        u, k_f = ctx.saved_tensors
        n, start, K = ctx.shape
        L = u.shape[-1]
        g = grad.new_zeros(*grad.shape[:-1], n)
        g[..., start:start + L] = grad
        g_f = torch.fft.rfft(g)
        del g
        grad_u = grad_k = None
        # in-place products: the backward's peak is two spectra of the batch, not five
        if ctx.needs_input_grad[1]:
            u_f = torch.fft.rfft(u, n=n).conj_physical_().mul_(g_f)
            grad_k = torch.fft.irfft(u_f.sum(0), n=n)[..., :K]  # (C, K)
            del u_f
        if ctx.needs_input_grad[0]:
            grad_u = torch.fft.irfft(g_f.mul_(k_f.conj()), n=n)[..., :L].contiguous()
        return grad_u, grad_k, None


def fft_conv1d(u: torch.Tensor, k: torch.Tensor, start: int) -> torch.Tensor:
    """Depthwise linear convolution ``y[b, c, s] = sum_j k[c, j] u[b, c, s + start - j]`` for
    ``s < L``: ``u (B, C, L)``, ``k (C, K)``, in fp32 (fp64 for fp64 inputs) even under autocast.
    ``start = 0`` with ``K = L`` is a causal kernel, ``start = L - 1`` with ``K = 2L - 1`` a centred
    one. Returns ``(B, C, L)``."""
    dtype = torch.float64 if torch.float64 in (u.dtype, k.dtype) else torch.float32
    if u.numel() == 0:  # an empty batch: MKL's FFT refuses zero-sized transforms
        return u.new_zeros(u.shape, dtype=dtype)
    with autocast_off(u.device):
        return _FFTConv1d.apply(u.to(dtype), k.to(dtype), start)
