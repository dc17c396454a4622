import math

import pytest
import torch

import s4vision.kernels.ssm as ssm_module
from s4vision.kernels import S4DKernel, S4Kernel, centred_kernel, krylov, ssm_kernel


def _dense_continuous(gen):
    """Continuous ``A (H, M, M)``, ``B (H, M)``, ``C (c, H, M)`` rebuilt from the raw parameters."""
    cplx = lambda p: torch.view_as_complex(p.detach().double().contiguous())
    A = torch.complex(-torch.exp(gen.log_A_real.detach().double()), gen.A_imag.detach().double())
    A = torch.diag_embed(A)
    if isinstance(gen, S4Kernel):
        P = cplx(gen.P)
        A = A - torch.einsum("rhm,rhn->hmn", P, P.conj())
    return A, cplx(gen.B), cplx(gen.C)


def _kernel_by_matrix_powers(gen, L, rate):
    """``K[l] = 2 Re(C dA^l dB)`` with dense discretisation and explicit matrix powers."""
    A, B, C = _dense_continuous(gen)
    dt = torch.exp(gen.log_dt.detach().double()) * rate
    eye = torch.eye(A.shape[-1], dtype=A.dtype)
    dtA = dt[:, None, None] * A
    if gen.disc == "zoh":
        dA = torch.linalg.matrix_exp(dtA)
        dB = torch.linalg.inv(A) @ (dA - eye) @ B[..., None]
    else:
        inv = torch.linalg.inv(eye - dtA / 2)
        dA = inv @ (eye + dtA / 2)
        dB = inv @ (dt[:, None, None] * B[..., None])
    out = [2 * (C[..., None, :] @ torch.linalg.matrix_power(dA, l) @ dB)[..., 0, 0].real for l in range(L)]
    return torch.stack(out, -1)


