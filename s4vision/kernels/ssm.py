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
from typing import Sequence

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .._amp import autocast_off
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
# Vandermonde products of at most this many taps materialise every power (few, large operations
# and a hand-written backward: what vision-sized kernels want); longer ones use the sqrt(L) split.
_DIRECT_MAX_TAPS = 256


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
        return v[..., None] * _exp(_log(dA)[..., None] * steps)
    out = v[..., None]
    power = dA
    while out.shape[-1] < L:
        out = torch.cat([out, torch.einsum("hmn,...hnl->...hml", power, out)], dim=-1)
        if out.shape[-1] < L:
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


# torch's complex exp / expm1 / log run elementwise without SIMD on CPU, ~25x slower than the
# real exp, cos and sin they are made of; kernel generation uses these instead.


def _exp(z: torch.Tensor) -> torch.Tensor:
    """``exp(z)`` of a complex tensor through real ``exp``, ``cos``, ``sin``."""
    magnitude = torch.exp(z.real)
    return torch.complex(magnitude * torch.cos(z.imag), magnitude * torch.sin(z.imag))


def _expm1(z: torch.Tensor) -> torch.Tensor:
    """``exp(z) - 1`` of a complex tensor, accurate for small ``|z|``:
    ``Re = expm1(x) cos y - 2 sin^2(y / 2)``, ``Im = e^x sin y``."""
    x, y = z.real, z.imag
    half = torch.sin(y / 2)
    return torch.complex(torch.expm1(x) * torch.cos(y) - 2 * half * half, torch.exp(x) * torch.sin(y))


def _log(z: torch.Tensor) -> torch.Tensor:
    """Principal ``log(z)`` of a complex tensor through real ``log`` and ``atan2``."""
    return torch.complex(0.5 * torch.log(z.real.square() + z.imag.square()), torch.atan2(z.imag, z.real))


def _abs(z: torch.Tensor) -> torch.Tensor:
    """``|z|`` elementwise (complex ``abs`` is a slow scalar path on CPU; real tensors pass through)."""
    if not z.is_complex():
        return z.abs()
    return torch.view_as_real(z).square().sum(-1).sqrt()


