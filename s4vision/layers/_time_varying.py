"""The time-varying view of an S4 layer: its SSM stepped over irregular steps (the continuous-time path).

With per-sample rates ``r (B', L)`` (``r_i`` the step before sample ``i``, in reference steps;
:func:`s4vision.sampling.frame_rates`), the SSM is discretised anew at every step, ``dt * r_i``,
with the generator's own discretisation (ZOH or bilinear), and run as a recurrence by the
time-varying path of :func:`~s4vision.ops.linear_scan`:

- causal: ``x_i = dA(dt r_i) x_{i-1} + dB(dt r_i) u_i``, ``y_i = 2 Re(C x_i)``: the recurrence whose
  uniform case is the causal kernel ``2 Re(C dA^l dB)`` of :class:`~s4vision.layers.S4`;
- bidirectional: every sample stands for its cell between the midpoints to its neighbours (half a
  step before it, half a step after). The causal half integrates each cell with two half-step
  discretisations, ``s_i = dA(g_i) z_{i-1} + dB(g_i) u_i`` and ``z_i = dA(g_{i+1}) s_i +
  dB(g_{i+1}) u_i`` with ``g_i = dt r_i / 2``; the anti-causal half mirrors it. With uniform steps
  these are exactly the cell-centred kernels of :func:`~s4vision.kernels.centred_kernels`, the
  step after the last sample taken equal to the one before it.

Diagonal (S4D) generators run one complex scan per mode; dense (S4, DPLR) ones step their
``(M, M)`` matrices one sample at a time (exact, for small inputs).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..kernels.ssm import S4DKernel, SSMKernelBase, _discretise_dense, _exp, _expm1
from ..ops.scan import linear_scan

__all__ = ["causal_time_varying", "bidirectional_time_varying"]

# Steps per chunk when a dense generator discretises its (M, M) system per step.
_DENSE_CHUNK = 64


def _diagonal_steps(gen: SSMKernelBase, steps: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(dA, dB)``, each ``(B', H, M, L)`` complex, of a diagonal generator for the absolute steps
    ``steps (B', H, L)`` (``dt * r``)."""
    A = gen.diagonal_A()[..., None]  # (H, M, 1)
    B = gen._cplx(gen.B)[..., None]
    z = A * steps[..., None, :]  # (B', H, M, L)
    if gen.disc == "zoh":
        return _exp(z), B * _expm1(z) / A
    half = 1 - z / 2
    return (2 - half) / half, B * steps[..., None, :] / half


