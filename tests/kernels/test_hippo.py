"""HiPPO matrices checked against the property that defines them, not against their formulas.

HiPPO: ``c_n(t)`` is the projection of the input's history onto the basis function ``g_n`` of a
measure, and ``c' = A c + B u(t)`` (LegS: ``t c' = A c + B u(t)``). Here ``c(t)`` and ``c'(t)``
are computed by quadrature with bases built from ``numpy.polynomial``. Every basis below is a
function of the *age* ``s = t - x`` of a sample, orthonormal in ``ds`` on its support:

- LegT: ``s in [0, 1]``, ``g_n(s) = sqrt(2n+1) P_n(1 - 2s)``;
- FouT: ``s in [0, 1]``, ``[1, sqrt2 cos 2 pi s, sqrt2 sin 2 pi s, sqrt2 cos 4 pi s, ...]``;
- LagT: ``s >= 0``, ``g_n(s) = L_n(s) exp(-s/2)``;
- LegS: the history ``[0, t]`` rescaled to ``y = x / t in [0, 1]``, ``g_n(y) = sqrt(2n+1) P_n(2y - 1)``.

For the translated measures ``c(t) = int u(t - s) g(s) ds``, so ``c'(t)`` is the projection of
``u'``; for LegS, ``c(t) = int_0^1 u(t y) g(y) dy`` and ``c'(t) = int_0^1 y u'(t y) g(y) dy``.
"""
import functools
import math

import numpy as np
import pytest
import torch
from numpy.polynomial import laguerre, legendre

from s4vision.kernels import DIAGONAL_INITS, MEASURES, diagonal_init, dplr_init, hippo, nplr


def _legt_basis(N, s):
    return np.stack([math.sqrt(2 * n + 1) * legendre.Legendre.basis(n)(1 - 2 * s) for n in range(N)])


def _legs_basis(N, y):
    return np.stack([math.sqrt(2 * n + 1) * legendre.Legendre.basis(n)(2 * y - 1) for n in range(N)])


def _lagt_basis(N, s):
    return np.stack([laguerre.Laguerre.basis(n)(s) * np.exp(-s / 2) for n in range(N)])