def _powers(log_z: torch.Tensor, exponents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of ``exp(log_z * e)`` for each exponent: two ``(..., len(e))``."""
    real = log_z.real[..., None] * exponents
    phase = log_z.imag[..., None] * exponents
    magnitude = torch.exp(real)
    return magnitude * torch.cos(phase), magnitude * torch.sin(phase)


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
        with autocast_off(self.log_dt.device):
            return self._cache(self, ("kernel", L, rate), lambda: self._kernel(L, rate, rate))

    def centred(self, L: int, rate: float = 1.0, bidirectional: bool = True) -> torch.Tensor:
        """Cell-centred kernel ``(channels', H, 2L - 1)`` for ``L`` samples at ``rate``.

        The generator's channels are the causal halves: with ``bidirectional`` the first half
        acts forwards and the second backwards (``channels' = channels / 2``); otherwise every
        channel is a forward half and the backward one is zero. Tap ``m`` of a half integrates
        the continuous kernel over the cell ``[(m - 1/2) h, (m + 1/2) h]`` between samples, and
        the origin cell is split between the halves (:func:`centred_kernel` with
        ``half_step=True`` on taps at half the step, computed here directly at the output
        step), so the kernel of one layer agrees with itself across resolutions.
        """
        check_positive_int("kernel length L", L)
        rate = check_rate(rate)
        with autocast_off(self.log_dt.device):
            return self._cache(
                self, ("centred", L, rate, bidirectional), lambda: centred_kernels([self], [L], [rate], bidirectional)[0]
            )

    def _cells(self, L: int, rate: float) -> torch.Tensor:
        """One-sided cell kernels ``(channels, H, L)`` at step ``dt * rate`` (band-limited for
        that grid): tap 0 integrates the continuous kernel over the half cell ``[0, h / 2]``,
        tap ``m >= 1`` over ``[(m - 1/2) h, (m + 1/2) h]``. This generic form pairs the taps of
        a kernel at half the step; subclasses compute the cells directly."""
        k = self._kernel(2 * L, rate / 2, rate)
        return torch.cat([k[..., :1], k[..., 1:2 * L - 1].unflatten(-1, (L - 1, 2)).sum(-1)], dim=-1)

    def discrete(self, rate: float = 1.0) -> DiscreteSSM:
        """The discretised system at ``rate`` (see :class:`DiscreteSSM`)."""
        rate = check_rate(rate)
        with autocast_off(self.log_dt.device):
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
            dB = B * _expm1(dtA) / A
        else:
            half = dtA / 2
            log_dA = _log((1 + half) / (1 - half))
            dB = B * dt[:, None] / (1 - half)
        return dt, log_dA, dB

    def _discrete(self, rate: float, band_rate: float) -> DiscreteSSM:
        dt, log_dA, dB = self._log_dA_dB(rate)
        return DiscreteSSM(_exp(log_dA), dB, self.output_matrix(band_rate))

    def _kernel(self, L: int, rate: float, band_rate: float) -> torch.Tensor:
        dt, log_dA, dB = self._log_dA_dB(rate)
        CB = self.output_matrix(band_rate) * dB  # (C, H, M)
        return vandermonde_kernel(*_drop_masked_modes(self.mode_mask(band_rate), CB, log_dA), L)

    def _cell_terms(self, rate: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The cells of :meth:`_cells` as a Vandermonde product: ``(origin (C, H), W (C, H, M),
        log_z (H, M), mask)`` with ``cells[0] = origin``, ``cells[m] = 2 Re sum W z^(m - 1)``,
        and ``mask`` the band limit's :meth:`mode_mask` (``None`` without one).

        With ``dA, dB`` at half the step, cell ``m`` is the sum of the half-step taps
        ``2m - 1`` and ``2m``: ``2 Re C dB dA^(2m - 1) (1 + dA)``, so ``z = dA^2`` and
        ``W = C dB dA (1 + dA)``; the origin half cell is tap 0, ``2 Re C dB``.
        """
        _, log_dA, dB = self._log_dA_dB(rate / 2)
        CB = self.output_matrix(rate) * dB
        dA = _exp(log_dA)
        return 2 * CB.real.sum(-1), CB * (dA * (1 + dA)), 2 * log_dA, self.mode_mask(rate)

    def _cells(self, L: int, rate: float) -> torch.Tensor:
        return centred_kernels([self], [L], [rate], bidirectional=None)[0]


def _drop_masked_modes(mask: torch.Tensor | None, W: torch.Tensor, log_z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``W (C, H, M)`` and ``log_z (H, M)`` without the modes that ``mask (H, M)`` removes for every
    ``H``. Exact, gradients included: a masked mode's ``W`` is ``C * 0 * ...``, so neither it nor
    its parameters' gradients contribute. Mode masks change with the parameters, so this runs
    only in eager mode on the CPU (on a GPU the indexing would synchronise)."""
    if mask is None or W.device.type != "cpu" or torch.compiler.is_compiling():
        return W, log_z
    keep = mask.detach().any(0)
    if bool(keep.all()):
        return W, log_z
    index = keep.nonzero()[:, 0]
    return W.index_select(-1, index), log_z.index_select(-1, index)


def _zoh_cells(generators: Sequence["S4DKernel"], L: int, rates: Sequence[float]) -> torch.Tensor:
    """One-sided ZOH cells ``(c, sum H_i, L)`` of S4D generators (one :class:`_ZOHCells` node)."""
    first = generators[0]
    dtype, device = first._compute_dtype(), first.log_dt.device
    scale = torch.cat([torch.full((g.d_model,), r / 2, dtype=dtype, device=device) for g, r in zip(generators, rates)])
    mask, index = None, None
    if first.bandlimit is not None:
        with torch.no_grad():
            mask = torch.cat([g.mode_mask(r) for g, r in zip(generators, rates)])
        if device.type == "cpu" and not torch.compiler.is_compiling():
            keep = mask.any(0)
            index = None if bool(keep.all()) else keep.nonzero()[:, 0]
    params = [g._real(p) for g in generators for p in (g.log_dt, g.log_A_real, g.A_imag, g.B, g.C)]
    return _ZOHCells.apply(scale, mask, index, L, *params)


def _assemble_cells(origin: torch.Tensor, W: torch.Tensor, log_z: torch.Tensor, L: int) -> torch.Tensor:
    """``(C, H, L)``: ``origin`` then ``L - 1`` Vandermonde taps of ``(W, log_z)``."""
    if L == 1:
        return origin[..., None]
    return torch.cat([origin[..., None], vandermonde_kernel(W, log_z, L - 1)], dim=-1)


def _centre(cells: torch.Tensor, bidirectional: bool | None) -> torch.Tensor:
    """Centred ``(channels', H, 2L - 1)`` from one-sided cells ``(channels, H, L)``: the first half of
    the channels forwards and the second backwards, or all forwards (zero backwards); ``None``
    returns the cells unchanged."""
    if bidirectional is None:
        return cells
    if bidirectional:
        fwd, bwd = cells.chunk(2)
        return centred_kernel(fwd, bwd)
    return torch.nn.functional.pad(cells, (cells.shape[-1] - 1, 0))


def centred_kernels(
    generators: Sequence["SSMKernelBase"], lengths: Sequence[int], rates: Sequence[float], bidirectional: bool = True
) -> list[torch.Tensor]:
    """:meth:`SSMKernelBase.centred` of several generators (e.g. one per axis of an S4ND layer) at
    once: ``[(channels', H_i, 2 L_i - 1)]``, uncached, in fp32 (fp64 for double generators).
    ``bidirectional=None`` returns the one-sided cells ``(channels, H_i, L_i)`` instead.

    Generators of one configuration (kind, channels, modes, dtype, discretisation, band limit:
    the axes of one layer) are computed together, their SSMs stacked along ``H`` and the longest
    length used for all: diagonal (S4D) ones as one Vandermonde product (ZOH: one
    :class:`_ZOHCells` node from the raw parameters; the modes every band limit removes left
    out), dense (DPLR) ones as one exponential and one Krylov product. One set of small
    operations instead of one per axis: most of a training step's kernel cost at vision sizes.
    """
    if bidirectional and any(g.channels % 2 for g in generators):
        raise InvalidValueError(
            f"a bidirectional kernel needs an even number of channels, got {[g.channels for g in generators]}"
        )
    same = len({(type(g), g.channels, g.modes, g._compute_dtype(), g.disc, g.bandlimit, getattr(g, "method", None))
                for g in generators}) == 1
    fusable = same and isinstance(generators[0], S4DKernel)
    with autocast_off(generators[0].log_dt.device):
        if fusable and generators[0].disc == "zoh":
            cells = _zoh_cells(generators, max(lengths), rates).split([g.d_model for g in generators], dim=1)
            cells = [c[..., :L] for c, L in zip(cells, lengths)]
        elif same and isinstance(generators[0], S4Kernel) and generators[0]._dense_cells:
            scaled = [g._scaled(r / 2) for g, r in zip(generators, rates)]
            dA, dB = _discretise_dense(torch.cat([a for a, _ in scaled]), torch.cat([b for _, b in scaled]), generators[0].disc)
            C = torch.cat([g.output_matrix(r) for g, r in zip(generators, rates)], dim=1)
            cells = _dense_cells(dA, dB, C, max(lengths)).split([g.d_model for g in generators], dim=1)
            cells = [c[..., :L] for c, L in zip(cells, lengths)]
        elif fusable:
            terms = [g._cell_terms(r) for g, r in zip(generators, rates)]
            origins, Ws, log_zs, masks = zip(*terms)  # stack the axes' modes along H
            origin, W, log_z = torch.cat(origins, dim=1), torch.cat(Ws, dim=1), torch.cat(log_zs, dim=0)
            mask = None if any(m is None for m in masks) else torch.cat(masks)
            W, log_z = _drop_masked_modes(mask, W, log_z)
            cells = _assemble_cells(origin, W, log_z, max(lengths)).split([g.d_model for g in generators], dim=1)
            cells = [c[..., :L] for c, L in zip(cells, lengths)]
        else:
            cells = [g._cells(L, r) for g, L, r in zip(generators, lengths, rates)]
        return [_centre(c, bidirectional) for c in cells]


def vandermonde_kernel(CB: torch.Tensor, log_dA: torch.Tensor, L: int) -> torch.Tensor:
    """``K[c, h, l] = 2 Re sum_m CB[c, h, m] exp(l log_dA[h, m])`` for ``l < L``: ``(C, H, L)``.

    Up to ``_DIRECT_MAX_TAPS`` taps (and ``_CHUNK_ELEMENTS`` powers) it materialises the powers
    ``(L, H, M)`` by doubling (:func:`_power_table`) and contracts over the modes
    (:class:`_DirectVandermonde`, with a hand-written backward). Beyond, it splits
    ``l = i * n + j`` with ``n ~ sqrt(L)``, so ``dA^l = dA^(i n) dA^j`` and the sum over modes
    becomes one batched real matrix product ``(H, C * L/n, 2M) @ (H, 2M, n)``: only
    ``O(H M sqrt(L))`` exponentials and no ``(H, M, L)`` tensor. Everything runs in real
    arithmetic: ``Re(a b) = [Re a, Im a] . [Re b, -Im b]``.
    """
    C, H, M = CB.shape
    if L <= _DIRECT_MAX_TAPS and L * H * M <= _CHUNK_ELEMENTS:
        return _DirectVandermonde.apply(CB, log_dA, L)
    real = CB.real.dtype
    n = math.isqrt(L - 1) + 1
    blocks = -(-L // n)
    inner_re, inner_im = _powers(log_dA, torch.arange(n, device=CB.device, dtype=real))  # (H, M, n)
    right = torch.cat([inner_re, -inner_im], dim=1)  # (H, 2M, n)
    outer_re, outer_im = _powers(log_dA, n * torch.arange(blocks, device=CB.device, dtype=real))  # (H, M, b)
    cb_re, cb_im = CB.real[..., None], CB.imag[..., None]
    left = torch.cat([cb_re * outer_re - cb_im * outer_im, cb_re * outer_im + cb_im * outer_re], dim=2)
    left = left.permute(1, 0, 3, 2).reshape(H, C * blocks, 2 * M)  # (H, C*b, 2M)
    K = left @ right  # (H, C*b, n)
    return 2 * K.view(H, C, blocks * n)[..., :L].transpose(0, 1)


def _doubling_levels(J: int) -> int:
    """How many factors ``z^(2^i)`` :func:`_power_table` needs for ``J`` powers."""
    return (J - 1).bit_length()


def _power_table(doubling: torch.Tensor, J: int) -> torch.Tensor:
    """``P[j, h, m] = z[h, m]^j`` for ``j < J``: ``(J, H, M)`` complex, from the factors
    ``doubling[i, h, m] = z^(2^i)`` (``(levels, H, M)``, :func:`_doubling_levels`; more are
    ignored).

    By doubling: ``P[n:2n] = P[:n] z^n``. With each factor an exact exponential of
    ``2^i log z``, every power is a product of at most ``log2 J`` correctly rounded factors:
    more accurate than ``exp(j log z)`` (whose rounding of ``j Im log z`` grows with ``j``) and
    cheaper, one complex product per entry instead of a real ``exp``, ``cos`` and ``sin``. The
    powers lead, so every step runs over contiguous ``(H, M)`` planes (``M`` is often ~10 kept
    modes: a trailing axis that short would make each step a slow broadcast)."""
    _, H, M = doubling.shape
    table = torch.empty(J, H, M, dtype=doubling.dtype, device=doubling.device)
    table[0] = 1
    n = 1
    for i in range(_doubling_levels(J)):
        m = min(n, J - n)
        table[n:n + m] = table[:m] * doubling[i]  # (no out=: torch.compile traces this)
        n += m
    return table


def _doubling_steps(levels: int, like: torch.Tensor) -> torch.Tensor:
    """``1, 2, 4, ..., 2^(levels - 1)`` as a ``(levels, 1, 1)`` real tensor of ``like``'s precision."""
    dtype = like.real.dtype if like.is_complex() else like.dtype
    return torch.tensor([float(1 << i) for i in range(levels)], dtype=dtype, device=like.device)[:, None, None]


def _doubling_factors(log_z: torch.Tensor, levels: int) -> torch.Tensor:
    """``exp(2^i log z)`` for ``i < levels``: ``(levels, H, M)`` from ``log_z (H, M)``."""
    return _exp(log_z * _doubling_steps(levels, log_z))


def _contract_powers(W: torch.Tensor, powers: torch.Tensor) -> torch.Tensor:
    """``K[c, h, j] = 2 Re sum_m W[c, h, m] P[j, h, m]`` for ``W (C, H, M)`` and a power table
    ``P (J, H, M)``: ``(C, H, J)``. One batched real product per SSM, ``(C, 2M) @ (2M, J)``, on
    interleaved real and imaginary parts: ``Re(w p) = [Re w, -Im w] . [Re p, Im p]``."""
    J, H, M = powers.shape
    w = torch.view_as_real(W.conj().resolve_conj()).reshape(W.shape[0], H, 2 * M)
    return 2 * torch.einsum("jhk,chk->chj", torch.view_as_real(powers).view(J, H, 2 * M), w)


def _vandermonde_forward(W: torch.Tensor, log_z: torch.Tensor, J: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(K (C, H, J), powers (J, H, M))`` with ``K[c, h, j] = 2 Re sum_m W[c, h, m] z[h, m]^j``
    and ``powers`` the :func:`_power_table` (kept for the backward)."""
    powers = _power_table(_doubling_factors(log_z, _doubling_levels(J)), J)
    return _contract_powers(W, powers), powers


def _vandermonde_backward(grad: torch.Tensor, W: torch.Tensor, powers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of :func:`_vandermonde_forward` for ``grad = dLoss/dK (C, H, J)``: with
    ``S_p = sum_j j^p grad[c, h, j] z[h, m]^j`` (one contraction for ``p = 0, 1``),
    ``grad W = 2 conj(S_0)`` and ``grad log z = 2 sum_c conj(W S_1)`` (PyTorch's conjugate
    Wirtinger convention)."""
    J, H, M = powers.shape
    exponents = torch.arange(J, device=grad.device, dtype=grad.dtype)
    S = torch.einsum("chj,jhk->chk", torch.cat([grad, grad * exponents]), torch.view_as_real(powers).view(J, H, 2 * M))
    S0, S1 = torch.view_as_complex(S.view(*S.shape[:2], M, 2)).chunk(2)
    return 2 * S0.conj(), 2 * (W * S1).conj().sum(0)


class _DirectVandermonde(torch.autograd.Function):
    """:func:`_vandermonde_forward` as an autograd function (inputs ``W (C, H, M)``, ``log_z (H, M)``)."""

    @staticmethod
    def forward(ctx, W: torch.Tensor, log_z: torch.Tensor, J: int) -> torch.Tensor:
        K, powers = _vandermonde_forward(W, log_z, J)
        ctx.save_for_backward(W, powers)
        return K

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        W, powers = ctx.saved_tensors
        grad_W, grad_log_z = _vandermonde_backward(grad, W, powers)
        return grad_W, grad_log_z, None


class _ZOHCells(torch.autograd.Function):
    """One-sided ZOH cell kernels of S4D generators stacked along ``H``, straight from their raw
    parameters, with a hand-written backward (one graph node instead of ~150 small ones).

    Inputs: ``scale (H,)`` (half the rate of each SSM's axis), ``mask (H, M)`` or ``None`` (the
    band limit), ``index`` or ``None`` (the modes to keep: the others are masked everywhere),
    ``L``, then per generator ``log_dt (H_i,), log_A_real (H_i, M), A_imag (H_i, M),
    B (H_i, M, 2), C (c, H_i, M, 2)``. Output ``(c, H, L)``, as :meth:`S4DKernel._cell_terms`:
    with ``g = dt * scale`` (half the step), ``dA = e^(g A)``, ``dB = B (e^(g A) - 1) / A``,
    ``cells[0] = 2 Re sum C dB``, ``cells[m] = 2 Re sum C dB dA (1 + dA) dA^(2(m - 1))``.
    """

    @staticmethod
    def forward(ctx, scale, mask, index, L, *params):
        # Every pass over (H, M) costs about the same at these sizes, so the arithmetic is arranged
        # for few of them: one set of exp / cos / sin for dA and the power table's doubling
        # factors, expm1 sharing dA's cos, no complex division (1 / A once, in real arithmetic).
        axes = len(params) // 5
        log_dt, log_A_real, A_imag, B, C = (torch.cat(params[i::5], dim=1 if i == 4 else 0) for i in range(5))
        sizes = [p.shape[0] for p in params[0::5]]
        full_modes = log_A_real.shape[-1]
        Bc, Cc = _complex(B), _complex(C)
        if index is not None:
            log_A_real, A_imag = log_A_real.index_select(-1, index), A_imag.index_select(-1, index)
            Bc, Cc = Bc.index_select(-1, index), Cc.index_select(-1, index)
            mask = None if mask is None else mask.index_select(-1, index)
        if mask is not None:
            Cc = Cc * mask
        g = torch.exp(log_dt) * scale  # (H,): half the step
        A_real = -torch.exp(log_A_real)
        A = torch.complex(A_real, A_imag)
        inv_norm = 1 / (A_real.square() + A_imag.square())
        inv_A = torch.complex(A_real * inv_norm, -A_imag * inv_norm)
        x, y = g[:, None] * A_real, g[:, None] * A_imag  # log dA = x + iy
        # exponents 1, 2, 4, ...: dA, then the doubling factors of z = dA^2 for the cells' powers
        levels = max(1, _doubling_levels(L - 1)) if L > 1 else 0
        steps = _doubling_steps(levels + 1, g)
        phase = y * steps  # (1 + levels, H, M)
        magnitude = torch.exp(x * steps)
        cos = torch.cos(phase)
        exps = torch.complex(magnitude * cos, magnitude * torch.sin(phase))
        dA = exps[0]
        half = torch.sin(y / 2)  # e^(x + iy) - 1 = expm1(x) cos y - 2 sin^2(y / 2) + i e^x sin y
        E = torch.complex(torch.expm1(x) * cos[0] - 2 * half * half, dA.imag)
        E_over_A = E * inv_A
        dB = Bc * E_over_A
        CB = Cc * dB
        cells = torch.empty(*CB.shape[:2], L, device=CB.device, dtype=g.dtype)
        cells[..., 0] = 2 * CB.real.sum(-1)
        Q = W = powers = None
        if L > 1:
            Q = dA + exps[1]  # dA (1 + dA), with dA^2 = exp(2 log dA) = z
            W = CB * Q
            powers = _power_table(exps[1:], L - 1)
            cells[..., 1:] = _contract_powers(W, powers)
        ctx.save_for_backward(mask, index, g, A, inv_A, dA, E_over_A, Bc, Cc, dB, CB, Q, W, powers)
        ctx.layout = (axes, sizes, full_modes)
        return cells

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        mask, index, g, A, inv_A, dA, E_over_A, Bc, Cc, dB, CB, Q, W, powers = ctx.saved_tensors
        axes, sizes, full_modes = ctx.layout
        grad_origin = 2 * grad[..., :1]  # cells[0] = 2 Re sum CB
        if powers is not None:
            grad_W, grad_log_z = _vandermonde_backward(grad[..., 1:], W, powers)
            grad_CB = grad_W * Q.conj()
            grad_CB.real.add_(grad_origin)
            grad_dA = (grad_W * CB.conj()).sum(0) * (1 + 2 * dA).conj()  # Q = dA + dA^2
            grad_log_dA = 2 * grad_log_z + grad_dA * dA.conj()  # log z = 2 log dA, dA = e^(log dA)
        else:
            grad_CB = torch.complex(grad_origin.expand(CB.shape).contiguous(), torch.zeros_like(CB.real))
            grad_log_dA = torch.zeros_like(A)
        grad_C = grad_CB * dB.conj()
        grad_dB = (grad_CB * Cc.conj()).sum(0)
        grad_B = grad_dB * E_over_A.conj()
        # dB = B E / A with E' = e^(log dA) = dA
        grad_log_dA = grad_log_dA + grad_dB * (Bc * inv_A * dA).conj()
        grad_A = g[:, None] * grad_log_dA - grad_dB * (dB * inv_A).conj()
        grad_g = (grad_log_dA * A.conj()).real.sum(-1)
        grad_log_dt = grad_g * g
        grad_log_A_real, grad_A_imag = grad_A.real * A.real, grad_A.imag  # Re A = -exp(log_A_real)
        if mask is not None:
            grad_C = grad_C * mask
        if index is not None:
            grad_log_A_real, grad_A_imag, grad_B, grad_C = (
                t.new_zeros(*t.shape[:-1], full_modes).index_copy_(-1, index, t)
                for t in (grad_log_A_real, grad_A_imag, grad_B, grad_C)
            )
        grad_B, grad_C = torch.view_as_real(grad_B), torch.view_as_real(grad_C)
        grads = []
        for i, (dt_i, lar_i, ai_i, B_i, C_i) in enumerate(zip(
            grad_log_dt.split(sizes), grad_log_A_real.split(sizes), grad_A_imag.split(sizes),
            grad_B.split(sizes), grad_C.split(sizes, dim=1),
        )):
            grads += [dt_i, lar_i, ai_i, B_i, C_i]
        return (None, None, None, None, *grads)


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

    def _scaled(self, rate: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(dt A (H, M, M), dt B (H, M))`` with the step ``dt`` at ``rate``."""
        dt = self.dt(rate)
        return dt[:, None, None] * self.dense_A(), dt[:, None] * self._cplx(self.B)

    def _discrete(self, rate: float, band_rate: float) -> DiscreteSSM:
        return DiscreteSSM(*_discretise_dense(*self._scaled(rate), self.disc), self.output_matrix(band_rate))

    def _kernel(self, L: int, rate: float, band_rate: float) -> torch.Tensor:
        if self.disc == "zoh" or self.method == "krylov":
            ssm = self._discrete(rate, band_rate)
            return dense_kernel(ssm.C, ssm.dA, ssm.dB, L)
        return self._bilinear_kernel(L, rate, band_rate)

    @property
    def _dense_cells(self) -> bool:
        """Whether :meth:`_cells` runs on the dense discrete system (ZOH or ``method="krylov"``);
        otherwise the bilinear Cauchy kernel at half the step is paired into cells."""
        return self.disc == "zoh" or self.method == "krylov"

    def _cells(self, L: int, rate: float) -> torch.Tensor:
        if not self._dense_cells:
            return super()._cells(L, rate)
        return centred_kernels([self], [L], [rate], bidirectional=None)[0]

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


# Taylor degree of :func:`_expm` and the Paterson-Stockmeyer block (powers X .. X^5 formed once).
_EXPM_DEGREE = 18
_EXPM_BLOCK = math.isqrt(_EXPM_DEGREE) + 1
# Term i of Taylor block j is Y^(5 j + i) / (5 j + i)! (exponent -1: past the degree, weight 0).
_EXPM_EXPONENTS = torch.tensor([[start + i if start + i <= _EXPM_DEGREE else -1 for i in range(_EXPM_BLOCK)]
                                for start in range(0, _EXPM_DEGREE + 1, _EXPM_BLOCK)])
_EXPM_INVERSE_FACTORIALS = torch.tensor([[1 / math.factorial(e) if e >= 0 else 0.0 for e in row]
                                         for row in _EXPM_EXPONENTS.tolist()], dtype=torch.float64)
# Most squarings :func:`_expm` folds back into the Taylor coefficients (which then reach
# 2^(18 r) / 18!, kept far inside the float32 range).
_EXPM_MAX_UNSQUARED = 4


def _expm(X: torch.Tensor) -> torch.Tensor:
    """``exp(X)`` of square matrices ``(..., n, n)``, to working precision: the Taylor polynomial
    of degree 18 evaluated by Paterson-Stockmeyer (7 products) on ``Y = X / 2^s``, then ``s``
    squarings, with ``s`` chosen for each matrix of the batch.

    ``s`` makes ``alpha = max(||Y^4||^(1/4), ||Y^5||^(1/5)) <= theta`` (1-norms), which bounds the
    Taylor remainder by ``theta^19 / 19!`` (Al-Mohy and Higham, 2009, Theorem 4.2); ``theta`` (3
    in single precision, 1 in double) makes that the unit roundoff, as in
    ``torch.linalg.matrix_exp``. The powers are formed once at the scaling ``||Y|| <= theta``
    asks for; for non-normal matrices such as HiPPO's ``alpha`` is well below ``||Y||``, and the
    squarings it does not need are folded back into the polynomial's coefficients. Matrices
    needing fewer squarings leave the squaring loop early: the SSMs of a layer have step sizes
    spread over two decades, so most need far fewer than the largest. The four Taylor blocks are
    one small batched product over the stacked powers (not ~20 elementwise passes). Autograd
    runs through the matrix products, so the backward costs about twice the forward;
    ``torch.linalg.matrix_exp``'s backward exponentiates a matrix of twice the size (~8 times
    the work)."""
    block = _EXPM_BLOCK
    theta = 1.0 if X.real.dtype == torch.float64 else 3.0
    shape, n = X.shape, X.shape[-1]
    X = X.reshape(-1, n, n)
    real = X.real.dtype
    with torch.no_grad():
        norms = _abs(X).sum(-2).amax(-1)  # (N,) 1-norms
        first = torch.ceil(torch.log2(norms / theta)).clamp(min=0).nan_to_num(0.0)  # ||X / 2^first|| <= theta
    X = X * torch.exp2(-first)[:, None, None].to(real)
    powers = [X]
    for _ in range(block - 1):
        powers.append(powers[-1] @ X)  # Y^1 .. Y^5 at the first scaling
    with torch.no_grad():
        alpha = torch.maximum(*(_abs(powers[p - 1]).sum(-2).amax(-1) ** (1 / p) for p in (4, 5)))
        # squarings alpha does not need: Y' = 2^r Y, so Y'^i = 2^(r i) Y^i
        spare = torch.floor(torch.log2(theta / alpha)).nan_to_num(posinf=_EXPM_MAX_UNSQUARED)
        r = torch.minimum(spare.clamp(0, _EXPM_MAX_UNSQUARED), first)
        # the plan below is made on the host: one device synchronisation for all of it
        r, squarings = torch.stack([r, first - r]).cpu().to(real)
        squarings = squarings.long()
        # Blocks B_j = sum_{i < 5} Y'^i / (5 j + i)!, Horner P = ((B_3 Y'^5 + B_2) Y'^5 + B_1) Y'^5 + B_0;
        # with Y'^5 = 2^(5 r) Y^5, B_j scaled by 2^(5 r j) gives the same P from products with Y^5:
        # term i of block j carries 2^(r (5 j + i)) / (5 j + i)!.
        carry = torch.exp2(r[:, None, None] * _EXPM_EXPONENTS.clamp(min=0))  # (N, 4, 5)
        weights = (_EXPM_INVERSE_FACTORIALS.to(real) * carry).to(X.device)
    stacked = torch.stack(powers[:block - 1], dim=1)  # (N, 4, n, n)
    flat = torch.view_as_real(stacked) if X.is_complex() else stacked
    blocks = torch.bmm(weights[..., 1:], flat.reshape(len(X), block - 1, -1)).view(flat.shape)
    if X.is_complex():
        blocks = torch.view_as_complex(blocks)
    blocks.diagonal(dim1=-2, dim2=-1).add_(weights[..., :1].to(blocks.dtype))
    blocks = blocks.unbind(1)  # (indexing would zero-fill a full gradient per block)
    P = blocks[-1]
    for j in reversed(range(len(blocks) - 1)):
        P = torch.baddbmm(blocks[j], P, powers[-1])
    return _square_each(P, squarings).view(shape)


def _square_each(P: torch.Tensor, squarings: torch.Tensor) -> torch.Tensor:
    """``P[i]^(2^squarings[i])`` for matrices ``P (N, n, n)`` (``squarings`` on the host): sorted by
    their count, the matrices still squaring are a suffix, squared together while the others
    wait."""
    if len(P) == 0 or int(squarings.max()) == 0:
        return P
    uniform = bool((squarings == squarings[0]).all())
    if not uniform:
        squarings, order = squarings.sort()
        order = order.to(P.device)
        P = P.index_select(0, order)
    done = []
    for finished in torch.bincount(squarings).tolist()[:-1]:  # matrices needing exactly k squarings
        if finished:
            ready, P = P.split([finished, len(P) - finished])
            done.append(ready)
        P = P @ P
    P = torch.cat(done + [P]) if done else P
    return P if uniform else P.index_select(0, torch.argsort(order))


def _discretise_dense(dtA: torch.Tensor, dtB: torch.Tensor, disc: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dA (H, M, M), dB (H, M))`` of a dense system from ``dt A`` and ``dt B``."""
    if disc == "zoh":
        return _zoh_dense(dtA, dtB)
    eye = torch.eye(dtA.shape[-1], dtype=dtA.dtype, device=dtA.device)
    lhs = eye - dtA / 2
    return torch.linalg.solve(lhs, eye + dtA / 2), torch.linalg.solve(lhs, dtB[..., None])[..., 0]


def _dense_cells(dA: torch.Tensor, dB: torch.Tensor, C: torch.Tensor, L: int) -> torch.Tensor:
    """One-sided cells ``(c, H, L)`` of a dense system discretised at half the step: cell
    ``m >= 1`` is ``2 Re C dA^(2m - 1) (I + dA) dB``, a Krylov sequence of ``dA^2`` from
    ``dA (I + dA) dB`` over ``L - 1`` terms (half the length of pairing ``2L`` half-step taps),
    formed by doubling (:func:`krylov`: ``log2 L`` squarings, no other matrix-matrix products) and
    read out by one product with ``C``; the origin half cell is ``2 Re C dB``."""
    origin = 2 * torch.einsum("chm,hm->ch", C, dB).real[..., None]
    if L == 1:
        return origin
    drive = torch.einsum("hmn,hn->hm", dA, dB)
    drive = drive + torch.einsum("hmn,hn->hm", dA, drive)
    columns = krylov(dA @ dA, drive, L - 1)  # (H, M, L - 1)
    cells = torch.bmm(C.transpose(0, 1), columns).real.transpose(0, 1)  # (c, H, L - 1)
    return torch.cat([origin, 2 * cells], dim=-1)


def _zoh_dense(dtA: torch.Tensor, dtB: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ZOH ``dA = exp(dt A)``, ``dB = A^{-1} (exp(dt A) - I) B`` for dense ``dtA (H, M, M)`` and
    ``dtB (H, M)``, both from one exponential of the augmented matrix ``[[dt A, dt B], [0, 0]]``
    (whose top-right column is ``dB``): no linear solve, and no trouble when ``A`` is singular."""
    H, M = dtB.shape
    augmented = torch.zeros(H, M + 1, M + 1, dtype=dtA.dtype, device=dtA.device)
    augmented[:, :M, :M] = dtA
    augmented[:, :M, M] = dtB
    E = _expm(augmented)
    return E[:, :M, :M], E[:, :M, M]


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
