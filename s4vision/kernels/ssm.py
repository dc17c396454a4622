"""1D state-space kernel generators: S4D (diagonal) and S4 (diagonal plus low rank).

A generator holds the continuous parameters ``(log_dt, A, B, C)`` of ``H`` independent SSMs
with ``M = d_state // 2`` complex modes each (one mode per conjugate pair, output ``2 Re(C x)``)
and produces

- ``gen(L, rate)``: the real causal convolution kernel ``K (channels, H, L)`` with
  ``K[..., l] = 2 Re(C dA^l dB)``, where ``dA, dB`` discretise ``A, B`` with step ``dt * rate``;
- ``gen.centred(L, rate, bidirectional)``: the cell-centred kernel ``(..., H, 2L - 1)`` of a
  layer whose samples stand for cells of a continuous signal (S4ND, bidirectional S4);
- ``gen.discrete(rate)``: the :class:`DiscreteSSM` ``(dA, dB, C)`` used by the recurrent view.

``rate`` is the sampling step relative to the reference grid the parameters were defined on
(:mod:`s4vision.sampling`): ``dt`` is the step per *reference* sample. The band limit is
defined on that grid too (see :meth:`SSMKernelBase.mode_mask`), so a layer keeps the same modes
at every resolution.

Both views describe the same complex system of size ``M``, so stepping the recurrence
reproduces the convolution exactly. Parameters are stored as real tensors (complex values as
trailing ``(..., 2)`` pairs) and kernels are computed in fp32 (fp64 for a double module) even
under autocast.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import check_choice, check_optional, check_positive_int, check_positive_number
from ..sampling import check_rate
from .cache import EvalKernelCache
from .hippo import DIAGONAL_INITS, MEASURES, diagonal_init, dplr_init
from ..errors import InvalidValueError

__all__ = [
    "DiscreteSSM",
    "SSMKernelBase",
    "S4DKernel",
    "S4Kernel",
    "KERNELS",
    "ssm_kernel",
    "centred_kernel",
    "krylov",
    "vandermonde_kernel",
    "dense_kernel",
    "ssm_parameter_names",
]

DISCRETIZATIONS = ("zoh", "bilinear")
# Largest number of complex elements materialised at once by the Vandermonde / Cauchy sums.
_CHUNK_ELEMENTS = 1 << 22


@dataclass
class DiscreteSSM:
    """A discrete complex SSM ``x_t = dA x_{t-1} + dB u_t``, ``y_t = 2 Re(C x_t)``.

    ``dA`` is ``(H, M)`` (diagonal) or ``(H, M, M)`` (dense); ``dB (H, M)``; ``C (channels, H, M)``.
    """

    dA: torch.Tensor
    dB: torch.Tensor
    C: torch.Tensor

    @property
    def diagonal(self) -> bool:
        return self.dA.ndim == 2

    def power(self, n: int) -> torch.Tensor:
        """``dA ** n``: ``(H, M)`` or ``(H, M, M)``."""
        return self.dA**n if self.diagonal else torch.linalg.matrix_power(self.dA, n)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``dA x`` for states ``x (B, H, M)``."""
        return self.dA * x if self.diagonal else torch.einsum("hmn,bhn->bhm", self.dA, x)


def krylov(dA: torch.Tensor, v: torch.Tensor, L: int) -> torch.Tensor:
    """``[v, dA v, dA^2 v, ..., dA^(L-1) v]`` stacked on a new last axis: ``(..., H, M, L)``.

    ``dA`` is ``(H, M)`` (diagonal) or ``(H, M, M)``; ``v (..., H, M)``. The dense case doubles the
    sequence length per matrix product, ``log2(L)`` products in all.
    """
    if dA.ndim == 2:
        steps = torch.arange(L, device=v.device, dtype=v.real.dtype)
        return v[..., None] * torch.exp(torch.log(dA)[..., None] * steps)
    out = v[..., None]
    power = dA
    while out.shape[-1] < L:
        out = torch.cat([out, torch.einsum("hmn,...hnl->...hml", power, out)], dim=-1)
        power = power @ power
    return out[..., :L]


