"""First-order linear recurrences (``h[t] = a[t] * h[t-1] + b[t]``) computed as a scan.

Three interchangeable backends compute the same thing:

- ``"loop"``: the reference, a Python loop over time (autograd differentiates through it).
- ``"torch"``: a chunked algorithm in plain PyTorch for any device. The sequence is cut into
  chunks of ``c`` steps; the data is copied into chunk-major layout ``(..., c, L // c)`` so each
  of the ``c`` steps is one contiguous vector operation across all chunks and rows. A first sweep
  finds every chunk's end state from a zero start, a recursive scan over the chunks turns those
  into the true state entering each chunk, and a second sweep recomputes the chunk from it.
  Nothing is divided by a cumulative product of ``a``, so the result stays finite and accurate for
  any length when ``|a| <= 1``. When ``a`` is constant in time (S4's case) and the sequence is
  long, a chunk's states are instead one small matrix product with the Toeplitz matrix of powers
  of ``a``, read straight from the natural layout (no layout copies), which BLAS runs near its peak.
- ``"triton"``: a Triton kernel (``_scan_triton.py``), ``tl.associative_scan`` over chunks with
  the carry passed between chunks inside the program. On CPU it runs only under the Triton
  interpreter (``TRITON_INTERPRET=1`` set before ``triton`` is imported).

Gradients of the fast backends come from a ``torch.autograd.Function`` whose backward pass is
itself a scan running the other way: with ``d[t] = dL/dh[t]`` accumulated through the
recurrence, ``d[t] = grad_h[t] + conj(a[t+1]) * d[t+1]``, then ``grad_b = d``,
``grad_a[t] = d[t] * conj(h[t-1])`` and ``grad_h0 = conj(a[0]) * d[0]``.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Optional

import torch
from ..errors import InvalidTypeError, InvalidValueError

__all__ = ["linear_scan"]

BACKENDS = ("auto", "loop", "torch", "triton")

# A scan implementation: (a, b, h0, reverse) -> h, all in one compute dtype, ``a`` with b's rank
# and a last axis of 1 or L, ``h0`` None or broadcastable to ``b.shape[:-1]``.
ScanFn = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor], bool], torch.Tensor]

_REAL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_COMPLEX_DTYPES = (torch.complex64, torch.complex128)
_MAX_CHUNK = 32
_BLOCK_ELEMS = 1 << 21
_MIN_CHUNKED_LEN = 32
# Constant decay: steps per chunk of the Toeplitz-matmul path (complex: 8, a real product of
# width 16), and the fewest chunks per row for which one (n, c) @ (c, c) product per row beats
# the chunk-major sweeps.
_TOEPLITZ_CHUNK = 16
_TOEPLITZ_CHUNK_COMPLEX = 8
_MIN_TOEPLITZ_CHUNKS = 64


def linear_scan(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: Optional[torch.Tensor] = None,
    *,
    reverse: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Solve ``h[..., t] = a[..., t] * h[..., t-1] + b[..., t]`` along the last axis.

    Args:
        a: decay ``(..., L)`` or ``(..., 1)`` (constant in time), broadcastable to ``b``, e.g.
            ``(H, N, 1)`` or ``(H, N, L)`` against ``b`` of shape ``(B, H, N, L)``.
        b: input ``(..., L)``; the output has this shape.
        h0: state before the first step, broadcastable to ``b.shape[:-1]``; zero if None.
        reverse: run from the end: ``h[..., t] = a[..., t] * h[..., t+1] + b[..., t]``, with
            ``h0`` entering after the last step.
        backend: ``"loop"``, ``"torch"``, ``"triton"`` or ``"auto"`` (Triton for CUDA tensors
            when Triton is installed, otherwise ``"torch"``).

    Returns:
        ``h`` with ``b``'s shape. Real (fp16/bf16/fp32/fp64) and complex (complex64/complex128)
        inputs are accepted; fp16/bf16 are accumulated in fp32 and the result has the promoted
        input dtype. Differentiable in ``a``, ``b`` and ``h0`` with every backend.
    """
    if backend not in BACKENDS:
        raise InvalidValueError(f"unknown linear_scan backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    if not isinstance(reverse, bool):
        raise InvalidTypeError(f"reverse must be a bool, got {type(reverse).__name__}")
    out_dtype = _check_dtypes(a=a, b=b, h0=h0)
    a, h0 = _align_shapes(a, b, h0)
    compute_dtype = _compute_dtype(out_dtype)
    a, b = a.to(compute_dtype), b.to(compute_dtype)
    h0 = None if h0 is None else h0.to(compute_dtype)

    if backend == "auto":
        backend = "triton" if b.is_cuda and _triton_installed() else "torch"
    if backend == "loop":
        h = _scan_loop(a, b, h0, reverse)
    elif backend == "torch":
        h = _LinearScan.apply(a, b, h0, reverse, _scan_torch)
    else:
        h = _LinearScan.apply(a, b, h0, reverse, _triton_scan_fn(b.device))
    return h.to(out_dtype)


# ----------------------------------------------------------------------------- validation


def _check_dtypes(**tensors: Optional[torch.Tensor]) -> torch.dtype:
    """Check every given tensor's type and return the promoted dtype of all of them."""
    out_dtype = None
    for name, t in tensors.items():
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise InvalidTypeError(f"linear_scan: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _REAL_DTYPES + _COMPLEX_DTYPES:
            raise InvalidTypeError(
                f"linear_scan: {name} has dtype {t.dtype}; expected a floating point "
                f"(float16, bfloat16, float32, float64) or complex (complex64, complex128) dtype"
            )
        out_dtype = t.dtype if out_dtype is None else torch.promote_types(out_dtype, t.dtype)
    return out_dtype


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _align_shapes(
    a: torch.Tensor, b: torch.Tensor, h0: Optional[torch.Tensor]
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Validate shapes and devices; return ``a`` with b's rank and ``h0`` with rank ``b.ndim - 1``."""
    if b.ndim == 0 or b.shape[-1] == 0:
        raise InvalidValueError(f"linear_scan: b must be (..., L) with L >= 1, got shape {tuple(b.shape)}")
    length = b.shape[-1]
    batch = b.shape[:-1]
    if a.ndim == 0 or a.ndim > b.ndim or a.shape[-1] not in (1, length):
        raise InvalidValueError(
            f"linear_scan: a of shape {tuple(a.shape)} does not broadcast to b of shape {tuple(b.shape)}; "
            f"a needs a last axis of 1 or L={length} and at most b's rank"
        )
    if not _broadcasts_to(a.shape[:-1], batch):
        raise InvalidValueError(f"linear_scan: a of shape {tuple(a.shape)} does not broadcast to b of shape {tuple(b.shape)}")
    if h0 is not None and (h0.ndim > len(batch) or not _broadcasts_to(h0.shape, batch)):
        raise InvalidValueError(
            f"linear_scan: h0 of shape {tuple(h0.shape)} must broadcast to b's shape without its last "
            f"axis, {tuple(batch)}"
        )
    for name, t in (("a", a), ("h0", h0)):
        if t is not None and t.device != b.device:
            raise InvalidValueError(f"linear_scan: {name} is on {t.device} but b is on {b.device}")
    a = a.reshape((1,) * (b.ndim - a.ndim) + a.shape)
    if h0 is not None:
        h0 = h0.reshape((1,) * (len(batch) - h0.ndim) + h0.shape)
    return a, h0


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    if len(shape) > len(target):
        return False
    return all(s in (1, t) for s, t in zip(reversed(shape), reversed(target)))


# ----------------------------------------------------------------------------- loop backend


def _scan_loop(a: torch.Tensor, b: torch.Tensor, h0: Optional[torch.Tensor], reverse: bool) -> torch.Tensor:
    """Reference: one step at a time; autograd differentiates through the loop."""
    length = b.shape[-1]
    varying = a.shape[-1] != 1
    h = h0
    states = [None] * length
    for t in range(length - 1, -1, -1) if reverse else range(length):
        b_t = b[..., t]
        h = b_t if h is None else a[..., t if varying else 0] * h + b_t
        states[t] = h
    return torch.stack(states, dim=-1)


# ----------------------------------------------------------------------------- torch backend


def _scan_torch(a: torch.Tensor, b: torch.Tensor, h0: Optional[torch.Tensor], reverse: bool) -> torch.Tensor:
    out = torch.empty(b.shape, dtype=b.dtype, device=b.device)
    if _takes_toeplitz_path(a, b):
        # One pass through memory with no scratch buffer: nothing to gain from batch blocks.
        _toeplitz_scan_into(a, b, h0, reverse, out)
        return out
    # Work through the batch in blocks that share one scratch buffer: it stays in cache, and a
    # fresh full-size buffer would cost a page fault per 4 KiB on first touch.
    scratch = None
    for a_blk, b_blk, h0_blk, out_blk in _batch_blocks(a, b, h0, out, _BLOCK_ELEMS):
        if scratch is None and b.shape[-1] >= _MIN_CHUNKED_LEN:
            scratch = torch.empty(b_blk.numel(), dtype=b.dtype, device=b.device)
        _chunked_scan_into(a_blk, b_blk, h0_blk, reverse, out_blk, scratch)
    return out


def _batch_blocks(a: torch.Tensor, b: torch.Tensor, h0: Optional[torch.Tensor], out: torch.Tensor, max_elems: int):
    """Yield ``(a, b, h0, out)`` views over blocks of the batch of at most ``max_elems`` elements
    (or a single row when a row is longer), split along one batch axis. Largest block first."""
    split = b.ndim - 1  # the batch axis to split along; b.ndim - 1 means no split
    inner = b.shape[-1]
    while split > 0 and inner * b.shape[split - 1] <= max_elems:
        split -= 1
        inner *= b.shape[split]
    if split == 0:
        yield a, b, h0, out
        return
    axis = split - 1
    step = max(1, max_elems // inner)
    for outer in itertools.product(*(range(s) for s in b.shape[:axis])):
        for start in range(0, b.shape[axis], step):
            index = tuple(slice(i, i + 1) for i in outer) + (slice(start, start + step),)
            yield _block(a, index), _block(b, index), _block(h0, index), _block(out, index)


def _block(t: Optional[torch.Tensor], index: tuple[slice, ...]) -> Optional[torch.Tensor]:
    if t is None:
        return None
    return t[tuple(s if size != 1 else slice(None) for s, size in zip(index, t.shape))]


def _chunked_scan_into(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: Optional[torch.Tensor],
    reverse: bool,
    out: torch.Tensor,
    scratch: Optional[torch.Tensor] = None,
) -> None:
    """Write the scan of ``b (..., L)`` into the contiguous ``out (..., L)``.

    O(L) work in about ``2 * chunk`` vector operations per level of recursion. ``scratch`` is a
    flat buffer with at least ``b.numel()`` elements, or None to allocate one.
    """
    length = b.shape[-1]
    if length < _MIN_CHUNKED_LEN:
        _sequential_scan_into(a, b, h0, reverse, out)
        return
    if _takes_toeplitz_path(a, b):
        _toeplitz_scan_into(a, b, h0, reverse, out)
        return
    chunk = min(_MAX_CHUNK, 1 << (math.isqrt(length).bit_length() - 1))
    n_chunks = length // chunk
    n_main = n_chunks * chunk
    main = slice(length - n_main, length) if reverse else slice(0, n_main)
    varying = a.shape[-1] != 1

    # h_cm[..., j, k] = b at step j of chunk k; it becomes h in place. a_cm borrows out's memory
    # (a broadcasts to b, so it fits) until the result is copied there.
    h_cm = _to_chunk_major(b[..., main], chunk, scratch)
    h_steps = h_cm.unbind(-2)
    if varying:
        a_steps = _to_chunk_major(a[..., main], chunk, out.view(-1)).unbind(-2)
    else:
        a_steps = (a,) * chunk  # (..., 1) broadcasts over the chunks
    steps = range(chunk - 1, -1, -1) if reverse else range(chunk)

    # Sweep 1: each chunk's end state when it starts from zero.
    local_end = h_steps[steps[0]].clone()
    for j in steps[1:]:
        torch.addcmul(h_steps[j], a_steps[j], local_end, out=local_end)

    # Scan over chunks: chunk k maps a state s to decay[k] * s + local_end[k].
    if varying:
        decay = a[..., main].unflatten(-1, (n_chunks, chunk)).prod(dim=-1)
    else:
        decay = _powers(a, chunk)[..., chunk:]
    carry = _chunk_carries(decay, local_end, h0, reverse)

    # Sweep 2: recompute each chunk from its true starting state.
    prev = carry
    for j in steps:
        h_steps[j].addcmul_(a_steps[j], prev)
        prev = h_steps[j]
    _from_chunk_major(h_cm, out[..., main])

    _scan_tail_into(a, b, reverse, out, n_main)


def _chunk_carries(
    decay: torch.Tensor, local_end: torch.Tensor, h0: Optional[torch.Tensor], reverse: bool
) -> torch.Tensor:
    """The state entering each chunk ``(..., n)``, given the map ``s -> decay[k] * s + local_end[k]``
    that chunk ``k`` applies to the state entering it: a scan over chunks, shifted by one."""
    chunk_end = torch.empty(local_end.shape, dtype=local_end.dtype, device=local_end.device)
    _chunked_scan_into(decay, local_end, h0, reverse, chunk_end)
    carry = torch.empty_like(chunk_end)
    if reverse:
        carry[..., :-1] = chunk_end[..., 1:]
    else:
        carry[..., 1:] = chunk_end[..., :-1]
    carry[..., -1 if reverse else 0] = 0 if h0 is None else h0
    return carry


def _scan_tail_into(a: torch.Tensor, b: torch.Tensor, reverse: bool, out: torch.Tensor, n_main: int) -> None:
    """Finish the steps after the whole chunks (before them when reverse), from the boundary state."""
    length = b.shape[-1]
    if n_main == length:
        return
    rest = slice(0, length - n_main) if reverse else slice(n_main, length)
    boundary = out[..., length - n_main] if reverse else out[..., n_main - 1]
    _sequential_scan_into(a[..., rest] if a.shape[-1] != 1 else a, b[..., rest], boundary, reverse, out[..., rest])


def _toeplitz_chunk(dtype: torch.dtype) -> int:
    return _TOEPLITZ_CHUNK_COMPLEX if dtype.is_complex else _TOEPLITZ_CHUNK


def _takes_toeplitz_path(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape[-1] == 1 and b.shape[-1] >= _toeplitz_chunk(b.dtype) * _MIN_TOEPLITZ_CHUNKS


def _toeplitz_scan_into(
    a: torch.Tensor, b: torch.Tensor, h0: Optional[torch.Tensor], reverse: bool, out: torch.Tensor
) -> None:
    """Scan with a decay constant in time, ``a (..., 1)``, written into the contiguous ``out (..., L)``.

    With ``a`` fixed, the state a chunk of ``c`` steps builds from zero is a matrix product:
    ``local[k, i] = sum_j b[k, j] * a ** (i - j)`` over ``j <= i`` (``j >= i`` when reverse), one
    ``(n, c) @ (c, c)`` product per row straight from the natural layout, with no copy into
    chunk-major order. The state entering chunk ``k`` then adds ``a ** (i + 1) * carry[k]``
    (``a ** (c - i)`` when reverse), and the carries are a scan over the chunks' end states with
    decay ``a ** c``. A non-finite ``b`` poisons its whole chunk (0 * inf) rather than only the
    steps after it.
    """
    length, chunk = b.shape[-1], _toeplitz_chunk(b.dtype)
    n_chunks = length // chunk
    n_main = n_chunks * chunk
    main = slice(length - n_main, length) if reverse else slice(0, n_main)

    powers = _powers(a, chunk)  # (..., c + 1): a ** 0 .. a ** c
    transfer = _toeplitz_transfer(powers[..., :chunk], reverse)  # (..., c, c)
    local = out[..., main].unflatten(-1, (n_chunks, chunk))
    _matmul_into(b[..., main].unflatten(-1, (n_chunks, chunk)), transfer, local)

    # (..., n): each chunk's state from zero, contiguous for the products of the recursion
    ends = (local[..., 0] if reverse else local[..., -1]).contiguous()
    carry = _chunk_carries(powers[..., chunk:], ends, h0, reverse)
    entry_decay = powers[..., 1:].flip(-1) if reverse else powers[..., 1:]
    # local[k, i] += carry[k] * entry_decay[i]: a rank-1 product, which BLAS does faster than a
    # broadcast addcmul (5x for complex).
    _matmul_into(carry.unsqueeze(-1), entry_decay.unsqueeze(-2), local, accumulate=True)

    _scan_tail_into(a, b, reverse, out, n_main)


def _matmul_into(x: torch.Tensor, matrix: torch.Tensor, out: torch.Tensor, accumulate: bool = False) -> None:
    """``out = x @ matrix`` (``out += x @ matrix`` when ``accumulate``), batched over leading axes.

    ``x (..., n, k)`` and ``matrix (..., k, c)`` broadcast to ``out (..., n, c)``. Complex products
    run as real ones of twice the width on the interleaved (re, im) views: with
    ``matrix = R + iI`` the real matrix has blocks ``[[R, I], [-I, R]]``. CPU BLAS runs that 1.5-5x
    faster than its complex product, and far faster than a broadcast complex ``addcmul``.
    """
    if x.is_complex() and x.stride(-1) == 1 and out.stride(-1) == 1:
        x, out = torch.view_as_real(x).flatten(-2), torch.view_as_real(out).flatten(-2)
        re, im = matrix.real, matrix.imag
        # (..., k, 2 (re/im in), c, 2 (re/im out))
        matrix = torch.stack([torch.stack([re, im], dim=-1), torch.stack([-im, re], dim=-1)], dim=-3)
        matrix = matrix.flatten(-4, -3).flatten(-2)
    batch = out.shape[:-2]
    x = x.expand(batch + x.shape[-2:]).reshape((-1,) + x.shape[-2:])
    matrix = matrix.expand(batch + matrix.shape[-2:]).reshape((-1,) + matrix.shape[-2:])
    out = out.view((-1,) + out.shape[-2:])
    if not out.is_contiguous():  # e.g. a tail of leftover steps follows each row
        product = torch.bmm(x, matrix)
        out.add_(product) if accumulate else out.copy_(product)
    elif accumulate:
        out.baddbmm_(x, matrix)
    else:
        torch.bmm(x, matrix, out=out)


def _powers(a: torch.Tensor, n: int) -> torch.Tensor:
    """``a (..., 1)`` -> ``(..., n + 1)``: ``a ** 0, a ** 1, ..., a ** n`` (exact zeros for ``a = 0``)."""
    return torch.cat([torch.ones_like(a), a.expand(a.shape[:-1] + (n,))], dim=-1).cumprod(dim=-1)


def _toeplitz_transfer(powers: torch.Tensor, reverse: bool) -> torch.Tensor:
    """``powers (..., c)`` of ``a`` -> ``T (..., c, c)`` with ``T[j, i] = a ** (i - j)`` for ``i >= j``
    and 0 elsewhere (``a ** (j - i)`` for ``j >= i`` when reverse), so that a chunk's states from
    zero are ``b_chunk @ T``."""
    chunk = powers.shape[-1]
    # padded[m] = a ** (m - c + 1) for m >= c - 1, else 0. Window w of it, padded[w : w + c], is
    # row j = c - 1 - w of T: hence the flip.
    padded = torch.cat([torch.zeros_like(powers[..., 1:]), powers], dim=-1)
    transfer = padded.unfold(-1, chunk, 1).flip(-2)
    return transfer.transpose(-1, -2) if reverse else transfer


def _sequential_scan_into(
    a: torch.Tensor, b: torch.Tensor, h0: Optional[torch.Tensor], reverse: bool, out: torch.Tensor
) -> None:
    length = b.shape[-1]
    varying = a.shape[-1] != 1
    prev = h0
    for t in range(length - 1, -1, -1) if reverse else range(length):
        if prev is None:
            out[..., t] = b[..., t]
        else:
            torch.addcmul(b[..., t], a[..., t if varying else 0], prev, out=out[..., t])
        prev = out[..., t]


def _same_size_real_view(x: torch.Tensor) -> torch.Tensor:
    """Reinterpret complex64 as float64 so layout copies move whole elements at once.

    complex128 has no 16-byte real dtype; it becomes a ``(..., 2)`` float64 view instead.
    """
    if x.dtype == torch.complex64:
        return x.view(torch.float64)
    if x.dtype == torch.complex128:
        return torch.view_as_real(x)
    return x


def _to_chunk_major(x: torch.Tensor, chunk: int, storage: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``(..., n * chunk)`` -> contiguous ``(..., chunk, n)``, written into the flat ``storage``
    (a contiguous tensor with at least as many elements) or a new tensor."""
    x = x.resolve_conj()
    n = x.shape[-1] // chunk
    shape = x.shape[:-1] + (chunk, n)
    if storage is None:
        y = torch.empty(shape, dtype=x.dtype, device=x.device)
    else:
        y = storage[: shape.numel()].view(shape)
    src, dst = _same_size_real_view(x), _same_size_real_view(y)
    axis = -1 if src.ndim == x.ndim else -2  # the time axis in the (maybe longer) real view
    dst.copy_(src.unflatten(axis, (n, chunk)).transpose(axis - 1, axis))
    return y


def _from_chunk_major(y: torch.Tensor, out: torch.Tensor) -> None:
    """Copy ``y (..., chunk, n)`` into ``out (..., n * chunk)``."""
    chunk, n = y.shape[-2:]
    src, dst = _same_size_real_view(y), _same_size_real_view(out)
    axis = -1 if src.ndim == y.ndim else -2
    dst.unflatten(axis, (n, chunk)).copy_(src.transpose(axis - 1, axis))


# ----------------------------------------------------------------------------- triton backend


def _triton_installed() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _triton_scan_fn(device: torch.device) -> ScanFn:
    if not _triton_installed():
        raise InvalidValueError("linear_scan: backend='triton' needs the triton package, which is not installed")
    from . import _scan_triton

    if device.type != "cuda" and not _scan_triton.INTERPRETED:
        raise InvalidValueError(
            f"linear_scan: backend='triton' needs CUDA tensors, got tensors on {device}; to run the kernel "
            f"on CPU set TRITON_INTERPRET=1 before triton is first imported, or use backend='torch'"
        )
    return _scan_triton.triton_linear_scan


# ----------------------------------------------------------------------------- autograd


class _LinearScan(torch.autograd.Function):
    """Differentiates any scan implementation with a second scan running the other way."""

    @staticmethod
    def forward(ctx, a, b, h0, reverse: bool, scan_fn: ScanFn):
        h = scan_fn(a, b, h0, reverse)
        ctx.save_for_backward(a, h, h0)
        ctx.reverse = reverse
        ctx.scan_fn = scan_fn
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h):
        a, h, h0 = ctx.saved_tensors
        reverse = ctx.reverse
        need_a, need_b, need_h0 = ctx.needs_input_grad[:3]
        # Step t feeds step t+1 (t-1 when reverse) through a[t+1] (a[t-1]); grads flow back.
        delta = ctx.scan_fn(_backward_decay(a, reverse), grad_h, None, not reverse)

        grad_a = grad_h0 = None
        if need_a:
            grad_a = _decay_grad(a, h, h0, delta, reverse)
        if need_h0 and h0 is not None:
            first = -1 if reverse else 0
            grad_h0 = (a[..., first].conj() * delta[..., first]).sum_to_size(h0.shape)
        return grad_a, delta if need_b else None, grad_h0, None, None


def _backward_decay(a: torch.Tensor, reverse: bool) -> torch.Tensor:
    """``conj(a)`` shifted one step against the scan direction (zero where nothing flows in)."""
    if a.shape[-1] == 1:
        return a.conj().resolve_conj()
    shifted = torch.empty_like(a)
    if reverse:
        shifted[..., 1:] = a[..., :-1].conj()
        shifted[..., 0] = 0
    else:
        shifted[..., :-1] = a[..., 1:].conj()
        shifted[..., -1] = 0
    return shifted


def _decay_grad(
    a: torch.Tensor, h: torch.Tensor, h0: Optional[torch.Tensor], delta: torch.Tensor, reverse: bool
) -> torch.Tensor:
    """``grad_a[t] = delta[t] * conj(h_prev[t])`` summed down to a's (broadcast) shape."""
    if reverse:
        inner_delta, inner_prev, edge = delta[..., :-1], h[..., 1:], -1
    else:
        inner_delta, inner_prev, edge = delta[..., 1:], h[..., :-1], 0
    edge_grad = None if h0 is None else delta[..., edge] * h0.conj()
    if a.shape[-1] == 1:
        grad = torch.linalg.vecdot(inner_prev, inner_delta, dim=-1)  # sum_t conj(prev) * delta
        if edge_grad is not None:
            grad = grad + edge_grad
        return grad.unsqueeze(-1).sum_to_size(a.shape)
    grad = torch.empty_like(delta)
    inner = slice(0, -1) if reverse else slice(1, None)
    torch.mul(inner_delta, inner_prev.conj(), out=grad[..., inner])
    grad[..., edge] = 0 if edge_grad is None else edge_grad
    return grad.sum_to_size(a.shape)
