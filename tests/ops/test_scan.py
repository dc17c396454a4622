"""linear_scan: every backend against a plain loop, gradients, long sequences, errors.

The Triton tests run on CUDA when there is a GPU. On CPU they run under the Triton interpreter,
which must be switched on before triton is imported, so ``test_triton_kernel_under_interpreter``
reruns this file's Triton tests in a subprocess with ``TRITON_INTERPRET=1``.
"""
import os
import subprocess
import sys

import numpy
import pytest
import torch

from _helpers import major_minor
from s4vision.ops import linear_scan
from s4vision.ops import scan as scan_module

try:
    import triton  # noqa: F401

    HAS_TRITON = True
except ImportError:
    HAS_TRITON = False

IN_INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1"
# Triton's interpreter before 3.7 takes int() of one-element arrays to run a loop over a runtime
# length, which NumPy 2.4 refuses; the compiled kernels on a GPU are not affected.
INTERPRETER_BROKEN = HAS_TRITON and major_minor(triton.__version__) < (3, 7) and major_minor(numpy.__version__) >= (2, 4)
HAS_CUDA = torch.cuda.is_available()
TRITON_DEVICE = "cuda" if HAS_CUDA else "cpu"
needs_triton_kernel = pytest.mark.skipif(
    not HAS_TRITON or not (HAS_CUDA or IN_INTERPRETER),
    reason="needs CUDA or the Triton interpreter (run by test_triton_kernel_under_interpreter)",
)

SINGLE = (torch.float32, torch.complex64)
DOUBLE = (torch.float64, torch.complex128)


def reference_scan(a, b, h0=None, reverse=False):
    """h[t] = a[t] * h[t -/+ 1] + b[t], one step at a time in float64 / complex128."""
    wide = torch.complex128 if any(t is not None and t.is_complex() for t in (a, b, h0)) else torch.float64
    a, b = a.to(wide), b.to(wide)
    a = a.expand(b.shape[:-1] + a.shape[-1:])
    h = torch.zeros(b.shape[:-1], dtype=wide) if h0 is None else h0.to(wide).expand(b.shape[:-1])
    out = torch.empty(b.shape, dtype=wide)
    length = b.shape[-1]
    for t in reversed(range(length)) if reverse else range(length):
        h = a[..., t if a.shape[-1] > 1 else 0] * h + b[..., t]
        out[..., t] = h
    return out


def make_inputs(a_kind, length, dtype, with_h0, batch=(2, 3, 2), seed=0, device="cpu"):
    """``a`` of kind "full" (B, H, N, L), "shared" (H, N, L) or "const" (H, N, 1), 0.3 < |a| < 0.99."""
    gen = torch.Generator().manual_seed(seed)
    n_b, n_h, n_n = batch
    a_shape = {"full": (n_b, n_h, n_n, length), "shared": (n_h, n_n, length), "const": (n_h, n_n, 1)}[a_kind]
    a = 0.3 + 0.69 * torch.rand(a_shape, generator=gen, dtype=torch.float64)
    b = torch.randn(batch + (length,), generator=gen, dtype=torch.float64)
    h0 = torch.randn((n_h, n_n), generator=gen, dtype=torch.float64) if with_h0 else None
    if dtype.is_complex:
        a = a * torch.exp(1j * 6.3 * torch.rand(a_shape, generator=gen, dtype=torch.float64))
        b = torch.complex(b, torch.randn(b.shape, generator=gen, dtype=torch.float64))
        h0 = None if h0 is None else torch.complex(h0, torch.randn(h0.shape, generator=gen, dtype=torch.float64))
    cast = lambda t: None if t is None else t.to(dtype=dtype, device=device)  # noqa: E731
    return cast(a), cast(b), cast(h0)