def _fout_basis(N, s):
    rows = [np.ones_like(s)]
    for m in range(1, N // 2 + 1):
        rows += [math.sqrt(2) * np.cos(2 * math.pi * m * s), math.sqrt(2) * np.sin(2 * math.pi * m * s)]
    return np.stack(rows[:N])


# basis, length of the support integrated over, quadrature points (LagT: the tail beyond 120,
# ~exp(-60) L_n(120), is below 1e-11 for n <= 10)
_BASES = {"legt": (_legt_basis, 1.0, 200), "fout": (_fout_basis, 1.0, 200), "lagt": (_lagt_basis, 120.0, 600),
          "legs": (_legs_basis, 1.0, 200)}


def _project(measure, N, h):
    """``(N,)``: ``int g_n(s) h(s) ds`` over the measure's support (Gauss-Legendre quadrature)."""
    basis, span, points = _BASES[measure]
    x, w = legendre.leggauss(points)
    s, w = (x + 1) * span / 2, w * span / 2
    return basis(N, s) @ (w * h(s))


def _coefficients(measure, N, u, t):
    """``(N,)``: ``c(t)``, the coefficients of ``u``'s history at time ``t``."""
    return _project(measure, N, (lambda y: u(t * y)) if measure == "legs" else (lambda s: u(t - s)))


def _coefficient_derivative(measure, N, du, t):
    """``(N,)``: ``c'(t)``, the projection of ``u'`` (LegS: of ``y u'(t y)``)."""
    return _project(measure, N, (lambda y: y * du(t * y)) if measure == "legs" else (lambda s: du(t - s)))


def _samples(measure, N, u, du, times):
    """``c (T, N)``, ``u(t) (T,)`` and ``c' (T, N)`` (LegS: ``t c'``) at ``T = len(times)`` times."""
    c = np.array([_coefficients(measure, N, u, t) for t in times])
    dc = np.array([_coefficient_derivative(measure, N, du, t) * (t if measure == "legs" else 1.0) for t in times])
    return c, np.array([u(t) for t in times]), dc


def _ode_residual(A, B, samples):
    """``(T, N)``: ``A c + B u(t) - c'(t)`` (LegS: ``A c + B u(t) - t c'(t)``)."""
    c, u, dc = samples
    return c @ A.T + u[:, None] * B - dc


SMOOTH = (lambda x: np.sin(3 * x) + 0.5 * np.cos(x), lambda x: 3 * np.cos(3 * x) - 0.5 * np.sin(x))
TIMES = (0.3, 1.1, 2.7)


def _exact_input(measure, N):
    """An input ``(u, u')`` for which the measure's ODE holds exactly.

    LegS and LagT are exact for every input. LegT and FouT need the value ``u(t - 1)`` that
    leaves the window, which ``c`` does not hold: their derivations replace it by a
    reconstruction from ``c`` (see ``test_translated_measures_replace_the_dropped_sample``),
    which is exact for polynomials of degree < N (LegT) and for 1-periodic trigonometric
    polynomials of degree <= (N - 1) // 2 (FouT).
    """
    rng = np.random.default_rng(N)
    if measure == "legt":
        p = np.polynomial.Polynomial(rng.standard_normal(N), domain=[0, 2])
        return p, p.deriv()
    if measure == "fout":
        a, b = rng.standard_normal((2, (N - 1) // 2 + 1))
        w = 2 * np.pi * np.arange(len(a))
        u = lambda x: sum(a[m] * np.cos(w[m] * x) + b[m] * np.sin(w[m] * x) for m in range(len(a)))
        du = lambda x: sum(w[m] * (b[m] * np.cos(w[m] * x) - a[m] * np.sin(w[m] * x)) for m in range(len(a)))
        return u, du
    return SMOOTH


@functools.lru_cache(maxsize=None)
def _exact_samples(measure, N):
    times = (0.5, 2.0, 5.0) if measure == "legs" else TIMES
    return _samples(measure, N, *_exact_input(measure, N), times)


def _max_residual(measure, A, B):
    return np.abs(_ode_residual(A, B, _exact_samples(measure, len(B)))).max()


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("N", [1, 2, 7, 16])
def test_hippo_shapes_and_dtype(measure, N):
    A, B = hippo(measure, N)
    assert A.dtype == B.dtype == torch.float64 and A.shape == (N, N) and B.shape == (N,)


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("N", [1, 4, 8, 11])
def test_ode_is_the_derivative_of_the_projection(measure, N):
    """``A c + B u(t) = c'(t)`` for inputs on which the derivation is exact (``_exact_input``)."""
    A, B = (m.numpy() for m in hippo(measure, N))
    assert _max_residual(measure, A, B) < 1e-8


@pytest.mark.parametrize("measure", MEASURES)
def test_perturbed_matrices_break_the_projection(measure):
    """The check above pins every entry: changing any one entry of ``A`` or ``B`` fails it."""
    N = 5  # odd, so that FouT's exact inputs excite every basis function
    A, B = (m.numpy() for m in hippo(measure, N))
    for n in range(N):
        B_bad = B.copy()
        B_bad[n] += 0.05
        assert _max_residual(measure, A, B_bad) > 1e-6, ("B", n)
        for k in range(N):
            A_bad = A.copy()
            A_bad[n, k] += 0.05
            assert _max_residual(measure, A_bad, B) > 1e-6, ("A", n, k)
    flipped = A.copy()
    flipped[N - 1, N - 2] *= -1  # one sign
    assert _max_residual(measure, flipped, B) > 1e-6


def _dropped_sample_stand_in(measure, N, u, t):
    """What the derivation uses in place of ``u(t - 1)``, computed from ``c(t)`` and ``u(t)``.

    LegT: the reconstruction ``sum_k c_k g_k(1)`` at the window's old end. FouT: the window's
    two ends meet at the seam of the periodic basis, where the partial Fourier sum
    ``sum_k c_k g_k(0)`` tends to the mean of ``u(t)`` and ``u(t - 1)``, so ``u(t - 1)`` is
    replaced by twice that sum minus ``u(t)``.
    """
    basis = _BASES[measure][0]
    c = _coefficients(measure, N, u, t)
    if measure == "legt":
        return c @ basis(N, np.array([1.0]))[:, 0]
    return 2 * c @ basis(N, np.array([0.0]))[:, 0] - u(t)


# FouT with an odd N: for an even N the last cosine lacks its sine partner, whose coefficient
# its derivative needs, so that row is truncated as well.
@pytest.mark.parametrize("measure,N", [("legt", 4), ("legt", 9), ("fout", 9), ("fout", 33)])
def test_translated_measures_replace_the_dropped_sample(measure, N):
    """For any smooth input, ``A c + B u - c'`` is ``g(1) (u(t - 1) - stand-in)``: the ODE is the
    exact derivative except that the sample leaving the window is replaced by its stand-in."""
    A, B = (m.numpy() for m in hippo(measure, N))
    u, du = SMOOTH
    residual = _ode_residual(A, B, _samples(measure, N, u, du, TIMES))
    g_old = _BASES[measure][0](N, np.array([1.0]))[:, 0]
    error = np.array([u(t - 1) - _dropped_sample_stand_in(measure, N, u, t) for t in TIMES])
    assert np.abs(error).max() > 1e-6  # the input is not one of the exact cases
    np.testing.assert_allclose(residual, error[:, None] * g_old, atol=1e-9)


def test_translated_odes_converge_to_the_projection():
    """What the stand-in costs vanishes as N grows: ``|A c + B u - c'| / |g(1)|`` (the error of
    the stand-in) decays spectrally for LegT on an analytic input, and like ``1 / N`` for FouT
    (a partial Fourier sum at a jump)."""

    def error(measure, N):
        A, B = (m.numpy() for m in hippo(measure, N))
        residual = _ode_residual(A, B, _samples(measure, N, *SMOOTH, TIMES))
        return np.linalg.norm(residual, axis=1).max() / np.linalg.norm(_BASES[measure][0](N, np.array([1.0])))

    assert error("legt", 4) > 1e-3 and error("legt", 16) < 1e-9
    assert error("fout", 65) < error("fout", 17) / 3


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


def _legs_normal_spectrum(N):
    """``(N // 2,)``: eigenvalues with positive imaginary part of ``A + p p^T``, ``p_n = sqrt(n + 1/2)``,
    sorted by imaginary part (dense ``numpy.linalg.eigvals``)."""
    A, _ = hippo("legs", N)
    p = np.sqrt(np.arange(N) + 0.5)
    eig = np.linalg.eigvals(A.numpy() + np.outer(p, p))
    eig = eig[eig.imag > 0]
    return eig[np.argsort(eig.imag)]


def test_dplr_half_spectrum_matches_eigenvalues():
    N = 16
    Lambda, P, B = dplr_init("legs", N)
    by_freq = lambda z: z[np.argsort(z.imag)]
    np.testing.assert_allclose(by_freq(Lambda.numpy()), _legs_normal_spectrum(N), atol=1e-6)
    assert P.shape == (1, N // 2) and B.shape == (N // 2,)


@pytest.mark.parametrize("N", [2, 8, 64])
def test_diagonal_init_legs_is_the_normal_legs_spectrum(N):
    """``A + p p^T`` is ``-I/2`` plus a skew-symmetric matrix, so every mode has real part -1/2."""
    Lambda = diagonal_init("legs", N).numpy()
    assert Lambda.shape == (N // 2,)
    np.testing.assert_allclose(Lambda.real, -0.5, atol=1e-9)
    np.testing.assert_allclose(np.sort(Lambda.imag), _legs_normal_spectrum(N).imag, rtol=1e-7, atol=1e-9)


def test_diagonal_inits_closed_forms():
    N = 8
    n = np.arange(N // 2)
    np.testing.assert_allclose(diagonal_init("lin", N).numpy(), -0.5 + 1j * math.pi * n)
    np.testing.assert_allclose(diagonal_init("inv", N).numpy(), -0.5 + 1j * N / math.pi * (N / (2 * n + 1) - 1))
    np.testing.assert_allclose(diagonal_init("real", N).numpy(), -(n + 1.0))
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
