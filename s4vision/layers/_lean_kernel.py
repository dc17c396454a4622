"""S4D kernels for training with memory that does not grow with ``L x modes``.

The kernel generators sum their Vandermonde products by materialising the powers ``z^j`` of
every tap and mode (``L x H x 2M`` values) up to a size limit, and keep them for the backward:
at ``L = 4096`` taps, 64 features and 16 modes that is 32 MiB kept and ~100 MiB at the forward's
peak, more than all of a ViS4mer's activations. Here every exponent is split as ``l = i n + j``
with ``n ~ sqrt(L)`` (as :func:`~s4vision.kernels.vandermonde_kernel` does beyond its limit), so
the sum is one batched real matrix product of ``O(H M sqrt(L))`` powers, and autograd keeps
those instead: the same values, far less memory, and no slower (the product costs
``H x 2M x C L`` multiply-adds; the powers it replaces an ``exp``, ``cos`` and ``sin`` each).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .._amp import autocast_off
from ..kernels.ssm import S4DKernel, _centre, _drop_masked_modes, _powers

__all__ = ["lean_causal_kernel", "lean_centred_kernel"]


def _vandermonde(W: torch.Tensor, log_z: torch.Tensor, J: int) -> torch.Tensor:
    """``K[c, h, l] = 2 Re sum_m W[c, h, m] z[h, m]^l`` for ``l < J``: ``(C, H, J)``, with
    ``z^(i n + j) = z^(i n) z^j`` and ``Re(a b) = [Re a, Im a] . [Re b, -Im b]``."""
    C, H, M = W.shape
    n = math.isqrt(max(J - 1, 0)) + 1
    blocks = -(-J // n)
    real = W.real.dtype
    inner_re, inner_im = _powers(log_z, torch.arange(n, device=W.device, dtype=real))  # (H, M, n)
    right = torch.cat([inner_re, -inner_im], dim=1)  # (H, 2M, n)
    outer = log_z[None, ..., None] * (n * torch.arange(blocks, device=W.device, dtype=real))  # (1, H, M, b)
    left = W[..., None] * torch.polar(torch.exp(outer.real), outer.imag)  # (C, H, M, b): W z^(i n)
    left = torch.cat([left.real, left.imag], dim=2).permute(1, 0, 3, 2).reshape(H, C * blocks, 2 * M)
    K = left @ right  # (H, C * b, n)
    return 2 * K.view(H, C, blocks * n)[..., :J].transpose(0, 1)


def lean_causal_kernel(gen: S4DKernel, L: int, rate: float) -> torch.Tensor:
    """The causal kernel ``gen(L, rate)``, ``(channels, H, L)``."""
    with autocast_off(gen.log_dt.device):
        _, log_dA, dB = gen._log_dA_dB(rate)
        CB = gen.output_matrix(rate) * dB
        CB, log_dA = _drop_masked_modes(gen.mode_mask(rate), CB, log_dA)
        return _vandermonde(CB, log_dA, L)


def lean_centred_kernel(gen: S4DKernel, L: int, rate: float, bidirectional: Optional[bool]) -> torch.Tensor:
    """The cell-centred kernel ``gen.centred(L, rate, bidirectional)``, ``(channels', H, 2L - 1)``."""
    with autocast_off(gen.log_dt.device):
        origin, W, log_z, mask = gen._cell_terms(rate)
        W, log_z = _drop_masked_modes(mask, W, log_z)
        cells = origin[..., None] if L == 1 else torch.cat([origin[..., None], _vandermonde(W, log_z, L - 1)], dim=-1)
        return _centre(cells, bidirectional)
