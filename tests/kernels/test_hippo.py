import math

import numpy as np
import pytest
import torch

from s4vision.kernels import DIAGONAL_INITS, MEASURES, diagonal_init, dplr_init, hippo, nplr


def _closed_form(measure, N):
    """Element-by-element formulas from the HiPPO papers, written independently of the library."""
    A = np.zeros((N, N))
    B = np.zeros(N)
    for n in range(N):
        for k in range(N):
            if measure == "legs":
                A[n, k] = -math.sqrt(2 * n + 1) * math.sqrt(2 * k + 1) if n > k else (-(n + 1) if n == k else 0)
            elif measure == "legt":
                sign = 1.0 if n >= k else (-1.0) ** (n - k)
                A[n, k] = -sign * math.sqrt((2 * n + 1) * (2 * k + 1))
            elif measure == "lagt":
                A[n, k] = -1.0 if n > k else (-0.5 if n == k else 0.0)
        if measure in ("legs", "legt"):
            B[n] = math.sqrt(2 * n + 1)
        elif measure == "lagt":
            B[n] = 1.0
    if measure == "fout":
        B[0] = 2
        for n in range(1, N, 2):
            B[n] = 2 * math.sqrt(2)
        for n in range(N):
            for k in range(N):
                A[n, k] = -B[n] * B[k] / 2
                m = (n + 1) // 2
                if n % 2 == 0 and n > 0 and k == n - 1:
                    A[n, k] += 2 * math.pi * m
                if n % 2 == 1 and k == n + 1:
                    A[n, k] -= 2 * math.pi * ((k + 1) // 2)
    return A, B


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("N", [1, 2, 7, 16])
def test_hippo_closed_form(measure, N):
    A, B = hippo(measure, N)
    assert A.dtype == torch.float64 and A.shape == (N, N) and B.shape == (N,)
    A_ref, B_ref = _closed_form(measure, N)
    np.testing.assert_allclose(A.numpy(), A_ref, atol=1e-12)
    np.testing.assert_allclose(B.numpy(), B_ref, atol=1e-12)


def test_legs_tracks_legendre_projection():
    """LegS memory: c(t) are the scaled-Legendre coefficients of f on [0, t] (HiPPO Thm. 2)."""
    N = 6
    A, B = (m.numpy() for m in hippo("legs", N))
    f = lambda t: 1.0 + 2.0 * t - 3.0 * t**2 + 0.5 * t**3  # degree < N: projection is exact

    def projection(t):
        s, w = np.polynomial.legendre.leggauss(32)
        x = (s + 1) / 2
        return np.array([
            0.5 * np.sum(w * f(t * x) * math.sqrt(2 * n + 1) * np.polynomial.legendre.Legendre.basis(n)(s))
            for n in range(N)
        ])

    # dc/dt = (A c + B f) / t; in tau = log t it is autonomous up to f. RK4 from t0 = 1e-3.
    tau0, tau1, steps = math.log(1e-3), math.log(2.0), 4000
    h = (tau1 - tau0) / steps
    c = projection(1e-3)
    rhs = lambda tau, c: A @ c + B * f(math.exp(tau))
    tau = tau0
    for _ in range(steps):
        k1 = rhs(tau, c)
        k2 = rhs(tau + h / 2, c + h / 2 * k1)
        k3 = rhs(tau + h / 2, c + h / 2 * k2)
        k4 = rhs(tau + h, c + h * k3)
        c = c + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        tau += h
    np.testing.assert_allclose(c, projection(2.0), atol=1e-6)


@pytest.mark.parametrize("measure,rank", [("legs", 1), ("legs", 2), ("legt", 2), ("lagt", 1), ("fout", 1)])
@pytest.mark.parametrize("N", [4, 9, 32])
def test_nplr_rebuilds_A(measure, rank, N):
    form = nplr(measure, N, rank)
    A, B = hippo(measure, N)
    eye = torch.eye(N, dtype=torch.complex128)
    torch.testing.assert_close(form.V.conj().T @ form.V, eye, atol=1e-10, rtol=0)
    assert form.P.shape == (rank, N)
    torch.testing.assert_close(form.matrix(), A, atol=1e-9, rtol=0)
    torch.testing.assert_close(form.B, B)


def test_nplr_rank_too_small_for_legt():
    with pytest.raises(ValueError, match="rank >= 2"):
        nplr("legt", 8, rank=1)


def test_dplr_half_spectrum_matches_eigenvalues():
    N = 16
    Lambda, P, B = dplr_init("legs", N)
    A, _ = hippo("legs", N)
    normal = A + torch.outer(torch.sqrt(torch.arange(N) + 0.5), torch.sqrt(torch.arange(N) + 0.5)).double()
    eig = np.linalg.eigvals(normal.numpy())
    by_freq = lambda z: z[np.argsort(z.imag)]
    np.testing.assert_allclose(by_freq(Lambda.numpy()), by_freq(eig[eig.imag > 0]), atol=1e-6)
    assert P.shape == (1, N // 2) and B.shape == (N // 2,)


def test_diagonal_inits_closed_forms():
    N = 8
    n = np.arange(N // 2)
    np.testing.assert_allclose(diagonal_init("lin", N).numpy(), -0.5 + 1j * math.pi * n)
    np.testing.assert_allclose(diagonal_init("inv", N).numpy(), -0.5 + 1j * N / math.pi * (N / (2 * n + 1) - 1))
    np.testing.assert_allclose(diagonal_init("real", N).numpy(), -(n + 1.0))
    np.testing.assert_allclose(diagonal_init("legs", N).numpy(), dplr_init("legs", N)[0].numpy())
    for init in DIAGONAL_INITS:
        assert (diagonal_init(init, N).real < 0).all()


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: hippo("legx", 4), "unknown HiPPO measure 'legx'"),
        (lambda: hippo("legs", 0), "positive integer"),
        (lambda: nplr("legs", -3), "positive integer"),
        (lambda: diagonal_init("foo", 8), "unknown diagonal init 'foo'"),
        (lambda: diagonal_init("lin", 7), "even"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
