"""Triton kernel for ``linear_scan``: ``h[t] = a[t] * h[t-1] + b[t]`` along rows.

Each program owns ``ROWS`` rows and walks their time axis in chunks of ``CHUNK`` steps. A chunk
is scanned with ``tl.associative_scan`` over ``(a, b)`` pairs, where composing step 1 then step 2
gives ``(a1 * a2, a2 * b1 + b2)``; the state carried in from the previous chunk is then added as
``A_cum * carry``. Complex numbers travel as interleaved (real, imaginary) pairs.

This module is imported lazily by :mod:`s4vision.ops.scan`. Whether ``@triton.jit`` builds a
compiled or an interpreted kernel is decided when this module is imported, from
``TRITON_INTERPRET``; :data:`INTERPRETED` records which one we got.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

__all__ = ["triton_linear_scan", "INTERPRETED"]

_MAX_CHUNK = 1024
_MIN_CHUNK = 16
# ROWS * CHUNK elements per program. With these tile sizes and warp counts ptxas (sm_90) keeps
# every variant under 128 registers without spilling; complex and fp64 tiles need 8 warps.
_TILE = 1024


@triton.jit
def _combine_real(a1, b1, a2, b2):
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _combine_complex(ar1, ai1, br1, bi1, ar2, ai2, br2, bi2):
    return (
        ar1 * ar2 - ai1 * ai2,
        ar1 * ai2 + ai1 * ar2,
        ar2 * br1 - ai2 * bi1 + br2,
        ar2 * bi1 + ai2 * br1 + bi2,
    )


@triton.jit
def _linear_scan_kernel(
    a_ptr,  # a's rows, (n_a_rows, La) contiguous, La in {1, L}; complex as interleaved pairs
    a_row_ptr,  # (n_rows,) int64: element offset of each output row's row of a
    b_ptr,  # (n_rows, L) contiguous
    h0_ptr,  # (n_rows,) contiguous, read only when HAS_H0
    h_ptr,  # (n_rows, L) contiguous output
    n_rows,
    length,
    a_time_stride,  # 1 when a varies in time, 0 when it is constant
    HAS_H0: tl.constexpr,
    REVERSE: tl.constexpr,
    IS_COMPLEX: tl.constexpr,
    ROWS: tl.constexpr,
    CHUNK: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    b_row_start = rows.to(tl.int64) * length
    a_row_start = tl.load(a_row_ptr + rows, mask=row_ok, other=0)
    steps = tl.arange(0, CHUNK)
    edge = 0 if REVERSE else CHUNK - 1  # where a chunk hands its state to the next one

    if HAS_H0:
        if IS_COMPLEX:
            carry_r = tl.load(h0_ptr + 2 * rows, mask=row_ok, other=0.0)
            carry_i = tl.load(h0_ptr + 2 * rows + 1, mask=row_ok, other=0.0)
        else:
            carry_r = tl.load(h0_ptr + rows, mask=row_ok, other=0.0)
    else:
        carry_r = tl.zeros([ROWS], dtype=h_ptr.dtype.element_ty)
        if IS_COMPLEX:
            carry_i = tl.zeros([ROWS], dtype=h_ptr.dtype.element_ty)

    n_chunks = tl.cdiv(length, CHUNK)
    for i in range(n_chunks):
        if REVERSE:
            t = (n_chunks - 1 - i) * CHUNK + steps
        else:
            t = i * CHUNK + steps
        mask = row_ok[:, None] & (t < length)[None, :]
        b_off = b_row_start[:, None] + t[None, :]
        a_off = a_row_start[:, None] + t[None, :].to(tl.int64) * a_time_stride
        # Padding steps (a = 1, b = 0) pass the state through unchanged.
        if IS_COMPLEX:
            ar = tl.load(a_ptr + 2 * a_off, mask=mask, other=1.0)
            ai = tl.load(a_ptr + 2 * a_off + 1, mask=mask, other=0.0)
            br = tl.load(b_ptr + 2 * b_off, mask=mask, other=0.0)
            bi = tl.load(b_ptr + 2 * b_off + 1, mask=mask, other=0.0)
            ar, ai, br, bi = tl.associative_scan((ar, ai, br, bi), 1, _combine_complex, reverse=REVERSE)
            hr = br + ar * carry_r[:, None] - ai * carry_i[:, None]
            hi = bi + ar * carry_i[:, None] + ai * carry_r[:, None]
            tl.store(h_ptr + 2 * b_off, hr, mask=mask)
            tl.store(h_ptr + 2 * b_off + 1, hi, mask=mask)
            carry_r = tl.sum(tl.where(steps[None, :] == edge, hr, 0.0), axis=1)
            carry_i = tl.sum(tl.where(steps[None, :] == edge, hi, 0.0), axis=1)
        else:
            a = tl.load(a_ptr + a_off, mask=mask, other=1.0)
            b = tl.load(b_ptr + b_off, mask=mask, other=0.0)
            a, b = tl.associative_scan((a, b), 1, _combine_real, reverse=REVERSE)
            h = b + a * carry_r[:, None]
            tl.store(h_ptr + b_off, h, mask=mask)
            carry_r = tl.sum(tl.where(steps[None, :] == edge, h, 0.0), axis=1)


INTERPRETED = not isinstance(_linear_scan_kernel, triton.runtime.JITFunction)


def _real_view(x: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(x) if x.is_complex() else x


def triton_linear_scan(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: Optional[torch.Tensor],
    reverse: bool,
    chunk: Optional[int] = None,
) -> torch.Tensor:
    """Launch the kernel. Shapes and dtypes as checked by ``linear_scan``: ``a`` has b's rank
    with a last axis of 1 or L, ``h0`` is None or broadcastable to ``b.shape[:-1]``, and all share
    one dtype among float32, float64, complex64, complex128. ``chunk`` (a power of two) overrides
    the chunk length, for tests."""
    batch, length = b.shape[:-1], b.shape[-1]
    n_rows = batch.numel()
    b = b.resolve_conj().contiguous()
    a = a.resolve_conj().contiguous()
    # Offset of the row of a that each output row reads; broadcast rows share one.
    a_rows = torch.arange(a.shape[:-1].numel(), device=a.device, dtype=torch.int64) * a.shape[-1]
    a_rows = a_rows.view(a.shape[:-1]).expand(batch).reshape(-1)
    if h0 is not None:
        h0 = h0.resolve_conj().expand(batch).reshape(-1).contiguous()
    h = torch.empty_like(b)

    if chunk is None:
        chunk = min(_MAX_CHUNK, max(_MIN_CHUNK, triton.next_power_of_2(length)))
    rows_per_program = max(1, min(_TILE // chunk, triton.next_power_of_2(n_rows)))
    grid = (triton.cdiv(n_rows, rows_per_program),)
    _linear_scan_kernel[grid](
        _real_view(a),
        a_rows,
        _real_view(b),
        _real_view(h0 if h0 is not None else b),
        _real_view(h),
        n_rows,
        length,
        1 if a.shape[-1] != 1 else 0,
        HAS_H0=h0 is not None,
        REVERSE=reverse,
        IS_COMPLEX=b.is_complex(),
        ROWS=rows_per_program,
        CHUNK=chunk,
        num_warps=4 if b.dtype == torch.float32 else 8,
    )
    return h
