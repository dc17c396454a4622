"""The S4 layer: a bank of SSM convolutions over ``(B, H, L)`` with a recurrent view."""
from __future__ import annotations

import torch
from torch import nn

from .._checks import check_choice
from ..kernels.ssm import DiscreteSSM, centred_kernel, krylov, ssm_kernel
from ..ops.fftconv import fft_conv
from ..ops.scan import linear_scan

__all__ = ["S4", "check_channels_first"]

_ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh, "identity": nn.Identity}


def check_channels_first(x: torch.Tensor, channels: int, spatial_dims: int, name: str = "input") -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, channels, *S)`` with ``spatial_dims`` axes."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != spatial_dims + 2:
        raise ValueError(
            f"{name} must have rank {spatial_dims + 2} (B, C{', *S' if spatial_dims else ''}) with "
            f"{spatial_dims} spatial axes, got rank {x.ndim} with shape {tuple(x.shape)}"
        )
    if x.shape[1] != channels:
        raise ValueError(f"{name} has {x.shape[1]} channels (dim 1) but the layer expects {channels}")
    if any(s == 0 for s in x.shape[2:]):
        raise ValueError(f"{name} has an empty spatial axis: {tuple(x.shape)}")


class S4(nn.Module):
    """Structured state-space sequence layer (S4 / S4D) on channels-first sequences.

    ``y = out_proj(dropout(act(K * x + D x)))`` where ``K`` is the SSM kernel of each of the
    ``d_model`` channels (``channels`` kernels per channel), applied by FFT convolution.

    Args:
        d_model: channels ``H`` of the input ``(B, H, L)``.
        d_state: real state size ``N`` per channel (``N // 2`` complex modes).
        kernel: ``"s4d"`` (diagonal) or ``"s4"`` (diagonal plus low rank).
        bidirectional: add an anti-causal kernel (no recurrent view then).
        channels: kernels per input channel; their outputs are mixed by ``out_proj``.
        activation: ``"gelu"``, ``"silu"``, ``"relu"``, ``"tanh"`` or ``"identity"``.
        out_proj: ``"glu"`` (pointwise to ``2H`` then GLU, as in S4), ``"linear"`` or ``None``
            (only allowed with ``channels=1``).
        dropout: dropout after the activation.
        init, disc, dt_min, dt_max, bandlimit, lr, rank: passed to the kernel generator.

    The recurrent view (causal layers only) carries a state ``(B, H, M, 2)``: the complex state
    of ``M = d_state // 2`` modes as real pairs. :meth:`stream` processes a chunk of a longer
    sequence and :meth:`step` one sample; both reproduce :meth:`forward` on the whole sequence.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        kernel: str = "s4d",
        bidirectional: bool = False,
        channels: int = 1,
        activation: str = "gelu",
        out_proj: str | None = "glu",
        dropout: float = 0.0,
        init: str | None = None,
        disc: str | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bandlimit: float | None = None,
        lr: float | None = None,
        **kernel_kwargs,
    ) -> None:
        super().__init__()
        check_choice("activation", activation, _ACTIVATIONS)
        if out_proj not in ("glu", "linear", None):
            raise ValueError(f"out_proj must be 'glu', 'linear' or None, got {out_proj!r}")
        if out_proj is None and channels != 1:
            raise ValueError(f"out_proj=None needs channels=1 to keep d_model outputs, got channels={channels}")
        self.d_model, self.d_state, self.channels = d_model, d_state, channels
        self.bidirectional = bidirectional
        self.kernel = ssm_kernel(
            kernel, d_model, d_state, channels * (2 if bidirectional else 1),
            init=init, disc=disc, dt_min=dt_min, dt_max=dt_max, bandlimit=bandlimit, lr=lr, **kernel_kwargs,
        )
        self.D = nn.Parameter(torch.randn(channels, d_model))
        self.act = _ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        width = channels * d_model
        if out_proj == "glu":
            self.out_proj = nn.Sequential(nn.Conv1d(width, 2 * d_model, 1), nn.GLU(dim=1))
        elif out_proj == "linear":
            self.out_proj = nn.Conv1d(width, d_model, 1)
        else:
            self.out_proj = nn.Identity()

    # -- convolution view --------------------------------------------------------------------

    def forward(self, x: torch.Tensor, rate: float = 1.0) -> torch.Tensor:
        """``x (B, H, L) -> (B, H, L)``; ``rate`` rescales the SSM step (``dt * rate``)."""
        check_channels_first(x, self.d_model, 1)
        L = x.shape[-1]
        if self.bidirectional:
            # Halves sampled at half the step, so pairs of taps tile the cells centred on the
            # samples (the same construction as S4ND, which makes S4ND(ndim=1) this layer).
            halves = self.kernel(2 * L, rate / 2)  # (2C, H, 2L)
            k = centred_kernel(halves[: self.channels], halves[self.channels :], half_step=True)
        else:
            k = self.kernel(L, rate)  # (C, H, L)
        y = self._depthwise(x, k)
        return self._mix(x, y)

    def _depthwise(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Convolve each channel with its ``channels`` kernels: ``(B, H, L) -> (B, C, H, L)``."""
        B, H, L = x.shape
        c = self.channels
        u = x.unsqueeze(1).expand(B, c, H, L).reshape(B, c * H, L)
        y = fft_conv(u, k.reshape(c * H, -1).to(x.dtype if x.dtype == torch.float64 else torch.float32),
                     causal=not self.bidirectional)
        return y.view(B, c, H, L)

    def _mix(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Skip term, activation, dropout and output projection: ``(B, C, H, L) -> (B, H, L)``."""
        y = y + self.D[..., None].to(y.dtype) * x.unsqueeze(1)
        y = self.dropout(self.act(y)).flatten(1, 2).to(x.dtype)
        return self.out_proj(y)

    # -- recurrent view ----------------------------------------------------------------------

    def default_state(self, batch: int, device: torch.device | None = None) -> torch.Tensor:
        """Zero state ``(batch, H, M, 2)`` for :meth:`stream` / :meth:`step`."""
        self._check_causal()
        device = device if device is not None else self.D.device
        dtype = torch.float64 if self.D.dtype == torch.float64 else torch.float32
        return torch.zeros(batch, self.d_model, self.kernel.modes, 2, device=device, dtype=dtype)

    def stream(
        self, x: torch.Tensor, state: torch.Tensor | None = None, rate: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Process a chunk ``x (B, H, Lc)`` of a longer sequence.

        Returns ``(y (B, H, Lc), state)``; feed the state to the next chunk. Chunks of any
        sizes reproduce ``forward`` on their concatenation.
        """
        self._check_causal()
        check_channels_first(x, self.d_model, 1)
        B, H, Lc = x.shape
        if state is None:
            state = self.default_state(B, x.device)
        expected = (B, H, self.kernel.modes, 2)
        if tuple(state.shape) != expected:
            raise ValueError(f"state must have shape {expected}, got {tuple(state.shape)}")
        ssm = self.kernel.discrete(rate)
        h = torch.view_as_complex(state.to(ssm.dB.real.dtype).contiguous())  # (B, H, M)
        y = self._depthwise(x, self.kernel(Lc, rate)) + self._state_output(ssm, h, Lc).to(x.dtype)
        h = self._advance_state(ssm, h, x)
        return self._mix(x, y), torch.view_as_real(h).to(state.dtype)

    def step(self, x: torch.Tensor, state: torch.Tensor, rate: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """One sample ``x (B, H)``: the one-sample case of :meth:`stream`."""
        if x.ndim != 2:
            raise ValueError(f"step expects x of shape (B, H), got {tuple(x.shape)}")
        y, state = self.stream(x[..., None], state, rate)
        return y[..., 0], state

    @staticmethod
    def _state_output(ssm: DiscreteSSM, h: torch.Tensor, L: int) -> torch.Tensor:
        """Contribution of the carried state to the next ``L`` outputs: ``(B, C, H, L)``.

        ``y_state[l] = 2 Re(C dA^(l+1) h)``, with ``C dA^l`` built as a Krylov sequence of ``dA^T``.
        """
        dA_t = ssm.dA if ssm.diagonal else ssm.dA.transpose(-1, -2)
        readout = krylov(dA_t, ssm.C, L)  # (C, H, M, L): (C dA^l)^T
        return 2 * torch.einsum("chml,bhm->bchl", readout, ssm.apply(h)).real

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
            raise ValueError("a bidirectional S4 layer has no recurrent view (stream/step need bidirectional=False)")

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, d_state={self.d_state}, channels={self.channels}, bidirectional={self.bidirectional}"
