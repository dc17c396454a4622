"""HiPPO transition matrices, their normal-plus-low-rank (NPLR) form and diagonal initialisations.

Conventions follow the HiPPO and "How to Train Your HiPPO" papers: the continuous system is
``x'(t) = A x(t) + B u(t)`` (the minus sign is inside ``A``), with window length 1 for the
translated measures (LegT, FouT).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from ..errors import InvalidValueError

__all__ = ["MEASURES", "DIAGONAL_INITS", "hippo", "nplr", "NPLR", "dplr_init", "diagonal_init"]

MEASURES = ("legs", "legt", "lagt", "fout")
DIAGONAL_INITS = ("lin", "inv", "legs", "real")

# Rank of the low-rank correction that makes each measure's matrix normal.
_NPLR_RANK = {"legs": 1, "legt": 2, "lagt": 1, "fout": 1}


def _check_size(N: int) -> None:
    if not isinstance(N, int) or isinstance(N, bool) or N <= 0:
        raise InvalidValueError(f"state size N must be a positive integer, got {N!r}")


def _check_measure(measure: str) -> None:
    if measure not in MEASURES:
        raise InvalidValueError(f"unknown HiPPO measure {measure!r}; valid measures: {', '.join(MEASURES)}")


def hippo(measure: str, N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The HiPPO matrices ``A (N, N)`` and ``B (N,)`` in float64.

    - ``"legs"``: ``A[n, k] = -sqrt(2n+1) sqrt(2k+1)`` for ``n > k``, ``-(n+1)`` on the diagonal,
      0 above; ``B[n] = sqrt(2n+1)``.
    - ``"legt"``: ``A[n, k] = -sqrt(2n+1) sqrt(2k+1)`` for ``n >= k`` and
      ``-(-1)^(n-k) sqrt(2n+1) sqrt(2k+1)`` above; ``B[n] = sqrt(2n+1)``.
    - ``"lagt"``: ``A[n, k] = -1`` for ``n > k``, ``-1/2`` on the diagonal, 0 above; ``B[n] = 1``.
    - ``"fout"``: basis ordered ``[1, cos 2 pi t, sin 2 pi t, cos 4 pi t, ...]``; ``B = [2, 2 sqrt2,
      0, 2 sqrt2, 0, ...]`` and ``A = R - B B^T / 2`` with the rotation ``R[2m, 2m-1] = 2 pi m``,
      ``R[2m-1, 2m] = -2 pi m``.
    """
    _check_measure(measure)
    _check_size(N)
    n = torch.arange(N, dtype=torch.float64)
    row, col = n[:, None], n[None, :]
    r = torch.sqrt(2 * n + 1)
    if measure == "legs":
        A = -torch.outer(r, r) * (row > col) - torch.diag(n + 1)
        B = r.clone()
    elif measure == "legt":
        sign = torch.where(row >= col, torch.ones(()), (-1.0) ** (row - col))
        A = -torch.outer(r, r) * sign
        B = r.clone()
    elif measure == "lagt":
        A = -torch.tril(torch.ones(N, N, dtype=torch.float64), -1) - 0.5 * torch.eye(N, dtype=torch.float64)
        B = torch.ones(N, dtype=torch.float64)
    else:  # fout
        B = torch.zeros(N, dtype=torch.float64)
        B[0] = 2.0
        B[1::2] = 2.0 * math.sqrt(2.0)
        R = torch.zeros(N, N, dtype=torch.float64)
        for m in range(1, (N - 1) // 2 + 1):
            R[2 * m, 2 * m - 1] = 2 * math.pi * m
            R[2 * m - 1, 2 * m] = -2 * math.pi * m
        A = R - torch.outer(B, B) / 2
    return A, B


class NPLR(NamedTuple):
    """``A = V diag(Lambda) V^H - P^T P`` with ``V`` unitary.

    Shapes: ``Lambda (N,)`` complex128, ``P (rank, N)`` float64, ``B (N,)`` float64,
    ``V (N, N)`` complex128.
    """

    Lambda: torch.Tensor
    P: torch.Tensor
    B: torch.Tensor
    V: torch.Tensor

    def matrix(self) -> torch.Tensor:
        """Rebuild the (real) transition matrix ``A (N, N)``."""
        normal = self.V @ torch.diag(self.Lambda) @ self.V.conj().T
        return normal.real - self.P.T @ self.P


def _low_rank_factor(measure: str, N: int) -> torch.Tensor:
    n = torch.arange(N, dtype=torch.float64)
    if measure == "legs":
        return torch.sqrt(n + 0.5)[None]
    if measure == "legt":
        r = torch.sqrt(2 * n + 1)
        odd = (n % 2 == 1).to(torch.float64)
        return torch.stack([r * odd, r * (1 - odd)])
    if measure == "lagt":
        return torch.full((1, N), 0.5**0.5, dtype=torch.float64)
    return (hippo("fout", N)[1] / 2**0.5)[None]


def nplr(measure: str, N: int, rank: int = 1) -> NPLR:
    """Normal-plus-low-rank form of ``hippo(measure, N)[0]``.

    ``A + P^T P`` is normal (a multiple of the identity plus a skew-symmetric matrix), so it is
    diagonalised by a unitary ``V``. ``rank`` rows of ``P`` are returned (extra rows are zero);
    LegT needs ``rank >= 2``.
    """
    _check_measure(measure)
    _check_size(N)
    min_rank = _NPLR_RANK[measure]
    if not isinstance(rank, int) or rank < min_rank:
        raise InvalidValueError(f"measure {measure!r} needs a low-rank correction of rank >= {min_rank}, got rank={rank!r}")
    A, B = hippo(measure, N)
    P = _low_rank_factor(measure, N)
    S = A + P.T @ P
    shift = S.diagonal().mean()
    skew = S - shift * torch.eye(N, dtype=torch.float64)
    # i * skew is Hermitian, so eigh returns an exactly unitary V.
    w, V = torch.linalg.eigh(1j * skew.to(torch.complex128))
    Lambda = shift - 1j * w
    if rank > min_rank:
        P = torch.cat([P, P.new_zeros(rank - min_rank, N)])
    return NPLR(Lambda, P, B, V)


def dplr_init(measure: str, N: int, rank: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Diagonal-plus-low-rank parameters in the eigenbasis, keeping one of each conjugate pair.

    Returns ``Lambda (N//2,)``, ``P (rank, N//2)``, ``B (N//2,)``, all complex128, for the
    complex system of size ``N // 2`` whose real part (times 2) models the size-``N`` system.
    """
    if N % 2:
        raise InvalidValueError(f"DPLR kernels use conjugate pairs, so d_state must be even, got {N}")
    form = nplr(measure, N, rank)
    Vh = form.V.conj().T
    P = (Vh @ form.P.T.to(torch.complex128)).T
    B = Vh @ form.B.to(torch.complex128)
    keep = torch.argsort(form.Lambda.imag, descending=True)[: N // 2]
    return form.Lambda[keep], P[:, keep], B[keep]


def diagonal_init(init: str, N: int) -> torch.Tensor:
    """Diagonal state matrix of the S4D paper, ``N // 2`` complex modes (one per conjugate pair).

    ``"lin"``: ``-1/2 + i pi n``; ``"inv"``: ``-1/2 + i N/pi (N/(2n+1) - 1)``; ``"legs"``: the
    eigenvalues of the normal part of HiPPO-LegS; ``"real"``: ``-(n+1)``.
    """
    if init not in DIAGONAL_INITS:
        raise InvalidValueError(f"unknown diagonal init {init!r}; valid inits: {', '.join(DIAGONAL_INITS)}")
    _check_size(N)
    if N % 2:
        raise InvalidValueError(f"diagonal SSMs use conjugate pairs, so d_state must be even, got {N}")
    M = N // 2
    n = torch.arange(M, dtype=torch.float64)
    if init == "lin":
        return torch.complex(torch.full_like(n, -0.5), math.pi * n)
    if init == "inv":
        return torch.complex(torch.full_like(n, -0.5), N / math.pi * (N / (2 * n + 1) - 1))
    if init == "legs":
        return dplr_init("legs", N)[0]
    return torch.complex(-(n + 1), torch.zeros_like(n))
