"""The S4 layer: a bank of SSM convolutions over sequences ``(B, dim, L)`` with a recurrent view.

A bidirectional S4 is :class:`~s4vision.layers.S4ND` with ``ndim=1`` (the same code). A causal
one uses the generator's causal kernel, ``K[l] = 2 Re(C dA^l dB)``, which the recurrence
``x_t = dA x_{t-1} + dB u_t`` reproduces exactly, so it can also run one sample or one chunk at
a time (:meth:`S4.stream`, :meth:`S4.step`).

Continuous time. ``rate`` may also be a tensor of per-sample rates ``(L,)`` or ``(B, L)``, the
step before each sample in reference steps (:func:`s4vision.sampling.frame_rates` turns frame
timestamps into them): the SSM then steps ``dt * rate_i``, discretised per step
(:mod:`s4vision.layers._time_varying`, a time-varying :func:`~s4vision.ops.linear_scan`), causal
and bidirectional alike, offline and streaming. Rates that are all equal (within
:data:`s4vision.sampling.UNIFORM_RTOL`) take the convolution path at that one rate.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple, Union

import torch

from .._checks import check_channels_first
from ..errors import InvalidTypeError, InvalidValueError
from ..kernels.ssm import DiscreteSSM, S4DKernel, krylov
from ..ops.scan import linear_scan
from ..sampling import GridView, check_rate, uniform_rate
from ._fftconv1d import fft_conv1d
from ._lean_kernel import lean_causal_kernel, lean_centred_kernel
from ._time_varying import bidirectional_time_varying, causal_time_varying
from .s4nd import S4ND

RateArg = Optional[Union[float, torch.Tensor]]

__all__ = ["S4"]


class S4(S4ND):
    """Structured state-space sequence layer (S4 / S4D) on channels-first sequences ``(B, dim, L)``.

    ``y = out_proj(dropout(act(K * x + D x)))`` where ``K`` holds the ``channels`` SSM kernels of
    each feature, applied by FFT convolution. Arguments are :class:`~s4vision.layers.S4ND`'s
    with ``ndim=1`` (and ``bidirectional=False`` by default); ``l_max`` is the reference length:
    ``forward`` on ``L`` samples uses the step ``dt * l_max / L``, or ``dt * rate`` for an
    explicit ``rate``.

    The recurrent view (causal layers only) carries a state ``(B, dim, M, 2)``: the complex state
    of ``M = d_state // 2`` modes as real pairs. :meth:`stream` processes a chunk of a longer
    sequence and :meth:`step` one sample; both reproduce :meth:`forward` on the whole sequence
    at the same ``rate``.
    """

    def __init__(
        self,
        dim: int,
        d_state: int = 64,
        kernel: str = "s4d",
        *,
        bidirectional: bool = False,
        channels: int = 1,
        l_max: Optional[Union[int, Sequence[int], GridView]] = None,
        bandlimit: Optional[float] = None,
        activation: Optional[str] = "gelu",
        out_proj: Optional[str] = "glu",
        out_dim: Optional[int] = None,
        dropout: float = 0.0,
        device=None,
        dtype=None,
        **kernel_kwargs: Any,
    ) -> None:
        kernel_kwargs.setdefault("disc", None)  # the generator's own default (S4: bilinear)
        super().__init__(
            dim, 1, d_state, kernel, bidirectional=bidirectional, channels=channels, rank=1, l_max=l_max,
            bandlimit=bandlimit, activation=activation, out_proj=out_proj, out_dim=out_dim, dropout=dropout,
            device=device, dtype=dtype, **kernel_kwargs,
        )

    @property
    def generator(self):
        """The kernel generator of the sequence axis (an :class:`~s4vision.kernels.SSMKernelBase`)."""
        return self.ssm[0]

    # -- convolution view --------------------------------------------------------------------

    def kernel(self, length: int, rate: Optional[float] = None) -> torch.Tensor:
        """The kernel for ``length`` samples: causal ``(channels * dim, length)`` (tap ``j``
        weights ``u[t - j]``), or centred ``(channels * dim, 2 length - 1)`` if bidirectional."""
        if self.bidirectional:
            return super().kernel((length,), rate)
        (rate,) = self.grid.rates((length,), rate)
        return self.generator(length, rate).flatten(0, 1)

    def forward(self, x: torch.Tensor, rate: RateArg = None) -> torch.Tensor:
        """``x (B, dim, L) -> (B, out_dim, L)``. ``rate``: None (derived from ``l_max``), a number,
        or per-sample rates ``(L,)`` / ``(B, L)`` (the step before each sample)."""
        rate, rates = self._split_rate(x, rate)
        if rates is not None:
            u = self._per_kernel(x)
            if self.bidirectional:
                y = bidirectional_time_varying(self.generator, x, rates)
            else:
                y, _ = causal_time_varying(self.generator, x, rates)
            return self._mix(y + self._skip_weight(y.dtype) * u, x.dtype)
        check_channels_first(x, self.dim, 1)
        self.grid.observe(x.shape[2:])
        L = x.shape[-1]
        (rate,) = self.grid.rates((L,), rate)
        return self._convolve(x, self._training_kernel(L, rate), start=L - 1 if self.bidirectional else 0)

    def _training_kernel(self, L: int, rate: float) -> torch.Tensor:
        """The kernel of :meth:`kernel`; while autograd records, S4D kernels come from
        :mod:`~s4vision.layers._lean_kernel` (the same values, memory not growing with ``L x modes``)."""
        if not (torch.is_grad_enabled() and isinstance(self.generator, S4DKernel)):
            return self.kernel(L, rate)
        if self.bidirectional:
            return lean_centred_kernel(self.generator, L, rate, True).flatten(0, 1)
        return lean_causal_kernel(self.generator, L, rate).flatten(0, 1)

    def _split_rate(self, x: torch.Tensor, rate: RateArg) -> Tuple[Optional[float], Optional[torch.Tensor]]:
        """``(rate, None)`` for a number, None or uniform per-sample rates (their one value);
        ``(None, rates (B', L) float64)`` for per-sample rates that vary."""
        if not isinstance(rate, torch.Tensor):
            return rate, None
        check_channels_first(x, self.dim, 1)
        B, L = x.shape[0], x.shape[-1]
        if rate.is_complex() or not rate.is_floating_point():
            raise InvalidTypeError(f"per-sample rates must be a real floating-point tensor, got dtype {rate.dtype}")
        rates = rate.detach().to(torch.float64)
        rates = rates[None] if rates.ndim == 1 else rates
        if rates.ndim != 2 or rates.shape[-1] != L or rates.shape[0] not in (1, B):
            raise InvalidValueError(f"per-sample rates must have shape ({L},), (1, {L}) or ({B}, {L}), got {tuple(rate.shape)}")
        if not bool((torch.isfinite(rates) & (rates > 0)).all()):
            raise InvalidValueError("per-sample rates must be positive and finite")
        one = uniform_rate(rates)
        return (one, None) if one is not None else (None, rates.to(x.device))

    def _causal(self, x: torch.Tensor, k: torch.Tensor, state_output: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self._convolve(x, k, 0, state_output)

    def _convolve(self, x: torch.Tensor, k: torch.Tensor, start: int, extra: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``mix(k * x + D x (+ extra))`` for kernels ``k (channels * dim, K)`` whose tap ``start``
        is the origin (0: causal, ``L - 1``: centred)."""
        u = self._per_kernel(x)
        y = fft_conv1d(u, k, start)
        if extra is not None:
            y = y + extra.to(y.dtype)
        return self._mix(torch.addcmul(y, self._skip_weight(y.dtype), u), x.dtype)

    # -- recurrent view ----------------------------------------------------------------------

    def default_state(self, batch: int, device: Optional[torch.device] = None) -> torch.Tensor:
        """Zero state ``(batch, dim, M, 2)`` for :meth:`stream` / :meth:`step`."""
        self._check_causal()
        device = device if device is not None else self.D.device
        dtype = torch.float64 if self.D.dtype == torch.float64 else torch.float32
        return torch.zeros(batch, self.dim, self.generator.modes, 2, device=device, dtype=dtype)

    def stream(
        self, x: torch.Tensor, state: Optional[torch.Tensor] = None, rate: Union[float, torch.Tensor] = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Process a chunk ``x (B, dim, Lc)`` of a longer sequence sampled at ``rate``.

        Returns ``(y (B, out_dim, Lc), state)``; feed the state to the next chunk. Chunks of any
        sizes reproduce ``forward(whole, rate)``, per-sample rates ``(Lc,)`` / ``(B, Lc)``
        included (each chunk gets its own samples' rates). A stream cannot infer its rate from the
        chunk length, so it is given (default 1: samples at the reference step).
        """
        self._check_causal()
        check_channels_first(x, self.dim, 1)
        rate, rates = self._split_rate(x, rate)
        rate = check_rate(rate) if rates is None else None
        B, H, Lc = x.shape
        if state is None:
            state = self.default_state(B, x.device)
        expected = (B, H, self.generator.modes, 2)
        if tuple(state.shape) != expected:
            raise InvalidValueError(f"state must have shape {expected}, got {tuple(state.shape)}")
        if rates is not None:
            h = torch.view_as_complex(state.to(self.generator._compute_dtype()).contiguous())
            y, h = causal_time_varying(self.generator, x, rates, h)
            y = self._mix(y + self._skip_weight(y.dtype) * self._per_kernel(x), x.dtype)
            return y, torch.view_as_real(h).to(state.dtype)
        ssm = self.generator.discrete(rate)
        h = torch.view_as_complex(state.to(ssm.dB.real.dtype).contiguous())  # (B, H, M)
        y = self._causal(x, self.generator(Lc, rate).flatten(0, 1), self._state_output(ssm, h, Lc))
        h = self._advance_state(ssm, h, x)
        return y, torch.view_as_real(h).to(state.dtype)

    def step(
        self, x: torch.Tensor, state: torch.Tensor, rate: Union[float, torch.Tensor] = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One sample ``x (B, dim)``: the one-sample case of :meth:`stream` (``rate``: a number or
        per-sample rates ``(B,)``)."""
        if x.ndim != 2:
            raise InvalidValueError(f"step expects x of shape (B, dim), got {tuple(x.shape)}")
        if isinstance(rate, torch.Tensor):
            rate = rate.reshape(-1, 1)
        y, state = self.stream(x[..., None], state, rate)
        return y[..., 0], state

    @staticmethod
    def _state_output(ssm: DiscreteSSM, h: torch.Tensor, L: int) -> torch.Tensor:
        """Contribution of the carried state to the next ``L`` outputs: ``(B, channels * dim, L)``.

        ``y_state[l] = 2 Re(C dA^(l+1) h)``, with ``C dA^l`` built as a Krylov sequence of ``dA^T``.
        """
        dA_t = ssm.dA if ssm.diagonal else ssm.dA.transpose(-1, -2)
        readout = krylov(dA_t, ssm.C, L)  # (C, H, M, L): (C dA^l)^T
        return 2 * torch.einsum("chml,bhm->bchl", readout, ssm.apply(h)).real.flatten(1, 2)

    @staticmethod
    def _advance_state(ssm: DiscreteSSM, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """State after consuming ``x (B, H, L)`` from state ``h (B, H, M)``."""
        u = x.to(ssm.dB.real.dtype)
        L = u.shape[-1]
        if ssm.diagonal:
            drive = ssm.dB[None, ..., None] * u[:, :, None, :]  # (B, H, M, L)
            return linear_scan(ssm.dA[..., None], drive, h)[..., -1]
        responses = krylov(ssm.dA, ssm.dB, L).flip(-1)  # dA^(L-1-l) dB
        return torch.einsum("hmn,bhn->bhm", ssm.power(L), h) + torch.einsum("hml,bhl->bhm", responses, u.to(h.dtype))

    def _check_causal(self) -> None:
        if self.bidirectional:
            raise InvalidValueError("a bidirectional S4 layer has no recurrent view (stream/step need bidirectional=False)")