@pytest.mark.parametrize("kind", ["s4d", "s4"])
@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("rate", [0.5, 1.0, 2.5])
def test_kernel_equals_dense_matrix_powers(kind, disc, rate):
    gen = ssm_kernel(kind, d_model=3, d_state=8, channels=2, disc=disc, dt_min=0.01, dt_max=0.3).double()
    with torch.no_grad():  # move away from the symmetric init so every parameter matters
        for p in gen.parameters():
            p.add_(0.05 * torch.randn_like(p))
    K = gen(37, rate)
    assert K.shape == (2, 3, 37) and K.dtype == torch.float64
    torch.testing.assert_close(K, _kernel_by_matrix_powers(gen, 37, rate), atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_dplr_krylov_method_matches_matrix_powers(disc):
    gen = S4Kernel(3, 8, channels=2, disc=disc, method="krylov").double()
    torch.testing.assert_close(gen(41, 0.7), _kernel_by_matrix_powers(gen, 41, 0.7), atol=1e-10, rtol=1e-8)


def test_dplr_methods_agree_on_long_kernels_in_fp32():
    cauchy = S4Kernel(8, 64, init="legs")
    krylov_gen = S4Kernel(8, 64, init="legs", method="krylov")
    krylov_gen.load_state_dict(cauchy.state_dict())
    with torch.no_grad():
        a, b = cauchy(16384), krylov_gen(16384)
    assert ((a - b).norm() / a.norm()) < 1e-4


@pytest.mark.parametrize("init,rank", [("legt", 2), ("lagt", 1), ("fout", 1), ("legs", 3)])
def test_dplr_kernel_other_measures_and_ranks(init, rank):
    gen = ssm_kernel("s4", d_model=2, d_state=8, channels=1, init=init, dplr_rank=rank).double()
    with torch.no_grad():
        gen.P.add_(0.1 * torch.randn_like(gen.P))
    torch.testing.assert_close(gen(29, 1.3), _kernel_by_matrix_powers(gen, 29, 1.3), atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("init", ["lin", "inv", "legs", "real"])
def test_s4d_kernel_equals_unrolled_recurrence(init):
    gen = S4DKernel(2, 6, init=init, disc="zoh").double()
    ssm = gen.discrete(1.0)
    L = 25
    K = gen(L)
    for h in range(2):
        for m_out in range(1):
            x = torch.zeros(3, dtype=torch.complex128)
            ref = []
            for t in range(L):
                u = 1.0 if t == 0 else 0.0  # impulse response of the recurrence
                x = ssm.dA[h] * x + ssm.dB[h] * u
                ref.append(2 * (ssm.C[0, h] * x).sum().real)
            torch.testing.assert_close(K[0, h], torch.stack(ref), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("kind", ["s4d", "s4"])
def test_rate_resamples_the_continuous_kernel(kind):
    """A ZOH kernel value is the integral of the continuous kernel over its cell, so halving the
    rate splits every coarse cell into two fine ones: ``K_coarse[l] = K_fine[2l] + K_fine[2l+1]``."""
    gen = ssm_kernel(kind, 4, 16, disc="zoh", dt_min=1e-3, dt_max=1e-1).double()
    coarse = gen(50, rate=1.0)
    fine = gen(100, rate=0.5)
    torch.testing.assert_close(fine[..., ::2] + fine[..., 1::2], coarse, atol=1e-12, rtol=1e-9)


@pytest.mark.parametrize("kind", ["s4d", "s4"])
def test_chunked_generation_matches_one_shot(kind, monkeypatch):
    gen = ssm_kernel(kind, 3, 8).double()
    full = gen(200)
    monkeypatch.setattr(ssm_module, "_CHUNK_ELEMENTS", 3 * 4 * 7)  # 7 positions per chunk
    gen._cache.clear()
    torch.testing.assert_close(gen(200), full, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("kind", ["s4d", "s4"])
def test_long_kernel_is_finite(kind):
    gen = ssm_kernel(kind, 4, 16)
    K = gen(65536)
    assert K.shape == (1, 4, 65536) and torch.isfinite(K).all()


@pytest.mark.parametrize("kind", ["s4d", "s4"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_kernel_is_fp32_under_autocast(kind, dtype):
    gen = ssm_kernel(kind, 4, 8)
    with torch.autocast("cpu", dtype=dtype):
        K = gen(64)
    assert K.dtype == torch.float32
    torch.testing.assert_close(K, gen(64))


def test_bandlimit_is_defined_on_the_reference_grid():
    """A mode's frequency is counted per reference sample (dt at rate 1): the same modes are kept
    on every finer grid, and a grid coarser than 1 / bandlimit also drops what it cannot resolve."""
    gen = S4DKernel(4, 64, init="lin", bandlimit=0.2)
    freq = gen.dt(1.0)[:, None] * gen.diagonal_A().imag.abs() / (2 * math.pi)  # cycles per reference sample
    for rate in (1.0, 0.5, 0.1, 4.9):
        assert torch.equal(gen.mode_mask(rate).bool(), freq < 0.1)
    assert torch.equal(gen.mode_mask(10.0).bool(), freq < 1 / (2 * 10.0))
    assert 0 < gen.mode_mask(1.0).sum() < gen.mode_mask(1.0).numel()


@pytest.mark.parametrize("kernel", ["s4d", "s4"])
@pytest.mark.parametrize("rate", [0.5, 1.0, 8.0])
def test_bandlimited_kernel_is_the_kernel_without_those_modes(kernel, rate):
    """Reference: the same generator with no band limit and the dropped modes' C zeroed by hand."""
    gen = ssm_kernel(kernel, 3, 16, 2, bandlimit=0.3, disc="zoh", dt_min=0.1, dt_max=1.0).double()
    free = ssm_kernel(kernel, 3, 16, 2, disc="zoh", dt_min=0.1, dt_max=1.0).double()
    free.load_state_dict(gen.state_dict())
    freq = gen.dt(1.0)[:, None] * gen.diagonal_A().imag.abs() / (2 * math.pi)
    keep = freq < min(0.3, 1 / rate) / 2
    with torch.no_grad():
        free.C.mul_(keep[None, :, :, None].to(free.C.dtype))
    torch.testing.assert_close(gen(40, rate), free(40, rate))
    torch.testing.assert_close(gen.centred(20, rate), free.centred(20, rate))
    unlimited = ssm_kernel(kernel, 3, 16, 2, disc="zoh").double()
    unlimited.load_state_dict(gen.state_dict())
    assert not torch.allclose(gen(40, rate), unlimited(40, rate))  # the band limit did remove modes


def test_krylov_dense_matches_powers():
    dA = torch.randn(2, 4, 4, dtype=torch.complex128) * 0.3
    v = torch.randn(2, 4, dtype=torch.complex128)
    out = krylov(dA, v, 11)
    ref = torch.stack([(torch.linalg.matrix_power(dA, l) @ v[..., None])[..., 0] for l in range(11)], -1)
    torch.testing.assert_close(out, ref)


def test_centred_kernel_layout():
    f = torch.tensor([1.0, 2.0, 3.0])
    b = torch.tensor([10.0, 20.0, 30.0])
    assert centred_kernel(f, b).tolist() == [30.0, 20.0, 11.0, 2.0, 3.0]


def test_cached_in_eval_and_recomputed_after_update():
    gen = S4DKernel(2, 8).eval()
    with torch.no_grad():
        k1 = gen(16)
        assert gen(16) is k1
        gen.log_dt.add_(0.1)
        k2 = gen(16)
    assert not torch.equal(k1, k2)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(kernel="s5"), "unknown SSM kernel 's5'"),
        (dict(kernel="s4d", d_model=0), "d_model must be a positive integer"),
        (dict(kernel="s4d", d_state=7), "even"),
        (dict(kernel="s4d", disc="euler"), "unknown discretization 'euler'"),
        (dict(kernel="s4", init="legz"), "unknown S4 init measure 'legz'"),
        (dict(kernel="s4d", init="legz"), "unknown S4D init 'legz'"),
        (dict(kernel="s4d", dt_min=0.1, dt_max=0.01), "dt_min"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = dict(kernel="s4d", d_model=2, d_state=8) | kwargs
    with pytest.raises(ValueError, match=match):
        ssm_kernel(args.pop("kernel"), **args)


@pytest.mark.parametrize("L,rate,match", [(0, 1.0, "positive integer"), (8, 0.0, "rate"), (8, float("nan"), "rate")])
def test_bad_lengths_and_rates(L, rate, match):
    with pytest.raises(ValueError, match=match):
        S4DKernel(2, 8)(L, rate)


# -- fused cell kernels (the fast path S4ND uses) against the plain half-step kernels -------------


def _half_step_cells(gen, L, rate):
    """The plain path: ``2L`` causal taps at half the step (autograd through the generator's
    own ``_kernel``), paired into cells as :func:`centred_kernel` does with ``half_step=True``."""
    from s4vision.kernels.ssm import SSMKernelBase

    return SSMKernelBase._cells(gen, L, rate)

def _assert_fused_matches_plain(gens, lengths, rates, grad_tol=dict(atol=1e-12, rtol=1e-9)):
    """``centred_kernels`` (one fused node) equals each generator's own half-step cells, values and
    parameter gradients under random output weights."""
    from s4vision.kernels.ssm import centred_kernels

    fused = centred_kernels(gens, lengths, rates, bidirectional=None)
    plain = [_half_step_cells(g, L, r) for g, L, r in zip(gens, lengths, rates)]
    weights = [torch.randn_like(k) for k in plain]
    params = [p for g in gens for p in g.parameters()]
    got = torch.autograd.grad(sum((w * k).sum() for w, k in zip(weights, fused)), params)
    ref = torch.autograd.grad(sum((w * k).sum() for w, k in zip(weights, plain)), params)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-9)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, **grad_tol)



@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("bandlimit", [None, 0.5])
@pytest.mark.parametrize("lengths,rates", [((9, 9), (1.0, 1.0)), ((6, 11), (0.7, 2.0)), ((1, 4), (1.0, 0.3))])
def test_fused_cells_match_half_step_kernels_with_gradients(disc, bandlimit, lengths, rates):
    gens = [S4DKernel(3 + a, 16, channels=2, disc=disc, bandlimit=bandlimit, dt_min=0.1, dt_max=1.0).double()
            for a in range(2)]
    with torch.no_grad():
        for g in gens:
            for p in g.parameters():
                p.add_(0.05 * torch.randn_like(p))
    if bandlimit is not None:  # some modes are dropped for every feature, others only for some
        assert 0 < sum(g.mode_mask(r).sum() for g, r in zip(gens, rates)) < sum(g.mode_mask(r).numel() for g, r in zip(gens, rates))
    _assert_fused_matches_plain(gens, lengths, rates)


@pytest.mark.parametrize("L", [1, 2, 3, 5, 12])
def test_fused_zoh_cells_gradcheck(L):
    """The hand-written backward of the fused ZOH cells against finite differences, with a band
    limit that masks some modes and drops others everywhere, at lengths with no, one and several
    doubling steps of the power table."""
    from s4vision.kernels.ssm import _ZOHCells

    gens = [S4DKernel(2, 8, channels=2, bandlimit=0.5).double() for _ in range(2)]
    with torch.no_grad():  # S4D-lin modes m have frequency dt m / 2: kept while dt m < 0.5
        gens[0].log_dt.copy_(torch.tensor([0.3, 0.6]).log())
        gens[1].log_dt.copy_(torch.tensor([0.2, 0.9]).log())
    rates = (1.0, 0.6)
    scale = torch.cat([torch.full((2,), r / 2, dtype=torch.float64) for r in rates])
    mask = torch.cat([g.mode_mask(r) for g, r in zip(gens, rates)])
    keep = mask.any(0)
    assert not keep.all() and not mask[:, keep].all()
    index = keep.nonzero()[:, 0]
    inputs = [p.detach().clone().requires_grad_() for g in gens for p in (g.log_dt, g.log_A_real, g.A_imag, g.B, g.C)]
    assert torch.autograd.gradcheck(lambda *p: _ZOHCells.apply(scale, mask, index, L, *p), inputs)


@pytest.mark.device
@pytest.mark.parametrize("kind", ["s4d", "s4"])
def test_centred_kernels_on_the_test_device(device, kind):
    """Kernels and their gradients on the test device (float32) against float64 on the CPU."""
    from s4vision.kernels.ssm import centred_kernels

    gens = [ssm_kernel(kind, 4, 16, 2, disc="zoh", bandlimit=1.0, dt_min=0.1, dt_max=1.0).double() for _ in range(2)]
    on_device = [ssm_kernel(kind, 4, 16, 2, disc="zoh", bandlimit=1.0).to(device) for _ in range(2)]
    for a, b in zip(on_device, gens):
        a.load_state_dict({k: v.float() for k, v in b.state_dict().items()})
    lengths, rates = (9, 14), (1.0, 0.5)
    got = centred_kernels(on_device, lengths, rates)
    ref = centred_kernels(gens, lengths, rates)
    weights = [torch.randn_like(r) for r in ref]
    grads = torch.autograd.grad(sum((w.float().to(device) * k).sum() for w, k in zip(weights, got)),
                                [p for g in on_device for p in g.parameters()])
    ref_grads = torch.autograd.grad(sum((w * k).sum() for w, k in zip(weights, ref)), [p for g in gens for p in g.parameters()])
    for a, b in zip(got, ref):
        assert a.device.type == device.type
        torch.testing.assert_close(a.double().cpu(), b, atol=1e-5, rtol=1e-4)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a.double().cpu(), b, atol=1e-4, rtol=1e-3)


def test_expm_matches_matrix_exp():
    """The scaling-and-squaring Taylor exponential against torch's, in both precisions and at
    norms that need several squarings."""
    from s4vision.kernels.ssm import _expm

    for dtype, tol in ((torch.complex128, 1e-12), (torch.complex64, 2e-5)):
        for scale in (0.1, 3.0, 60.0):
            X = torch.randn(4, 9, 9, dtype=torch.complex128) * scale / 3
            ref = torch.linalg.matrix_exp(X)
            got = _expm(X.to(dtype)).to(torch.complex128)
            assert ((got - ref).norm() / ref.norm()) < tol


@pytest.mark.parametrize("dtype,tol", [(torch.complex128, 1e-12), (torch.complex64, 5e-6)])
def test_expm_of_non_normal_matrices(dtype, tol):
    """Matrices whose 1-norm far exceeds their powers' growth (a HiPPO-LegS generator, and a
    large strictly lower-triangular part over a small diagonal): the squarings the norm asks for
    but the powers do not are folded into the Taylor coefficients; values and gradients against
    torch.linalg.matrix_exp in float64."""
    from s4vision.kernels.hippo import hippo
    from s4vision.kernels.ssm import _expm

    A, _ = hippo("legs", 32)
    nilpotent = torch.randn(3, 12, 12, dtype=torch.float64).tril(-1) * 40 + torch.diag_embed(torch.rand(3, 12, dtype=torch.float64))
    for X in (torch.as_tensor(A, dtype=torch.float64)[None] * torch.tensor([0.05, 0.5, 2.0], dtype=torch.float64)[:, None, None],
              nilpotent):
        X = X.to(torch.complex128).requires_grad_()
        ref = torch.linalg.matrix_exp(X)
        weight = torch.randn_like(ref)
        (ref_grad,) = torch.autograd.grad((ref * weight.conj()).real.sum(), X)
        Xd = X.detach().to(dtype).requires_grad_()
        got = _expm(Xd)
        (grad,) = torch.autograd.grad((got * weight.to(dtype).conj()).real.sum(), Xd)
        assert ((got.to(torch.complex128) - ref).norm() / ref.norm()) < tol
        assert ((grad.to(torch.complex128) - ref_grad).norm() / ref_grad.norm()) < tol * 10


def test_direct_and_split_vandermonde_agree_with_gradients(monkeypatch):
    """The direct product (hand-written backward) against the sqrt(L)-split one (autograd)."""
    from s4vision.kernels.ssm import vandermonde_kernel

    CB = torch.randn(2, 3, 5, dtype=torch.complex128, requires_grad=True)
    log_dA = torch.complex(-torch.rand(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)).requires_grad_()
    w = torch.randn(2, 3, 40, dtype=torch.float64)
    direct = vandermonde_kernel(CB, log_dA, 40)
    g_direct = torch.autograd.grad((direct * w).sum(), [CB, log_dA])
    monkeypatch.setattr(ssm_module, "_DIRECT_MAX_TAPS", 0)
    split = vandermonde_kernel(CB, log_dA, 40)
    assert split.grad_fn.name() != direct.grad_fn.name()
    g_split = torch.autograd.grad((split * w).sum(), [CB, log_dA])
    torch.testing.assert_close(direct, split)
    for a, b in zip(g_direct, g_split):
        torch.testing.assert_close(a, b)
    powers = torch.exp(log_dA[..., None] * torch.arange(40, dtype=torch.float64))  # independent reference
    torch.testing.assert_close(direct, 2 * torch.einsum("chm,hml->chl", CB, powers).real)


@pytest.mark.parametrize("disc,method", [("zoh", "cauchy"), ("bilinear", "krylov")])
def test_fused_dplr_cells_match_half_step_kernels_with_gradients(disc, method):
    """Dense (DPLR) generators of two axes in one exponential and one Krylov product of dA^2,
    against pairing 2L half-step taps of each, values and gradients."""
    gens = [S4Kernel(3, 8, channels=2, disc=disc, method=method, bandlimit=0.5, dt_min=0.05, dt_max=0.5).double()
            for _ in range(2)]
    with torch.no_grad():
        for g in gens:
            g.P.add_(0.1 * torch.randn_like(g.P))
    lengths, rates = (7, 12), (1.0, 0.4)
    _assert_fused_matches_plain(gens, lengths, rates, grad_tol=dict(atol=1e-10, rtol=1e-8))


@pytest.mark.parametrize("J", [1, 2, 3, 7, 8, 9, 55, 223])
def test_power_table_is_accurate_in_fp32(J):
    """Powers by doubling against exp(j log z) in float64: within a few fp32 roundings per
    doubling at every length (no error growth with j * |log z|, which exp(j log z) in fp32 has),
    for fast-rotating, slowly decaying modes."""
    from s4vision.kernels.ssm import _doubling_factors, _doubling_levels, _power_table

    log_z = torch.complex(-torch.rand(6, 16, dtype=torch.float64) * 0.05, torch.randn(6, 16, dtype=torch.float64) * 3)
    z32 = log_z.to(torch.complex64)
    got = _power_table(_doubling_factors(z32, _doubling_levels(J)), J)
    assert got.shape == (J, 6, 16) and got.dtype == torch.complex64
    # the fp32 rounding of log z itself moves z^j by up to j * |log z| * eps: compare to the
    # exact powers of the rounded log z, which is what the table claims to compute
    rounded = log_z.to(torch.complex64).to(torch.complex128)
    exact = torch.exp(rounded * torch.arange(J, dtype=torch.float64)[:, None, None])
    eps = torch.finfo(torch.float32).eps
    assert (got.to(torch.complex128) - exact).abs().max() <= 4 * max(1, J).bit_length() * eps


@pytest.mark.parametrize("J", [1, 6, 13])
def test_direct_vandermonde_gradcheck(J):
    """The hand-written backward of the direct Vandermonde product against finite differences."""
    from s4vision.kernels.ssm import _DirectVandermonde

    W = torch.randn(2, 3, 4, dtype=torch.complex128, requires_grad=True)
    log_z = torch.complex(-torch.rand(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda w, z: _DirectVandermonde.apply(w, z, J), (W, log_z))