def values_and_grads(a, b, h0, reverse, backend, cotangent):
    """Scan output and the gradients of <cotangent, h> w.r.t. a, b, h0 (zeros where unused)."""
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in (a, b, h0)]
    h = linear_scan(*leaves, reverse=reverse, backend=backend)
    (h * cotangent.conj()).real.sum().backward()
    grads = [None if t is None else (torch.zeros_like(t) if t.grad is None else t.grad) for t in leaves]
    return h.detach(), grads


def assert_matches_loop(a, b, h0, reverse, backend, tol):
    """Values and gradients against the loop backend's (autograd) run in double precision."""
    cotangent = torch.randn_like(b)
    h, grads = values_and_grads(a, b, h0, reverse, backend, cotangent)
    wide = [None if t is None else t.to(torch.complex128 if t.is_complex() else torch.float64) for t in (a, b, h0)]
    h_ref, grads_ref = values_and_grads(*wide, reverse, "loop", cotangent.to(wide[1].dtype))
    h_ref, grads_ref = h_ref.to(h.dtype), [None if g is None else g.to(h.dtype if g.is_complex() else t.dtype)
                                           for g, t in zip(grads_ref, (a, b, h0))]
    assert h.dtype == b.dtype and h.shape == b.shape
    torch.testing.assert_close(h, h_ref, rtol=tol, atol=tol)
    for name, t, g, g_ref in zip("a b h0".split(), (a, b, h0), grads, grads_ref):
        if t is None:
            continue
        assert g.shape == t.shape, f"grad_{name} has shape {tuple(g.shape)}, expected {tuple(t.shape)}"
        torch.testing.assert_close(g, g_ref, rtol=tol, atol=tol, msg=lambda m: f"grad_{name}: {m}")


def tolerance(dtype):
    return 1e-4 if dtype in SINGLE else 1e-10


# ----------------------------------------------------------------------------- loop reference


@pytest.mark.parametrize("dtype", SINGLE + DOUBLE)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("a_kind", ["full", "shared", "const"])
def test_loop_backend_matches_independent_reference(dtype, reverse, a_kind):
    a, b, h0 = make_inputs(a_kind, 37, dtype, with_h0=True)
    expected = reference_scan(a, b, h0, reverse).to(dtype)
    torch.testing.assert_close(linear_scan(a, b, h0, reverse=reverse, backend="loop"), expected, rtol=1e-5, atol=1e-5)


def test_definition_on_a_tiny_example():
    a = torch.tensor([0.5, 2.0, 0.0, 3.0])
    b = torch.tensor([1.0, 1.0, 5.0, 1.0])
    h0 = torch.tensor(4.0)
    forward = [0.5 * 4 + 1, 2 * 3 + 1, 0 * 7 + 5, 3 * 5 + 1]
    backward = [0.5 * 11 + 1, 2 * 5 + 1, 0 * 13 + 5, 3 * 4 + 1]
    for backend in ("loop", "torch"):
        torch.testing.assert_close(linear_scan(a, b, h0, backend=backend), torch.tensor(forward))
        torch.testing.assert_close(linear_scan(a, b, h0, reverse=True, backend=backend), torch.tensor(backward))


# ----------------------------------------------------------------------------- torch backend


# L = 4099 only with h0, to keep the loop reference's time down.
LENGTHS_AND_H0 = [(L, h) for L in (1, 7, 128, 1000) for h in (False, True)] + [(4099, True)]


@pytest.mark.parametrize("length,with_h0", LENGTHS_AND_H0)
@pytest.mark.parametrize("dtype", SINGLE)
@pytest.mark.parametrize("a_kind", ["full", "shared", "const"])
@pytest.mark.parametrize("reverse", [False, True])
def test_torch_backend_matches_loop(length, with_h0, dtype, a_kind, reverse):
    a, b, h0 = make_inputs(a_kind, length, dtype, with_h0)
    assert_matches_loop(a, b, h0, reverse, "torch", tolerance(dtype))