def centred_kernel(k_fwd: torch.Tensor, k_bwd: torch.Tensor, *, half_step: bool = False) -> torch.Tensor:
    """Bidirectional kernel ``(..., 2L - 1)`` centred on index ``L - 1`` from two causal halves.

    ``k_fwd`` acts causally (``k_fwd[j]`` weights ``u[t - j]``), ``k_bwd`` anti-causally
    (``k_bwd[j]`` weights ``u[t + j]``).

    ``half_step=False``: the halves are ``(..., L)`` kernels at the output step and both contain
    the origin sample, which is their sum (the usual bidirectional S4 kernel).

    ``half_step=True``: the halves are sampled at *half* the output step ``h`` (a generator
    called with ``2L`` samples at ``rate / 2``), ``(..., 2L - 1)`` or longer. A ZOH kernel tap
    ``k[l]`` integrates the continuous kernel over ``[l h, (l + 1) h]``, half a sample off the
    cell ``[(m - 1/2) h, (m + 1/2) h]`` that tap ``m`` of a convolution between cell-centred
    samples should cover. At half step two taps tile that cell exactly, ``k[2m - 1] + k[2m]``,
    and the origin cell is the first half-cell of each side, ``k_fwd[0] + k_bwd[0]``. This is
    what makes the kernels of one layer agree across resolutions.
    """
    if k_fwd.shape != k_bwd.shape:
        raise InvalidValueError(f"kernel halves must have the same shape, got {tuple(k_fwd.shape)} and {tuple(k_bwd.shape)}")
    if not half_step:
        origin = (k_fwd[..., :1] + k_bwd[..., :1])
        return torch.cat([k_bwd[..., 1:].flip(-1), origin, k_fwd[..., 1:]], dim=-1)
    L = (k_fwd.shape[-1] + 1) // 2

    def cells(k: torch.Tensor) -> torch.Tensor:  # taps m = 1 .. L-1
        return k[..., 1:2 * L - 1].unflatten(-1, (L - 1, 2)).sum(-1)

    origin = k_fwd[..., :1] + k_bwd[..., :1]
    return torch.cat([cells(k_bwd).flip(-1), origin, cells(k_fwd)], dim=-1)


