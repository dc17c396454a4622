"""ViS4mer: a multi-scale S4 decoder over per-frame features, for long videos, in continuous time.

Following "Long Movie Clip Classification with State-Space Video Models"
(Islam & Bertasius, ECCV 2022): an image model encodes every frame, and a
stack of stages, each

    S4 (pre-norm, residual) -> temporal pooling (length halved) -> MLP (width halved),

turns the sequence of frame features into a short, narrow one that is
averaged over time and classified. Pooling makes every stage cheaper than the
one before, so the whole decoder costs about twice its first stage: linear in
the number of frames.

Time. The paper's head indexes frames: its S4 layers step once per frame and
each stage pools pairs of frames, so the same video at 15 and at 30 fps is two
different inputs. This head reads frames as samples of a signal over time
(:mod:`s4vision.sampling`): it records the frame rate it was trained at
(``train_fps``, a buffer ``clock.fps`` that checkpoints carry, set from the
first training input when not given) and takes the frames' ``timestamps`` or
their frame rate ``fps`` next to the features. Stage ``i``'s S4 layer has a
reference step of ``2**i`` training frame intervals and steps ``dt`` times the
real elapsed time (per-step rates; uniform rates take the FFT convolution),
and stage ``i`` pools over time windows of ``2**(i+1) / train_fps`` seconds
counted from the first frame, not over pairs of frames. A window is kept when
the clip covers it: when it ends before the end of the last frame (the last
frame lasting as long as the step before it); empty windows (frames sparser
than the windows) are skipped. At the training frame rate these are exactly
the paper's pairs (an odd last frame dropped); at twice the frame rate each
window pools four frames, at half of it one. ``time_aware=False`` gives the
paper's frame-indexed head (timestamps are checked, then ignored).

Tokens. The paper flattens all the patch tokens of all frames into one
sequence of ``T * N`` tokens. ``token_pool="flatten"`` does that (with
uniformly spaced frames only: a frame's ``N`` tokens share its step); the
default, ``token_pool="mean"``,
averages each frame's tokens first, so the decoder runs over ``T`` steps: ``N``
times cheaper, which is what makes thousands of frames practical on modest
hardware. Per-frame features ``(B, T, D)`` are used as is.

Streaming. With ``bidirectional=False`` every S4 layer is causal and
:meth:`ViS4mer.stream` consumes a video chunk by chunk, with its timestamps or
frame rate: each stage carries the frames of its open time window over to the
next chunk, and the time average is kept as a running sum. The logits after
each chunk are those of :meth:`ViS4mer.forward` on the video so far (windows
that the end of the last frame completes are pooled tentatively), so after the
last chunk they equal the offline forward on the whole video, whatever the
chunk sizes and however irregular the timestamps.

:class:`VideoClassifier` puts a timm image model in front, applied to every
frame, for end-to-end use on clips ``(B, 3, T, H, W)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_non_negative_int, check_positive_int, check_positive_number
from ..errors import InvalidTypeError, InvalidValueError
from ..layers import S4, LayerNormNd, PointwiseConv, frame_tokens
from ..sampling import ReferenceClock, Timeline, check_timestamps, complete_windows, time_window_index, uniform_rate

__all__ = ["ViS4mer", "ViS4merState", "VideoClassifier", "TemporalPool"]

_TOKEN_POOLS = ("mean", "flatten")
_POOLS = ("max", "avg")
_READOUTS = ("mean", "mean_first_last")


def _steps(positions: torch.Tensor, first: float) -> torch.Tensor:
    """The step before each position, ``first`` before the first one: ``(L,)`` float64."""
    return torch.cat([positions.new_tensor([first]), positions.diff()])


class TemporalPool(nn.Module):
    """Max or average pooling over time: consecutive pairs (:meth:`forward`, ``(B, D, L) ->
    (B, D, L // 2)``) or time windows (:meth:`windows`)."""

    def __init__(self, kind: str = "max"):
        super().__init__()
        self.kind = check_choice("pool", kind, _POOLS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = F.max_pool1d if self.kind == "max" else F.avg_pool1d
        return pool(x, kernel_size=2, stride=2)

    def windows(self, x: torch.Tensor, window: torch.Tensor, count: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Pool ``x (B, D, L)`` over the windows ``0 .. count - 1``, step ``l`` in window
        ``window[l]`` (non-decreasing ``(L,)`` int64; steps in later windows are dropped).

        Returns the pooled non-empty windows ``(B, D, n)`` and their indices ``(n,)``.
        """
        keep = int((window < count).sum())
        x, window = x[..., :keep], window[:keep]
        if keep == 0:
            return x, window
        counts = torch.bincount(window, minlength=count)
        per_window = keep // count
        if per_window * count == keep and bool((counts == per_window).all()):  # equal windows: a reshape
            x = x.unflatten(-1, (count, per_window))
            pooled = x.amax(-1) if self.kind == "max" else x.mean(-1)
            return pooled, torch.arange(count, device=window.device)
        ids = counts.nonzero()[:, 0]
        rank = torch.cumsum(counts > 0, 0)[window] - 1  # each step's index among the non-empty windows
        index = rank.expand(*x.shape[:-1], -1)
        if self.kind == "max":
            pooled = x.new_full((*x.shape[:-1], len(ids)), -math.inf).scatter_reduce(-1, index, x, "amax")
        else:
            pooled = x.new_zeros(*x.shape[:-1], len(ids)).scatter_add(-1, index, x) / counts[ids].to(x.dtype)
        return pooled, ids

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


@dataclass
class _StageState:
    """What a stage carries between stream chunks: its S4 state, the steps of its open window
    ``(B, D, n)`` and their positions ``(n,)``, and the position of the last step its S4 took."""

    s4: torch.Tensor
    pending: torch.Tensor
    pending_positions: torch.Tensor
    last: Optional[float] = None


class ViS4merStage(nn.Module):
    """``x + S4(norm(x))``, then pooling over time windows and an MLP ``dim -> out_dim``.

    Stage ``index`` runs at a reference step of ``2 ** index`` training frame intervals and
    pools windows of twice that.
    """

    def __init__(self, dim: int, out_dim: int, d_state: int, kernel: str, pool: str, bidirectional: bool,
                 dropout: float, index: int = 0, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.unit, self.width = 2.0 ** index, 2.0 ** (index + 1)
        self.norm = LayerNormNd(dim, **dd)
        self.s4 = S4(dim, d_state, kernel=kernel, bidirectional=bidirectional, dropout=dropout, **dd)
        self.drop = nn.Dropout(dropout)
        self.pool = TemporalPool(pool)
        self.mlp = nn.Sequential(PointwiseConv(dim, out_dim, **dd), nn.GELU(), nn.Dropout(dropout))

    def mix(self, x: torch.Tensor, rate) -> torch.Tensor:
        """The residual S4 block at ``rate`` (a number or per-step rates)."""
        return x + self.drop(self.s4(self.norm(x), rate=rate))

    def forward(self, x: torch.Tensor, positions: Optional[torch.Tensor] = None, first: Optional[float] = None,
                end: Optional[float] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """``x (B, dim, L)`` at ``positions (L,)`` (training frames from the first frame; default
        ``0 .. L - 1`` at this stage's step), ``first`` the step before the first one (default one
        stage step), ``end`` where the sequence ends (default one stage step after the last).
        Returns ``(B, out_dim, n)`` and the positions of its ``n`` windows."""
        L = x.shape[-1]
        if positions is None:
            positions = torch.arange(L, dtype=torch.float64, device=x.device) * self.unit
        first = self.unit if first is None else first
        end = float(positions[-1]) + self.unit if end is None else end
        x = self.mix(x, _steps(positions, first) / self.unit)
        x, ids = self.pool.windows(x, time_window_index(positions, self.width), complete_windows(end, self.width))
        return self._project(x), ids.to(torch.float64) * self.width

    def _project(self, pooled: torch.Tensor) -> torch.Tensor:
        if pooled.shape[-1]:
            return self.mlp(pooled)
        return pooled.new_zeros(pooled.shape[0], self.mlp[0].out_channels, 0)

    def stream(self, x: torch.Tensor, positions: torch.Tensor, first: Optional[float], state: _StageState,
               closed: float) -> Tuple[torch.Tensor, torch.Tensor, _StageState]:
        """Next steps ``x (B, dim, Lc)`` at ``positions (Lc,)`` (``first``: the step before the first
        one when this stage has taken none yet). Pools the windows that end by ``closed`` and
        carries the rest; returns their outputs, positions and the new state."""
        s4_state, last = state.s4, state.last
        members, member_positions = state.pending, state.pending_positions
        if x.shape[-1]:
            before = first if last is None else float(positions[0]) - last
            z, s4_state = self.s4.stream(self.norm(x), s4_state, rate=_steps(positions, before) / self.unit)
            members = torch.cat([members, x + self.drop(z)], dim=-1)
            member_positions = torch.cat([member_positions, positions])
            last = float(positions[-1])
        window = time_window_index(member_positions, self.width)
        count = complete_windows(closed, self.width)
        pooled, ids = self.pool.windows(members, window, count)
        done = int((window < count).sum())
        state = _StageState(s4_state, members[..., done:], member_positions[done:], last)
        return self._project(pooled), ids.to(torch.float64) * self.width, state


@dataclass
class ViS4merState:
    """What :meth:`ViS4mer.stream` carries between chunks.

    Attributes:
        stages: per stage, its S4 state, the steps of its open time window and their positions.
        total: running sum ``(B, D_out)`` of the last stage's outputs.
        count: how many outputs ``total`` sums.
        first, latest: the first and the newest of those outputs ``(B, D_out)`` (``None`` before
            the first), for ``readout="mean_first_last"``.
        start: the first frame's timestamp per row ``(B,)`` (seconds), when timestamps are given.
        last_position, last_step: the newest frame's position and the step before it
            (training frame intervals from the first frame).
        frames: frames seen.
        held: a first frame ``(B, D, 1)`` waiting for the second one (timestamps given, one frame
            in the first chunk: its step is the one after it), with its position.
    """

    stages: List[_StageState]
    total: torch.Tensor
    count: int = 0
    first: Optional[torch.Tensor] = None
    latest: Optional[torch.Tensor] = None
    start: Optional[torch.Tensor] = None
    last_position: Optional[float] = None
    last_step: Optional[float] = None
    frames: int = 0
    held: Optional[Tuple[torch.Tensor, torch.Tensor]] = field(default=None, repr=False)


class ViS4mer(nn.Module):
    """Multi-scale temporal S4 decoder and classifier over per-frame features, in continuous time.

    Args:
        dim: feature size ``D`` of the input ``(B, T, D)`` or ``(B, T, N, D)``.
        num_classes: classifier outputs (0: no classifier, :meth:`forward` returns
            the pooled features).
        embed_dim: width after the input projection; every stage halves it.
        depth: number of stages; the input needs to span at least ``2 ** depth`` training frames.
        d_state: S4 state size.
        kernel: S4 kernel, ``"s4d"`` or ``"s4"``.
        pool: temporal pooling, ``"max"`` (as in the paper) or ``"avg"``.
        bidirectional: bidirectional S4 layers; ``False`` makes them causal (enables :meth:`stream`).
        token_pool: for token input ``(B, T, N, D)``: ``"mean"`` averages each
            frame's tokens, ``"flatten"`` runs over all ``T * N`` tokens (the paper).
        train_fps: the frame rate the head is trained at (``None``: the first frame rate seen in
            training; a head that never saw one reads every input at its training rate).
        time_aware: step and pool by time (the default) or, ``False``, by frame index as in
            the paper (a frame-rate-dependent control).
        readout: what the classifier sees of the last stage's sequence: ``"mean"``, its time
            average (the paper), or ``"mean_first_last"``, the average next to its first and
            last time windows (three times the width; windows are in time, so the readout is
            the same at any frame rate). The second lets the head tell where in the clip
            something happened, which the average alone hides.
        dropout: dropout in the stages; ``drop_rate``: before the classifier.
        device, dtype: where and in which dtype to create the parameters.

    Shapes: ``(B, T, D)`` or ``(B, T, N, D)`` -> logits ``(B, num_classes)``; ``timestamps`` ``(T,)``
    or ``(B, T)`` seconds, or ``fps``, next to the features.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        *,
        embed_dim: int = 256,
        depth: int = 3,
        d_state: int = 64,
        kernel: str = "s4d",
        pool: str = "max",
        bidirectional: bool = True,
        token_pool: str = "mean",
        train_fps: Optional[float] = None,
        time_aware: bool = True,
        readout: str = "mean",
        dropout: float = 0.0,
        drop_rate: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        for name, value in (("dim", dim), ("embed_dim", embed_dim), ("depth", depth)):
            check_positive_int(name, value)
        check_non_negative_int("num_classes", num_classes)
        if embed_dim % 2**depth:
            raise InvalidValueError(f"embed_dim={embed_dim} must be divisible by 2 ** depth = {2 ** depth} "
                                    "(widths halve per stage)")
        check_choice("token_pool", token_pool, _TOKEN_POOLS)
        check_choice("pool", pool, _POOLS)
        self.readout = check_choice("readout", readout, _READOUTS)
        if not isinstance(time_aware, bool):
            raise InvalidTypeError(f"time_aware must be a bool, got {time_aware!r}")
        dd = dict(device=device, dtype=dtype)
        self.dim, self.num_classes = dim, num_classes
        self.bidirectional, self.token_pool, self.depth = bidirectional, token_pool, depth
        self.time_aware = time_aware
        self.clock = ReferenceClock(train_fps, device=device)
        self.proj = PointwiseConv(dim, embed_dim, **dd)
        widths = [embed_dim // 2**i for i in range(depth + 1)]
        self.stages = nn.ModuleList(
            ViS4merStage(widths[i], widths[i + 1], d_state, kernel, pool, bidirectional, dropout, index=i, **dd)
            for i in range(depth)
        )
        self.num_features = widths[-1]
        self.head_hidden_size = self.num_features * (3 if readout == "mean_first_last" else 1)  # what fc sees
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.head_hidden_size, num_classes, **dd) if num_classes > 0 else nn.Identity()

    @property
    def train_fps(self) -> Optional[float]:
        """The frame rate the head was trained at (``None`` while unknown)."""
        return self.clock.train_fps

    # -- input -----------------------------------------------------------------------------

    def _sequence(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` or ``(B, T, N, D)`` -> channels-first ``(B, embed_dim, L)``."""
        if x.ndim not in (3, 4) or x.shape[-1] != self.dim:
            raise InvalidValueError(
                f"expected features (B, T, {self.dim}) or (B, T, N, {self.dim}), got {tuple(x.shape)}"
            )
        if x.ndim == 4:
            x = x.mean(dim=2) if self.token_pool == "mean" else x.flatten(1, 2)
        return self.proj(x.transpose(1, 2))

    def _tokens_per_frame(self, x: torch.Tensor) -> int:
        return x.shape[2] if x.ndim == 4 and self.token_pool == "flatten" else 1

    def _timelines(self, x: torch.Tensor, timestamps, fps) -> List[Timeline]:
        """Where the steps of ``x (B, T, ...)`` lie in time (:meth:`ReferenceClock.timelines`), in
        training frame intervals (tokens with ``token_pool="flatten"``)."""
        B, T, N = x.shape[0], x.shape[1], self._tokens_per_frame(x)
        if not self.time_aware:
            self.clock.timelines(T, B, timestamps, fps)  # checked, then ignored
            return self.clock.timelines(T * N, B, device=x.device)
        frames = self.clock.timelines(T, B, timestamps, fps, device=x.device)
        if N == 1:
            return frames
        # flattened tokens: a frame's N tokens share its step, so the frames must be evenly spaced
        rate = uniform_rate(_steps(frames[0].positions, frames[0].first)) if len(frames) == 1 else None
        if rate is None:
            raise InvalidValueError("token_pool='flatten' needs uniformly spaced timestamps (or fps)")
        positions = torch.arange(T * N, dtype=torch.float64, device=x.device) * rate
        return [Timeline(None, positions, rate, T * N * rate)]

    # -- offline ---------------------------------------------------------------------------

    def _features(self, x: torch.Tensor, positions: torch.Tensor, first: float, end: float) -> torch.Tensor:
        """Channels-first ``x (B, embed_dim, L)`` -> the last stage's sequence ``(B, C, n)``."""
        need = 2 ** self.depth
        if complete_windows(end, need) == 0:
            seconds = f" ({need / self.train_fps:g} s at {self.train_fps:g} fps)" if self.train_fps else ""
            raise InvalidValueError(
                f"a {self.depth}-stage ViS4mer needs an input spanning at least {need} steps at its training "
                f"frame rate{seconds}; this one spans {end:g}"
            )
        for stage in self.stages:
            x, positions = stage(x, positions, first, end)
            first = stage.width
        return x

    def forward_features(self, x: torch.Tensor, timestamps=None, fps: Optional[float] = None) -> torch.Tensor:
        """Features ``(B, T, D)`` / ``(B, T, N, D)`` -> last stage's sequence ``(B, C, n)``, ``n`` the
        time windows of the last stage (``T / 2**depth`` at the training frame rate). Rows with
        timestamps of different spacing can give different ``n``: :meth:`forward` takes those."""
        groups = self._timelines(x, timestamps, fps)
        seq = self._sequence(x)
        if len(groups) == 1:
            _, positions, first, end = groups[0]
            return self._features(seq, positions, first, end)
        outputs = [self._features(seq[rows], p, first, end) for rows, p, first, end in groups]
        if len({o.shape[-1] for o in outputs}) > 1:
            raise InvalidValueError("rows whose timestamps differ give sequences of different lengths; use forward()")
        return self._scatter_rows(groups, outputs, seq.shape[0])

    @staticmethod
    def _scatter_rows(groups, outputs: List[torch.Tensor], batch: int) -> torch.Tensor:
        rows = torch.cat([g[0] for g in groups])
        out = torch.cat(outputs)
        return out[torch.argsort(rows)] if out.shape[0] == batch else out

    def _readout(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's sequence ``(B, C, L)`` -> what the classifier sees ``(B, head_hidden_size)``."""
        return self._combine(x.mean(dim=-1), x[..., 0], x[..., -1])

    def _combine(self, mean: torch.Tensor, first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """The readout from the time average and the first and last windows, each ``(B, C)``."""
        return mean if self.readout == "mean" else torch.cat([mean, first, last], dim=-1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The readout of ``(B, C, L)`` (its time average, or with ``readout="mean_first_last"``
        also its first and last windows), then the classifier (skipped with ``pre_logits``)."""
        x = self.head_drop(self._readout(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor, timestamps=None, fps: Optional[float] = None) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of features ``x`` whose frames were taken at ``timestamps``
        (``(T,)`` or ``(B, T)`` seconds) or at ``fps``; neither: at the training frame rate."""
        groups = self._timelines(x, timestamps, fps)
        seq = self._sequence(x)
        if len(groups) == 1:
            _, positions, first, end = groups[0]
            return self.forward_head(self._features(seq, positions, first, end))
        readouts = [self._readout(self._features(seq[rows], p, first, end)) for rows, p, first, end in groups]
        pooled = self._scatter_rows(groups, readouts, seq.shape[0])
        return self.fc(self.head_drop(pooled))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        dd = dict(device=self.proj.weight.device, dtype=self.proj.weight.dtype)
        self.fc = nn.Linear(self.head_hidden_size, num_classes, **dd) if num_classes > 0 else nn.Identity()

    # -- streaming -------------------------------------------------------------------------

    def default_state(self, batch: int, device: torch.device | None = None) -> ViS4merState:
        """The state before the first frame, for :meth:`stream`."""
        if self.bidirectional:
            raise InvalidValueError("stream needs a causal ViS4mer (bidirectional=False)")
        device = device if device is not None else self.proj.weight.device
        stages = [
            _StageState(stage.s4.default_state(batch, device),
                        torch.zeros(batch, stage.norm.normalized_shape[0], 0, device=device),
                        torch.zeros(0, dtype=torch.float64, device=device))
            for stage in self.stages
        ]
        return ViS4merState(stages, torch.zeros(batch, self.num_features, device=device), 0)

    def _stream_positions(self, x: torch.Tensor, L: int, state: ViS4merState, timestamps, fps):
        """Positions ``(L,)`` of the chunk's steps, the step before its first one (None: not known
        yet) and the rows' start times."""
        N = self._tokens_per_frame(x)
        if timestamps is not None and fps is not None:
            raise InvalidValueError("give the frames' timestamps or their fps, not both")
        ts = None if timestamps is None else check_timestamps(timestamps, x.shape[1])
        rate = 1.0
        if fps is not None:
            fps = check_positive_number("fps", fps)
            self.clock.observe(fps)
            rate = self.clock.rate(fps)
        start = state.start
        if not self.time_aware or ts is None:
            rate = rate if self.time_aware else 1.0
            offset = 0.0 if state.last_position is None else state.last_position + rate
            return offset + torch.arange(L, dtype=torch.float64, device=x.device) * rate, rate, start
        if N > 1:
            raise InvalidValueError("stream with token_pool='flatten' takes fps, not timestamps")
        ts = ts.reshape(-1, ts.shape[-1]).to(x.device)
        if ts.shape[0] not in (1, x.shape[0]):
            raise InvalidValueError(f"timestamps have {ts.shape[0]} rows for a batch of {x.shape[0]}")
        if start is None:
            start = ts[:, 0].clone()
        reference = self.clock.reference_fps(ts)
        positions = (ts - start[:, None]) * reference
        if positions.shape[0] > 1 and not torch.allclose(positions, positions[:1].expand_as(positions), rtol=0, atol=1e-9):
            raise InvalidValueError("stream takes rows with the same timing (relative to their first frame); "
                                    "stream videos with different timestamps one per call")
        positions = positions[0]
        if state.last_position is not None and not float(positions[0]) > state.last_position:
            raise InvalidValueError(
                f"timestamps must keep increasing across chunks: {float(ts[0, 0]):g} s follows a frame at "
                f"{float(start[0]) + state.last_position / reference:g} s"
            )
        if state.last_position is not None:
            first = float(positions[0]) - state.last_position
        elif L >= 2:
            first = float(positions[1] - positions[0])
        else:
            first = None
        return positions, first, start

    def stream(
        self, x: torch.Tensor, state: ViS4merState | None = None, timestamps=None, fps: Optional[float] = None,
    ) -> tuple[torch.Tensor, ViS4merState]:
        """Consume the next frames ``(B, Tc, D)`` or ``(B, Tc, N, D)`` of a video, taken at
        ``timestamps`` (``(Tc,)`` or ``(B, Tc)`` seconds, rows with the same timing) or ``fps``.

        Returns the logits for the video so far and the state for the next chunk. After the last
        chunk they equal :meth:`forward` on the whole video. Until the video spans ``2 ** depth``
        training frames the time average is empty and taken as zero.
        """
        if x.ndim in (3, 4) and x.shape[1] == 0:
            raise InvalidValueError(f"empty chunk: {tuple(x.shape)}")
        if state is None:
            state = self.default_state(x.shape[0], x.device)
        if not isinstance(state, ViS4merState) or len(state.stages) != self.depth:
            raise InvalidTypeError(f"state must be a ViS4merState from this model, got {type(state).__name__}")
        seq = self._sequence(x)
        positions, first, start = self._stream_positions(x, seq.shape[-1], state, timestamps, fps)
        frames = state.frames + seq.shape[-1]
        if state.held is not None:  # the held first frame now knows the step after it
            held, held_position = state.held
            seq, positions = torch.cat([held, seq], dim=-1), torch.cat([held_position, positions])
            first = float(positions[1] - positions[0])
        if first is None:  # a lone first frame: hold it until the step after it is known
            state = replace(state, start=start, last_position=float(positions[-1]), frames=frames,
                            held=(seq, positions))
            return self._stream_logits(state, state.total.new_zeros(*state.total.shape, 0)), state
        steps = _steps(positions, first)
        last_position, last_step = float(positions[-1]), float(steps[-1])
        stages, out = self._stream_stages(seq, positions, first, state.stages, closed=last_position)
        total, count, first_out, latest = state.total, state.count, state.first, state.latest
        if out.shape[-1]:
            total, count, latest = total + out.sum(dim=-1), count + out.shape[-1], out[..., -1]
            first_out = out[..., 0] if first_out is None else first_out
        # logits as if the video ended here: flush the windows the last frame's end completes
        _, tentative = self._stream_stages(seq[..., :0], positions[:0], first, stages, closed=last_position + last_step)
        state = ViS4merState(stages, total, count, first_out, latest, start, last_position, last_step, frames, None)
        return self._stream_logits(state, tentative), state

    def _stream_logits(self, state: ViS4merState, tentative: torch.Tensor) -> torch.Tensor:
        """Logits of the outputs so far (``state``) and the ``tentative`` ones ``(B, C, n)`` that
        the end of the newest frame completes, as :meth:`forward_head` on all of them."""
        mean = (state.total + tentative.sum(dim=-1)) / max(state.count + tentative.shape[-1], 1)
        first = state.first if state.first is not None else tentative[..., 0] if tentative.shape[-1] else None
        last = tentative[..., -1] if tentative.shape[-1] else state.latest
        if first is None:  # no window yet: as the mean, zeros
            first = last = torch.zeros_like(mean)
        return self.fc(self.head_drop(self._combine(mean, first, last)))

    def _stream_stages(self, x, positions, first, stage_states, closed):
        new_states = []
        for stage, stage_state in zip(self.stages, stage_states):
            x, positions, stage_state = stage.stream(x, positions, first, stage_state, closed)
            new_states.append(stage_state)
            first = stage.width
        return new_states, x

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, bidirectional={self.bidirectional}, token_pool={self.token_pool!r}, "
                f"train_fps={self.train_fps}, time_aware={self.time_aware}, readout={self.readout!r}")


class VideoClassifier(nn.Module):
    """A timm image model applied to every frame, feeding a :class:`ViS4mer` head.

    Args:
        encoder: a timm image model; its pre-logits features (or its tokens, when
            the head flattens tokens) describe each frame.
        head: the ViS4mer head; ``head.dim`` must equal ``encoder.num_features``.
        freeze_encoder: keep the encoder's weights fixed (and in eval mode), and
            run it without autograd.
        frame_batch: frames per encoder forward pass (None: all ``B * T`` at once);
            bounds memory on long clips.

    Shapes: clips ``(B, 3, T, H, W)`` -> logits ``(B, num_classes)``; the frames' ``timestamps``
    or ``fps`` go to the head.
    """

    def __init__(self, encoder: nn.Module, head: ViS4mer, freeze_encoder: bool = True, frame_batch: int | None = None):
        super().__init__()
        dim = getattr(encoder, "num_features", None)
        if dim != head.dim:
            raise InvalidValueError(f"encoder gives {dim}-dim features but head.dim is {head.dim}")
        if frame_batch is not None and frame_batch <= 0:
            raise InvalidValueError(f"frame_batch must be positive, got {frame_batch}")
        self.encoder, self.head = encoder, head
        self.freeze_encoder, self.frame_batch = freeze_encoder, frame_batch
        if freeze_encoder:
            self.encoder.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "VideoClassifier":
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        if self.head.token_pool == "flatten":
            return frame_tokens(self.encoder, frames)
        return self.encoder.forward_head(self.encoder.forward_features(frames), pre_logits=True)

    def encode_frames(self, clips: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, 3, T, H, W)`` -> frame features ``(B, T, D)`` (or tokens ``(B, T, N, D)``)."""
        if clips.ndim != 5 or clips.shape[1] != 3:
            raise InvalidValueError(f"expected clips (B, 3, T, H, W), got {tuple(clips.shape)}")
        B, _, T = clips.shape[:3]
        frames = clips.transpose(1, 2).flatten(0, 1)  # (B * T, 3, H, W)
        step = self.frame_batch or frames.shape[0]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            features = torch.cat([self._encode(chunk) for chunk in frames.split(step)])
        return features.view(B, T, *features.shape[1:])

    def forward(self, clips: torch.Tensor, timestamps=None, fps: Optional[float] = None) -> torch.Tensor:
        return self.head(self.encode_frames(clips), timestamps=timestamps, fps=fps)

    def stream(self, clips: torch.Tensor, state: ViS4merState | None = None, timestamps=None,
               fps: Optional[float] = None) -> tuple[torch.Tensor, ViS4merState]:
        """Next frames of a video ``(B, 3, Tc, H, W)`` -> logits so far and the state."""
        return self.head.stream(self.encode_frames(clips), state, timestamps=timestamps, fps=fps)