@pytest.mark.parametrize("length", [7, 300])
@pytest.mark.parametrize("dtype", DOUBLE)
@pytest.mark.parametrize("a_kind", ["full", "const"])
@pytest.mark.parametrize("reverse", [False, True])
def test_torch_backend_matches_loop_double(length, dtype, a_kind, reverse):
    a, b, h0 = make_inputs(a_kind, length, dtype, with_h0=True)
    assert_matches_loop(a, b, h0, reverse, "torch", tolerance(dtype))


@pytest.mark.parametrize("length", [7, 100, 333])
@pytest.mark.parametrize("a_kind", ["full", "shared", "const"])
@pytest.mark.parametrize("reverse", [False, True])
def test_torch_backend_in_batch_blocks(monkeypatch, length, a_kind, reverse):
    """Small blocks force the batch to be split, with a and h0 broadcast across the blocks."""
    monkeypatch.setattr(scan_module, "_BLOCK_ELEMS", 5 * length)  # blocks of 2 along H = 5
    a, b, h0 = make_inputs(a_kind, length, torch.complex128, with_h0=True, batch=(3, 5, 2))
    h0 = h0[:, :1]  # (H, 1): broadcast over N as well
    assert_matches_loop(a, b, h0, reverse, "torch", 1e-10)


@pytest.fixture
def toeplitz_calls(monkeypatch):
    """Counts calls of the constant-decay (Toeplitz matmul) path, so a test can require it ran."""
    calls = []
    original = scan_module._toeplitz_scan_into

    def counting(*args):
        calls.append(args[1].shape)
        return original(*args)

    monkeypatch.setattr(scan_module, "_toeplitz_scan_into", counting)
    return calls


@pytest.mark.parametrize("length", [1024, 1037])  # whole chunks / a tail of leftover steps
@pytest.mark.parametrize("dtype", DOUBLE)
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_toeplitz_path_matches_loop(toeplitz_calls, length, dtype, with_h0, reverse):
    """Constant a (H, N, 1) against b (B, H, N, L): a broadcast over the batch inside the matmul."""
    a, b, h0 = make_inputs("const", length, dtype, with_h0, batch=(2, 3, 2))
    assert_matches_loop(a, b, h0, reverse, "torch", 1e-10)
    assert toeplitz_calls, "the constant-decay path was not taken"


@pytest.mark.parametrize("length", [512, 600])
@pytest.mark.parametrize("reverse", [False, True])
def test_toeplitz_path_recursing_on_chunk_ends(monkeypatch, toeplitz_calls, length, reverse):
    """With 2 chunks enough, the scan over chunk ends (L / 8 of them) takes the path again."""
    monkeypatch.setattr(scan_module, "_MIN_TOEPLITZ_CHUNKS", 2)
    a, b, h0 = make_inputs("const", length, torch.complex128, with_h0=True, batch=(1, 2, 3))
    torch.testing.assert_close(linear_scan(a, b, h0, reverse=reverse, backend="torch"),
                               reference_scan(a, b, h0, reverse), rtol=1e-12, atol=1e-12)
    assert len(toeplitz_calls) == 2 and toeplitz_calls[1][-1] == length // scan_module._TOEPLITZ_CHUNK_COMPLEX


@pytest.mark.parametrize("value", [0.0, 1.0, -1.0])
def test_toeplitz_path_edge_decays(toeplitz_calls, value):
    """a = 0 keeps b (exact zeros in the powers), a = +-1 is a (signed) running sum."""
    b = torch.randn(3, 2048, dtype=torch.float64)
    a = torch.full((3, 1), value, dtype=torch.float64)
    h = linear_scan(a, b, backend="torch")
    if value == 0.0:
        torch.testing.assert_close(h, b, rtol=0, atol=0)
    else:
        signs = value ** torch.arange(2048, dtype=torch.float64)  # h[t] = s^t * cumsum(s^-k b[k])
        torch.testing.assert_close(h, signs * torch.cumsum(b * signs, dim=-1), rtol=1e-12, atol=1e-10)
    assert toeplitz_calls