def _dense_steps(gen: SSMKernelBase, steps: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(dA (B', L, H, M, M), dB (B', L, H, M))`` of a dense generator for ``steps (B', H, L)``."""
    A, B = gen.dense_A(), gen._cplx(gen.B)  # (H, M, M), (H, M)
    s = steps.transpose(1, 2).to(A.real.dtype)  # (B', L, H)
    dA, dB = _discretise_dense((s[..., None, None] * A).flatten(0, 2), (s[..., None] * B).flatten(0, 2), gen.disc)
    return dA.view(*s.shape, *A.shape[1:]), dB.view(*s.shape, B.shape[-1])


def _absolute_steps(gen: SSMKernelBase, rates: torch.Tensor) -> torch.Tensor:
    """``dt * r``: ``(B', H, L)`` in the generator's compute dtype."""
    return gen.dt(1.0)[:, None] * rates[:, None, :].to(gen._compute_dtype())


def _matvec(a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``a (B', H, M, M) @ h (B, H, M)`` with ``B'`` broadcast: ``(B, H, M)``."""
    return (a @ h[..., None])[..., 0]


def _readout(C: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """``2 Re(C x)`` for ``C (c, H, M)`` and states ``(B, H, M, L)``: ``(B, c * H, L)``."""
    y = torch.einsum("chm,bhml->bchl", C, states).real
    return 2 * y.flatten(1, 2)


def causal_time_varying(
    gen: SSMKernelBase, u: torch.Tensor, rates: torch.Tensor, h0: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Causal SSM over per-sample steps: ``u (B, H, L)``, ``rates (B' in {1, B}, L)``, state ``h0
    (B, H, M)`` complex or None (zero). Returns ``y (B, c * H, L)`` (without the skip term) and the
    state after the last sample, ``(B, H, M)`` complex."""
    steps = _absolute_steps(gen, rates)
    C = gen.output_matrix(float(rates.max()))
    u = u.to(steps.dtype)
    if isinstance(gen, S4DKernel):
        dA, dB = _diagonal_steps(gen, steps)
        states = linear_scan(dA, dB * u[:, :, None, :], h0)
        return _readout(C, states), states[..., -1]
    B, H, L = u.shape
    h = torch.zeros(B, H, gen.modes, dtype=C.dtype, device=u.device) if h0 is None else h0.to(C.dtype)
    states = []
    for start in range(0, L, _DENSE_CHUNK):
        dA, dB = _dense_steps(gen, steps[..., start:start + _DENSE_CHUNK])
        for i in range(dA.shape[1]):
            h = _matvec(dA[:, i], h) + dB[:, i] * u[:, :, start + i, None]
            states.append(h)
    states = torch.stack(states, dim=-1)
    return _readout(C, states), h


def bidirectional_time_varying(gen: SSMKernelBase, u: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
    """Bidirectional (cell-centred) SSM over per-sample steps: ``u (B, H, L)``, ``rates (B', L)``;
    the generator's channels are ``(forward, backward)`` halves. Returns ``y (B, c * H, L)``, ``c``
    half the generator's channels, without the skip term."""
    half_steps = _absolute_steps(gen, rates) / 2  # g_i, before sample i
    after = torch.cat([half_steps[..., 1:], half_steps[..., -1:]], dim=-1)  # g_{i+1}, after sample i
    C_fwd, C_bwd = gen.output_matrix(float(rates.max())).chunk(2)
    u = u.to(half_steps.dtype)
    u_prev, u_next = F.pad(u, (1, -1)), F.pad(u, (-1, 1))
    if isinstance(gen, S4DKernel):
        dA, dB = _diagonal_steps(gen, half_steps)
        fwd = linear_scan(dA * dA, dB * (dA * u_prev[:, :, None] + u[:, :, None]))
        dA, dB = _diagonal_steps(gen, after)
        bwd = linear_scan(dA * dA, dB * (u[:, :, None] + dA * u_next[:, :, None]), reverse=True)
        return _readout(C_fwd, fwd) + _readout(C_bwd, bwd)
    return _readout(C_fwd, _dense_cells_scan(gen, u_prev, u, half_steps, reverse=False)) + _readout(
        C_bwd, _dense_cells_scan(gen, u_next, u, after, reverse=True)
    )


def _dense_cells_scan(
    gen: SSMKernelBase, u_other: torch.Tensor, u: torch.Tensor, half_steps: torch.Tensor, reverse: bool
) -> torch.Tensor:
    """States ``(B, H, M, L)`` of one half of a dense bidirectional layer, one sample at a time:
    ``s_i = dA_i (dA_i s_prev + dB_i u_other_i) + dB_i u_i`` with ``dA_i, dB_i`` at ``half_steps_i``."""
    B, H, L = u.shape
    s = None
    states = [None] * L
    order = range(L - 1, -1, -1) if reverse else range(L)
    for start in range(0, L, _DENSE_CHUNK):
        index = [order[i] for i in range(start, min(L, start + _DENSE_CHUNK))]
        lo = min(index)
        dA, dB = _dense_steps(gen, half_steps[..., lo:lo + len(index)])
        for i in index:
            a, b = dA[:, i - lo], dB[:, i - lo]
            z = b * u_other[:, :, i, None] if s is None else _matvec(a, s) + b * u_other[:, :, i, None]
            s = _matvec(a, z) + b * u[:, :, i, None]
            states[i] = s
    return torch.stack(states, dim=-1)