def _as_real(z: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(z.to(torch.complex64)).clone()


def _complex(p: torch.Tensor) -> torch.Tensor:
    return torch.view_as_complex(p.contiguous())


class SSMKernelBase(nn.Module):
    """Shared parameters and bookkeeping of the SSM kernel generators.

    Args:
        d_model: number of independent SSMs ``H``.
        d_state: real state size ``N`` (even); the model uses ``N // 2`` complex modes.
        channels: number of output maps ``C`` per SSM (kernels are ``(channels, H, L)``).
        disc: ``"zoh"`` or ``"bilinear"``.
        dt_min, dt_max: ``dt`` is initialised log-uniformly in ``[dt_min, dt_max]``.
        bandlimit: if set, keep only the modes whose frequency ``dt * |Im A| / (2 pi)``, in
            cycles per *reference* sample, is below ``bandlimit / 2`` and below the Nyquist
            frequency of the grid actually sampled, ``1 / (2 rate)`` (S4ND's anti-aliasing).
            ``1.0`` keeps what the reference grid resolves.
        lr: if set, the SSM parameters ``log_dt, A, B, C`` (and ``P``) carry an ``_optim``
            attribute ``{"lr": lr, "weight_decay": 0.0}`` for optimisers that honour it.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        channels: int = 1,
        disc: str = "zoh",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bandlimit: float | None = None,
        lr: float | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("d_state", d_state)
        check_positive_int("channels", channels)
        if d_state % 2:
            raise InvalidValueError(f"d_state must be even (modes come in conjugate pairs), got {d_state}")
        check_choice("discretization", disc, DISCRETIZATIONS)
        if not 0 < dt_min <= dt_max:
            raise InvalidValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        check_optional(check_positive_number, "bandlimit", bandlimit)
        self.d_model, self.d_state, self.channels = d_model, d_state, channels
        self.modes = d_state // 2
        self.disc, self.bandlimit, self.lr = disc, bandlimit, lr
        self._factory = dict(device=device, dtype=dtype if dtype is not None else torch.get_default_dtype())
        # Initial values are drawn on the CPU (the HiPPO inits need float64 linear algebra) and
        # then placed, so a model built on another device (or "meta") gets the same parameters.
        u = torch.rand(d_model)
        self.log_dt = self._parameter(math.log(dt_min) + u * (math.log(dt_max) - math.log(dt_min)))
        c = torch.randn(channels, d_model, self.modes, dtype=torch.complex64) * 0.5**0.5
        self.C = self._parameter(_as_real(c))
        self._cache = EvalKernelCache(max_entries=16)

    def _parameter(self, value: torch.Tensor) -> nn.Parameter:
        return nn.Parameter(value.to(**self._factory))

    def _init_A_B(self, A: torch.Tensor, B: torch.Tensor) -> None:
        """Register ``A (H, M)`` as ``log(-Re A)`` and ``Im A``, and ``B (H, M)``."""
        self.log_A_real = self._parameter(torch.log(-A.real.clamp(max=-1e-4)).float())
        self.A_imag = self._parameter(A.imag.float().clone())
        self.B = self._parameter(_as_real(B))

    def _mark_ssm_params(self) -> None:
        if self.lr is None:
            return
        for p in self.parameters(recurse=False):
            p._optim = {"lr": self.lr, "weight_decay": 0.0}

    # -- continuous parameters ---------------------------------------------------------------

    def _compute_dtype(self) -> torch.dtype:
        return torch.float64 if self.log_dt.dtype == torch.float64 else torch.float32

    def _real(self, p: torch.Tensor) -> torch.Tensor:
        return p.to(self._compute_dtype())

    def _cplx(self, p: torch.Tensor) -> torch.Tensor:
        return _complex(self._real(p))

    def dt(self, rate: float = 1.0) -> torch.Tensor:
        """Step sizes ``(H,)`` at ``rate``."""
        return torch.exp(self._real(self.log_dt)) * check_rate(rate)

    def diagonal_A(self) -> torch.Tensor:
        """The diagonal part of ``A``: ``(H, M)`` complex with negative real part."""
        return torch.complex(-torch.exp(self._real(self.log_A_real)), self._real(self.A_imag))

    def mode_mask(self, rate: float = 1.0) -> torch.Tensor | None:
        """``(H, M)`` 0/1 mask of the modes kept by the band limit at ``rate``, or ``None``.

        A mode's frequency is measured per *reference* sample (``dt`` at rate 1), so the same
        modes are kept at every resolution; a grid coarser than the reference (``rate > 1``)
        also drops the modes above its own Nyquist frequency.
        """
        if self.bandlimit is None:
            return None
        freq = self.dt(1.0)[:, None] * self.diagonal_A().imag.abs() / (2 * math.pi)
        keep = freq * max(1.0, check_rate(rate) * self.bandlimit) < self.bandlimit / 2
        return keep.to(freq.dtype)

    def output_matrix(self, rate: float = 1.0) -> torch.Tensor:
        """``C (channels, H, M)`` with the modes above the band limit at ``rate`` removed."""
        C = self._cplx(self.C)
        mask = self.mode_mask(rate)
        return C if mask is None else C * mask

    # -- caching -----------------------------------------------------------------------------

    def train(self, mode: bool = True):
        if mode:  # free the eval-mode kernels; (re)entering eval keeps them (they are still valid)
            self._cache.clear()
        return super().train(mode)

    # -- public API --------------------------------------------------------------------------

    def forward(self, L: int, rate: float = 1.0) -> torch.Tensor:
        """Causal kernel ``(channels, H, L)`` sampled with step ``dt * rate``."""
        check_positive_int("kernel length L", L)
        rate = check_rate(rate)
        with torch.autocast(device_type=self.log_dt.device.type, enabled=False):
            return self._cache(self, ("kernel", L, rate), lambda: self._kernel(L, rate, rate))

    def centred(self, L: int, rate: float = 1.0, bidirectional: bool = True) -> torch.Tensor:
        """Cell-centred kernel ``(channels', H, 2L - 1)`` for ``L`` samples at ``rate``.

        The generator's channels are the causal halves: with ``bidirectional`` the first half
        acts forwards and the second backwards (``channels' = channels / 2``); otherwise every
        channel is a forward half and the backward one is zero. The halves are sampled at half
        the step and paired into cells (:func:`centred_kernel` with ``half_step=True``), so the
        kernel of one layer agrees with itself across resolutions.
        """
        check_positive_int("kernel length L", L)
        rate = check_rate(rate)
        if bidirectional and self.channels % 2:
            raise InvalidValueError(f"a bidirectional kernel needs an even number of channels, got {self.channels}")

        def compute() -> torch.Tensor:
            k = self._kernel(2 * L, rate / 2, rate)
            fwd, bwd = k.chunk(2) if bidirectional else (k, torch.zeros_like(k))
            return centred_kernel(fwd, bwd, half_step=True)

        with torch.autocast(device_type=self.log_dt.device.type, enabled=False):
            return self._cache(self, ("centred", L, rate, bidirectional), compute)

    def discrete(self, rate: float = 1.0) -> DiscreteSSM:
        """The discretised system at ``rate`` (see :class:`DiscreteSSM`)."""
        rate = check_rate(rate)
        with torch.autocast(device_type=self.log_dt.device.type, enabled=False):
            return self._cache(self, ("discrete", rate), lambda: self._discrete(rate, rate))

    def _kernel(self, L: int, rate: float, band_rate: float) -> torch.Tensor:
        """``L`` taps at step ``dt * rate``, band-limited for a grid sampled at ``band_rate``."""
        raise NotImplementedError

    def _discrete(self, rate: float, band_rate: float) -> DiscreteSSM:
        raise NotImplementedError

    def extra_repr(self) -> str:
        s = f"d_model={self.d_model}, d_state={self.d_state}, channels={self.channels}, disc={self.disc!r}"
        return s + (f", bandlimit={self.bandlimit}" if self.bandlimit is not None else "")


class S4DKernel(SSMKernelBase):
    """Diagonal SSM kernel (S4D): ``K[..., l] = 2 Re sum_m C_m dB_m dA_m^l``, a Vandermonde product.

    ``init`` is one of ``"lin"``, ``"inv"``, ``"legs"``, ``"real"`` (the S4D paper's inits).
    """

    def __init__(self, d_model: int, d_state: int = 64, channels: int = 1, init: str = "lin", **kwargs) -> None:
        super().__init__(d_model, d_state, channels, **kwargs)
        check_choice("S4D init", init, DIAGONAL_INITS)
        self.init = init
        A = diagonal_init(init, d_state).to(torch.complex64).expand(d_model, -1)
        self._init_A_B(A, torch.ones(d_model, self.modes, dtype=torch.complex64))
        self._mark_ssm_params()

    def _log_dA_dB(self, rate: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dt = self.dt(rate)
        A = self.diagonal_A()
        B = self._cplx(self.B)
        dtA = dt[:, None] * A
        if self.disc == "zoh":
            log_dA = dtA
            dB = B * torch.expm1(dtA) / A
        else:
            log_dA = torch.log1p(dtA / 2) - torch.log1p(-dtA / 2)
            dB = B * dt[:, None] / (1 - dtA / 2)
        return dt, log_dA, dB

    def _discrete(self, rate: float, band_rate: float) -> DiscreteSSM:
        dt, log_dA, dB = self._log_dA_dB(rate)
        return DiscreteSSM(torch.exp(log_dA), dB, self.output_matrix(band_rate))

    def _kernel(self, L: int, rate: float, band_rate: float) -> torch.Tensor:
        dt, log_dA, dB = self._log_dA_dB(rate)
        CB = self.output_matrix(band_rate) * dB  # (C, H, M)
        return vandermonde_kernel(CB, log_dA, L)


def vandermonde_kernel(CB: torch.Tensor, log_dA: torch.Tensor, L: int) -> torch.Tensor:
    """``K[c, h, l] = 2 Re sum_m CB[c, h, m] exp(l log_dA[h, m])`` for ``l < L``: ``(C, H, L)``.

    Splits ``l = i * n + j`` with ``n ~ sqrt(L)``, so ``dA^l = dA^(i n) dA^j`` and the sum over
    modes becomes one batched real matrix product ``(H, C * L/n, M) @ (H, M, n)``: only
    ``O(H M sqrt(L))`` exponentials and no ``(H, M, L)`` tensor.
    """
    C, H, M = CB.shape
    n = max(1, math.isqrt(L - 1) + 1)
    blocks = -(-L // n)
    real = log_dA.real.dtype
    inner = torch.exp(log_dA[..., None] * torch.arange(n, device=CB.device, dtype=real))  # (H, M, n)
    outer = torch.exp(log_dA[..., None] * (n * torch.arange(blocks, device=CB.device, dtype=real)))  # (H, M, b)
    left = (CB[..., None] * outer).permute(1, 0, 3, 2).reshape(H, C * blocks, M)  # (H, C*b, M)
    # .real/.imag are strided views; BLAS wants contiguous operands.
    K = left.real.contiguous() @ inner.real.contiguous() - left.imag.contiguous() @ inner.imag.contiguous()
    return 2 * K.view(H, C, blocks * n)[..., :L].transpose(0, 1)


class S4Kernel(SSMKernelBase):
    """Diagonal-plus-low-rank SSM kernel (S4): ``A = diag(Lambda) - P P^H``.

    With ``disc="bilinear"`` (the S4 paper's) the kernel's generating function is evaluated at
    the ``L``-th roots of unity in closed form (Cauchy sums plus the Woodbury identity) and
    inverted with an FFT; ``dA^L`` is a dense ``(M, M)`` power by repeated squaring. With
    ``disc="zoh"`` ``dA = expm(dt A)`` is dense and the kernel is a two-level Krylov product
    (:func:`dense_kernel`); ``method="krylov"`` uses that path for bilinear too, which avoids
    the ``H M L`` complex reciprocals of the Cauchy sums and is much faster on CPU for long
    kernels.

    ``init`` is a HiPPO measure (``"legs"``, ``"legt"``, ``"lagt"``, ``"fout"``).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        channels: int = 1,
        init: str = "legs",
        dplr_rank: int | None = None,
        disc: str = "bilinear",
        method: str = "cauchy",
        **kwargs,
    ) -> None:
        super().__init__(d_model, d_state, channels, disc=disc, **kwargs)
        check_choice("S4 kernel method", method, ("cauchy", "krylov"))
        self.method = method
        check_choice("S4 init measure", init, MEASURES)
        dplr_rank = {"legt": 2}.get(init, 1) if dplr_rank is None else dplr_rank
        self.init, self.dplr_rank = init, dplr_rank
        Lambda, P, B = dplr_init(init, d_state, dplr_rank)
        self._init_A_B(Lambda.expand(d_model, -1), B.expand(d_model, -1))
        self.P = self._parameter(_as_real(P[:, None, :].expand(-1, d_model, -1)))
        self._mark_ssm_params()

    def dense_A(self) -> torch.Tensor:
        """``A (H, M, M)`` complex."""
        P = self._cplx(self.P)
        return torch.diag_embed(self.diagonal_A()) - torch.einsum("rhm,rhn->hmn", P, P.conj())

    def _discrete(self, rate: float, band_rate: float) -> DiscreteSSM:
        dt = self.dt(rate)
        A = self.dense_A()
        B = self._cplx(self.B)
        eye = torch.eye(self.modes, dtype=A.dtype, device=A.device)
        dtA = dt[:, None, None] * A
        if self.disc == "zoh":
            dA = torch.linalg.matrix_exp(dtA)
            dB = torch.linalg.solve(A, ((dA - eye) @ B[..., None]))[..., 0]
        else:
            lhs = eye - dtA / 2
            dA = torch.linalg.solve(lhs, eye + dtA / 2)
            dB = torch.linalg.solve(lhs, (dt[:, None] * B)[..., None])[..., 0]
        return DiscreteSSM(dA, dB, self.output_matrix(band_rate))

    def _kernel(self, L: int, rate: float, band_rate: float) -> torch.Tensor:
        if self.disc == "zoh" or self.method == "krylov":
            ssm = self._discrete(rate, band_rate)
            return dense_kernel(ssm.C, ssm.dA, ssm.dB, L)
        return self._bilinear_kernel(L, rate, band_rate)

    def _bilinear_kernel(self, L: int, rate: float, band_rate: float) -> torch.Tensor:
        ssm = self._discrete(rate, band_rate)
        dt = self.dt(rate)
        # Truncating the generating function at L folds in (I - dA^L).
        C = ssm.C - torch.einsum("chm,hmn->chn", ssm.C, ssm.power(L))
        Lambda, B, P = self.diagonal_A(), self._cplx(self.B), self._cplx(self.P)
        chunk = max(1, _CHUNK_ELEMENTS // (self.d_model * self.modes))
        pieces = []
        for start in range(0, L, chunk):
            k = torch.arange(start, min(L, start + chunk), device=dt.device, dtype=dt.dtype)
            z = torch.exp(-2j * math.pi * k / L)  # roots of unity (l,)
            pieces.append(self._resolvent_sum(C, B, P, Lambda, dt, z))
        F = torch.cat(pieces, dim=-1)  # (C, H, L): generating function at the roots
        return 2 * torch.fft.ifft(F, n=L, dim=-1).real

    @staticmethod
    def _resolvent_sum(C, B, P, Lambda, dt, z) -> torch.Tensor:
        """``dt C [(1 - z) I - dt/2 (1 + z) A]^{-1} B`` for each ``z``, by Woodbury.

        That is ``C (I - z dA)^{-1} dB`` for the bilinear ``dA, dB``; the diagonal part
        ``(1 - z) - dt/2 (1 + z) Lambda`` never vanishes on the unit circle when ``Re Lambda < 0``.
        All Cauchy sums ``sum_m a_m b_m / d_m(z)`` share one batched matrix product.
        """
        channels, rank = C.shape[0], P.shape[0]
        s = dt[:, None] / 2 * (1 + z)  # (H, l)
        inv_d = 1 / ((1 - z) - s[:, None, :] * Lambda[..., None])  # (H, M, l)
        numerators = torch.cat([
            C * B,  # C B
            (C[:, None] * P[None]).flatten(0, 1),  # C P_r
            P.conj() * B,  # P_r^H B
            (P.conj()[:, None] * P[None]).flatten(0, 1),  # P_r^H P_q
        ])  # (T, H, M)
        sums = (numerators.transpose(0, 1) @ inv_d).transpose(0, 1)  # (T, H, l)
        cb, cp, pb, pp = sums.split([channels, channels * rank, rank, rank * rank])
        cp = cp.view(channels, rank, *cp.shape[1:])
        pp = pp.view(rank, rank, *pp.shape[1:])
        if rank == 1:
            correction = cp[:, 0] * s * pb[0] / (1 + s * pp[0, 0])
        else:
            eye = torch.eye(rank, dtype=pp.dtype, device=pp.device)
            system = eye + s[..., None, None] * pp.permute(2, 3, 0, 1)  # (H, l, r, r)
            solved = torch.linalg.solve(system, pb.permute(1, 2, 0)[..., None])[..., 0]  # (H, l, r)
            correction = s * torch.einsum("crhl,hlr->chl", cp, solved)
        return dt[:, None] * (cb - correction)


def dense_kernel(C: torch.Tensor, dA: torch.Tensor, dB: torch.Tensor, L: int) -> torch.Tensor:
    """``K[c, h, l] = 2 Re(C dA^l dB)`` for a dense ``dA (H, M, M)``: ``(C, H, L)``.

    With ``l = i * n + j`` and ``n ~ sqrt(L)``: ``C dA^(i n)`` (rows) and ``dA^j dB`` (columns)
    are Krylov sequences of ``sqrt(L)`` terms each, joined by one batched matrix product.
    """
    channels, H, M = C.shape
    n = max(1, math.isqrt(L - 1) + 1)
    blocks = -(-L // n)
    columns = krylov(dA, dB, n)  # (H, M, n): dA^j dB
    step_t = torch.linalg.matrix_power(dA, n).transpose(-1, -2)
    rows = krylov(step_t, C, blocks)  # (C, H, M, b): (C dA^(i n))^T
    rows = rows.permute(1, 0, 3, 2).reshape(H, channels * blocks, M)
    K = (rows @ columns).real  # (H, C*b, n)
    return 2 * K.view(H, channels, blocks * n)[..., :L].transpose(0, 1)


KERNELS = {"s4d": S4DKernel, "s4": S4Kernel}


def ssm_kernel(kernel: str, d_model: int, d_state: int = 64, channels: int = 1, **kwargs) -> SSMKernelBase:
    """Build a kernel generator by name: ``"s4d"`` (:class:`S4DKernel`) or ``"s4"`` (:class:`S4Kernel`).

    Keyword arguments set to ``None`` take the generator's default (``bandlimit=None`` is itself
    the default: no band limit).
    """
    check_choice("SSM kernel", kernel, KERNELS)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return KERNELS[kernel](d_model, d_state, channels, **kwargs)


def ssm_parameter_names(model: nn.Module) -> set[str]:
    """Full names of the state-space parameters of ``model``: every parameter of an
    :class:`SSMKernelBase` (``log_dt``, ``log_A_real``, ``A_imag``, ``B``, ``C``, ``P``) and any
    parameter carrying an ``_optim`` hint. Optimisers give them their own learning rate and no
    weight decay."""
    hinted = {id(p) for p in model.parameters() if hasattr(p, "_optim")}
    names = set()
    for prefix, module in model.named_modules():
        if isinstance(module, SSMKernelBase):
            names.update(f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters(recurse=False))
    return names | {n for n, p in model.named_parameters() if id(p) in hinted}