@pytest.mark.parametrize("length", [1, 5, 40])
@pytest.mark.parametrize("dtype", DOUBLE)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("a_kind", ["full", "const"])
def test_torch_backend_gradcheck(length, dtype, reverse, a_kind):
    a, b, h0 = make_inputs(a_kind, length, dtype, with_h0=True, batch=(2, 2, 1))
    inputs = tuple(t.requires_grad_() for t in (a, b, h0))
    assert torch.autograd.gradcheck(
        lambda a, b, h0: linear_scan(a, b, h0, reverse=reverse, backend="torch"), inputs
    )


def test_auto_is_torch_on_cpu():
    a, b, h0 = make_inputs("shared", 100, torch.complex64, with_h0=True)
    torch.testing.assert_close(linear_scan(a, b, h0), linear_scan(a, b, h0, backend="torch"), rtol=0, atol=0)


@pytest.mark.parametrize("a_kind", ["shared", "const"])
def test_s4_streaming_shapes(a_kind):
    """What the S4 layer calls: a (H, M, L) or (H, M, 1), b (B, H, M, L), h0 (B, H, M), complex64."""
    a, b, _ = make_inputs(a_kind, 513, torch.complex64, with_h0=False, batch=(3, 4, 8))
    h0 = torch.randn(3, 4, 8, dtype=torch.complex64)
    assert_matches_loop(a, b, h0, False, "auto", 2e-5)


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_precision_accumulates_in_fp32(half):
    # bf16 rounds 0.999 up to 1, so h[t] = t + 1, which bf16 accumulation would stall at 256;
    # fp16 keeps 0.999 and h approaches 865.
    length = 2000
    a = torch.full((2, length), 0.999).to(half)
    b = torch.ones(2, length, dtype=half)
    expected = reference_scan(a.float(), b.float())
    for backend in ("loop", "torch"):
        h = linear_scan(a, b, backend=backend)
        assert h.dtype == half
        torch.testing.assert_close(h.double(), expected, rtol=1e-2, atol=0)


def test_half_precision_gradients():
    a, b, h0 = make_inputs("shared", 50, torch.float32, with_h0=True)
    cotangent = torch.randn_like(b)
    h, grads = values_and_grads(a.bfloat16(), b.bfloat16(), h0.bfloat16(), False, "torch", cotangent.bfloat16())
    h_ref, grads_ref = values_and_grads(a.bfloat16().float(), b.bfloat16().float(), h0.bfloat16().float(), False,
                                        "loop", cotangent.bfloat16().float())
    assert h.dtype == torch.bfloat16 and all(g.dtype == torch.bfloat16 for g in grads)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g.float(), g_ref, rtol=3e-2, atol=3e-2)


def test_mixed_real_and_complex_inputs_promote():
    a, b, h0 = make_inputs("const", 64, torch.complex64, with_h0=True)
    a_real = a.abs()
    h = linear_scan(a_real, b, h0, backend="torch")
    assert h.dtype == torch.complex64
    torch.testing.assert_close(h, reference_scan(a_real, b, h0).to(torch.complex64), rtol=2e-5, atol=2e-5)


# ----------------------------------------------------------------------------- long sequences


def last_states_float64(a, b, h0, count):
    """h[t] for the last ``count`` steps, as sum_i (prod_{k=i+1..t} a_k) b_i + (prod_{k<=t} a_k) h0."""
    wide = torch.complex128 if b.is_complex() else torch.float64
    a, b, h0 = a.to(wide), b.to(wide), h0.to(wide)
    length = b.shape[-1]
    states = []
    for t in range(length - count, length):
        # suffix[i] = prod_{k=i+1..t} a_k for i = 0..t (empty product 1 at i = t)
        suffix = torch.cumprod(a[..., 1 : t + 1].flip(-1), dim=-1).flip(-1)
        suffix = torch.cat([suffix, torch.ones_like(suffix[..., :1])], dim=-1)
        states.append((suffix * b[..., : t + 1]).sum(-1) + suffix[..., 0] * a[..., 0] * h0)
    return torch.stack(states, dim=-1)


@pytest.mark.parametrize("dtype", SINGLE)
def test_torch_backend_million_steps_stays_finite_and_accurate(dtype):
    length = 1 << 20
    gen = torch.Generator().manual_seed(1)
    a = 0.5 + 0.4999 * torch.rand(2, length, generator=gen)  # |a| up to 0.9999
    a[:, ::4097] = 0.0  # resets: cumulative products hit exact zeros
    b = torch.randn(2, length, generator=gen)
    h0 = torch.randn(2, generator=gen)
    if dtype.is_complex:
        a = a * torch.exp(1j * torch.rand(2, length, generator=gen))
        b, h0 = b + 1j * torch.randn(2, length, generator=gen), h0 + 1j
    a, b, h0 = a.to(dtype), b.to(dtype), h0.to(dtype)
    h = linear_scan(a, b, h0, backend="torch")
    assert torch.isfinite(torch.view_as_real(h) if h.is_complex() else h).all()
    torch.testing.assert_close(h[..., -5:].to(last_states_float64(a, b, h0, 5).dtype),
                               last_states_float64(a, b, h0, 5), rtol=1e-4, atol=1e-4)
    # The reverse scan of the flipped sequence is the flipped forward scan.
    h_rev = linear_scan(a.flip(-1), b.flip(-1), h0, reverse=True, backend="torch")
    torch.testing.assert_close(h_rev.flip(-1), h, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", SINGLE)
def test_torch_backend_million_steps_constant_decay(dtype, toeplitz_calls):
    """The S4 case at length 2^20: a constant in time, |a| = 0.9999, one row at a = 0."""
    length = 1 << 20
    gen = torch.Generator().manual_seed(2)
    a = torch.tensor([[0.9999], [0.0], [0.37]])
    b = torch.randn(3, length, generator=gen)
    h0 = torch.randn(3, generator=gen)
    if dtype.is_complex:
        a = a * torch.exp(1j * torch.tensor([[0.01], [0.0], [2.0]]))
        b, h0 = b + 1j * torch.randn(3, length, generator=gen), h0 - 1j
    a, b, h0 = a.to(dtype), b.to(dtype), h0.to(dtype)
    h = linear_scan(a, b, h0, backend="torch")
    assert toeplitz_calls
    assert torch.isfinite(torch.view_as_real(h) if h.is_complex() else h).all()
    expected = last_states_float64(a.expand(3, 64), b[..., -64:], h[..., -65], 5)
    torch.testing.assert_close(h[..., -5:].to(expected.dtype), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(h[1], b[1], rtol=0, atol=0)


# ----------------------------------------------------------------------------- errors


def test_unknown_backend_lists_valid_ones():
    a, b, _ = make_inputs("const", 4, torch.float32, False)
    with pytest.raises(ValueError, match="'cuda'.*valid backends: auto, loop, torch, triton"):
        linear_scan(a, b, backend="cuda")


@pytest.mark.parametrize(
    "a_shape",
    [(3, 2, 5), (4, 2, 7), (1, 2, 3, 2, 7), (7,) * 0],
    ids=["time-axis", "batch-axis", "rank", "scalar"],
)
def test_a_not_broadcastable_to_b(a_shape):
    b = torch.randn(2, 3, 2, 7)
    with pytest.raises(ValueError, match=r"a of shape"):
        linear_scan(torch.rand(a_shape), b)


@pytest.mark.parametrize("h0_shape", [(3, 3), (4, 3, 2), (1, 2, 3, 2)], ids=["size", "batch", "rank"])
def test_h0_wrong_shape(h0_shape):
    b = torch.randn(2, 3, 2, 7)
    with pytest.raises(ValueError, match=r"h0 of shape"):
        linear_scan(torch.rand(3, 2, 1), b, torch.randn(h0_shape))


@pytest.mark.parametrize("which", ["a", "b", "h0"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_dtypes_rejected(which, dtype):
    tensors = {"a": torch.rand(3, 1), "b": torch.randn(3, 6), "h0": torch.randn(3)}
    tensors[which] = tensors[which].to(dtype)
    with pytest.raises(TypeError, match=f"{which} has dtype {dtype}"):
        linear_scan(tensors["a"], tensors["b"], tensors["h0"])


def test_empty_sequence_rejected():
    with pytest.raises(ValueError, match="L >= 1"):
        linear_scan(torch.rand(3, 1), torch.randn(3, 0))


@pytest.mark.skipif(not HAS_TRITON or HAS_CUDA or IN_INTERPRETER, reason="needs CPU tensors and no interpreter")
def test_triton_on_cpu_without_interpreter_raises():
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        linear_scan(torch.rand(3, 1), torch.randn(3, 6), backend="triton")


# ----------------------------------------------------------------------------- triton backend

# (length, dtype, a_kind, reverse, with_h0): every option appears, each L at least twice.
TRITON_CASES = [
    (1, torch.float32, "full", False, True),
    (1, torch.complex64, "const", True, False),
    (7, torch.float32, "shared", True, True),
    (7, torch.complex64, "full", False, True),
    (7, torch.float64, "const", False, False),
    (7, torch.complex128, "shared", True, True),
    (128, torch.float32, "const", False, True),
    (128, torch.complex64, "shared", True, True),
    (128, torch.float32, "full", True, False),
    (1000, torch.float32, "shared", False, True),
    (1000, torch.complex64, "const", True, True),
]


@needs_triton_kernel
@pytest.mark.parametrize("length,dtype,a_kind,reverse,with_h0", TRITON_CASES)
def test_triton_backend_matches_loop(length, dtype, a_kind, reverse, with_h0):
    a, b, h0 = make_inputs(a_kind, length, dtype, with_h0, batch=(2, 2, 1), device=TRITON_DEVICE)
    assert_matches_loop(a, b, h0, reverse, "triton", tolerance(dtype))


@needs_triton_kernel
@pytest.mark.parametrize("dtype,reverse", [(torch.float32, False), (torch.complex64, True)])
def test_triton_backend_length_4099(dtype, reverse):
    """4099 = 4 chunks of 1024 and 3 steps: carries cross chunk borders, the last chunk is ragged."""
    a, b, h0 = make_inputs("const", 4099, dtype, with_h0=True, batch=(1, 1, 1), device=TRITON_DEVICE)
    assert_matches_loop(a, b, h0, reverse, "triton", tolerance(dtype))


@needs_triton_kernel
@pytest.mark.parametrize("reverse", [False, True])
def test_triton_kernel_with_small_chunks(reverse):
    """Many carries: 200 steps in chunks of 16, complex, a shared across the batch."""
    from s4vision.ops._scan_triton import triton_linear_scan

    a, b, h0 = make_inputs("shared", 200, torch.complex64, with_h0=True, batch=(2, 1, 2), device=TRITON_DEVICE)
    h = triton_linear_scan(a[None], b, h0[None], reverse, chunk=16)
    torch.testing.assert_close(h.cpu(), reference_scan(a, b, h0, reverse).to(h.dtype).cpu(), rtol=2e-5, atol=2e-5)


@pytest.mark.skipif(not HAS_TRITON or HAS_CUDA or IN_INTERPRETER, reason="CUDA runs the Triton tests directly")
@pytest.mark.skipif(INTERPRETER_BROKEN, reason="Triton < 3.7's interpreter cannot run loops with NumPy >= 2.4")
def test_triton_kernel_under_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__, "-k", "triton_backend or triton_kernel_with"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]
