"""ViS4mer: a multi-scale S4 decoder over per-frame features, for long videos.

Following "Long Movie Clip Classification with State-Space Video Models"
(Islam & Bertasius, ECCV 2022): an image model encodes every frame, and a
stack of stages, each

    S4 (pre-norm, residual) -> temporal pooling (length halved) -> MLP (width halved),

turns the sequence of frame features into a short, narrow one that is
averaged over time and classified. Pooling makes every stage cheaper than the
one before, so the whole decoder costs about twice its first stage: linear in
the number of frames.

Tokens. The paper flattens all the patch tokens of all frames into one
sequence of ``T * N`` tokens. ``token_pool="flatten"`` does that; the default,
``token_pool="mean"``, averages each frame's tokens first, so the decoder runs
over ``T`` steps: ``N`` times cheaper, which is what makes thousands of frames
practical on modest hardware. Per-frame features ``(B, T, D)`` are used as is.

Streaming. With ``bidirectional=False`` every S4 layer is causal and
:meth:`ViS4mer.stream` consumes a video chunk by chunk: each pooling stage
carries its unpaired last frame over to the next chunk, and the time average
is kept as a running sum, so the logits after the last chunk equal
:meth:`ViS4mer.forward` on the whole video, whatever the chunk sizes.

:class:`VideoClassifier` puts a timm image model in front, applied to every
frame, for end-to-end use on clips ``(B, 3, T, H, W)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_non_negative_int, check_positive_int
from ..layers import S4, LayerNormNd, PointwiseConv, frame_tokens
from ..errors import InvalidTypeError, InvalidValueError

__all__ = ["ViS4mer", "ViS4merState", "VideoClassifier", "TemporalPool"]

_TOKEN_POOLS = ("mean", "flatten")
_POOLS = ("max", "avg")


class TemporalPool(nn.Module):
    """Max or average pooling of consecutive frame pairs: ``(B, D, L) -> (B, D, L // 2)``.

    An odd last frame is dropped by :meth:`forward`; :meth:`stream` keeps it as the
    ``leftover`` to pair with the first frame of the next chunk.
    """

    def __init__(self, kind: str = "max"):
        super().__init__()
        self.kind = check_choice("pool", kind, _POOLS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = F.max_pool1d if self.kind == "max" else F.avg_pool1d
        return pool(x, kernel_size=2, stride=2)

    def stream(self, x: torch.Tensor, leftover: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool the frames of a chunk ``x (B, D, Lc)`` after the ``leftover (B, D, 0 or 1)``."""
        x = torch.cat([leftover, x], dim=-1)
        paired = x.shape[-1] // 2 * 2
        if paired == 0:
            return x[..., :0], x
        return self(x[..., :paired]), x[..., paired:]

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


class ViS4merStage(nn.Module):
    """``x + S4(norm(x))``, then pooling (length halved) and an MLP ``dim -> out_dim``.

    The S4 layer steps once per frame (``rate=1``): this head indexes frames, not time.
    """

    def __init__(self, dim: int, out_dim: int, d_state: int, kernel: str, pool: str, bidirectional: bool,
                 dropout: float, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.norm = LayerNormNd(dim, **dd)
        self.s4 = S4(dim, d_state, kernel=kernel, bidirectional=bidirectional, dropout=dropout, **dd)
        self.drop = nn.Dropout(dropout)
        self.pool = TemporalPool(pool)
        self.mlp = nn.Sequential(PointwiseConv(dim, out_dim, **dd), nn.GELU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.s4(self.norm(x), rate=1.0))
        return self.mlp(self.pool(x))

    def stream(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        s4_state, leftover = state
        z, s4_state = self.s4.stream(self.norm(x), s4_state, rate=1.0)
        x, leftover = self.pool.stream(x + self.drop(z), leftover)
        if x.shape[-1]:
            x = self.mlp(x)
        else:
            x = x.new_zeros(x.shape[0], self.mlp[0].out_channels, 0)
        return x, (s4_state, leftover)


@dataclass
class ViS4merState:
    """What :meth:`ViS4mer.stream` carries between chunks.

    Attributes:
        stages: per stage, the S4 state and the pooling leftover ``(B, D, 0 or 1)``.
        total: running sum ``(B, D_out)`` of the last stage's outputs.
        count: how many outputs ``total`` sums.
    """

    stages: list[tuple[torch.Tensor, torch.Tensor]]
    total: torch.Tensor
    count: int = 0


class ViS4mer(nn.Module):
    """Multi-scale temporal S4 decoder and classifier over per-frame features.

    Args:
        dim: feature size ``D`` of the input ``(B, T, D)`` or ``(B, T, N, D)``.
        num_classes: classifier outputs (0: no classifier, :meth:`forward` returns
            the pooled features).
        embed_dim: width after the input projection; every stage halves it.
        depth: number of stages; the input needs at least ``2 ** depth`` steps.
        d_state: S4 state size.
        kernel: S4 kernel, ``"s4d"`` or ``"s4"``.
        pool: temporal pooling, ``"max"`` (as in the paper) or ``"avg"``.
        bidirectional: bidirectional S4 layers; ``False`` makes them causal (enables :meth:`stream`).
        token_pool: for token input ``(B, T, N, D)``: ``"mean"`` averages each
            frame's tokens, ``"flatten"`` runs over all ``T * N`` tokens (the paper).
        dropout: dropout in the stages; ``drop_rate``: before the classifier.
        device, dtype: where and in which dtype to create the parameters.

    Shapes: ``(B, T, D)`` or ``(B, T, N, D)`` -> logits ``(B, num_classes)``.
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
        dd = dict(device=device, dtype=dtype)
        self.dim, self.num_classes = dim, num_classes
        self.bidirectional, self.token_pool, self.depth = bidirectional, token_pool, depth
        self.proj = PointwiseConv(dim, embed_dim, **dd)
        widths = [embed_dim // 2**i for i in range(depth + 1)]
        self.stages = nn.ModuleList(
            ViS4merStage(widths[i], widths[i + 1], d_state, kernel, pool, bidirectional, dropout, **dd)
            for i in range(depth)
        )
        self.num_features = widths[-1]
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes, **dd) if num_classes > 0 else nn.Identity()

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

    # -- offline ---------------------------------------------------------------------------

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(B, T, D)`` / ``(B, T, N, D)`` -> last stage's sequence ``(B, C, L / 2**depth)``."""
        x = self._sequence(x)
        if x.shape[-1] < 2**self.depth:
            raise InvalidValueError(f"a {self.depth}-stage ViS4mer needs at least {2 ** self.depth} steps, got {x.shape[-1]}")
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Time average of ``(B, C, L)``, then the classifier (skipped with ``pre_logits``)."""
        x = self.head_drop(x.mean(dim=-1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        dd = dict(device=self.proj.weight.device, dtype=self.proj.weight.dtype)
        self.fc = nn.Linear(self.num_features, num_classes, **dd) if num_classes > 0 else nn.Identity()

    # -- streaming -------------------------------------------------------------------------

    def default_state(self, batch: int, device: torch.device | None = None) -> ViS4merState:
        """The state before the first frame, for :meth:`stream`."""
        if self.bidirectional:
            raise InvalidValueError("stream needs a causal ViS4mer (bidirectional=False)")
        device = device if device is not None else self.proj.weight.device
        stages = [
            (stage.s4.default_state(batch, device), torch.zeros(batch, stage.norm.normalized_shape[0], 0, device=device))
            for stage in self.stages
        ]
        return ViS4merState(stages, torch.zeros(batch, self.num_features, device=device), 0)

    def stream(
        self, x: torch.Tensor, state: ViS4merState | None = None
    ) -> tuple[torch.Tensor, ViS4merState]:
        """Consume the next frames ``(B, Tc, D)`` or ``(B, Tc, N, D)`` of a video.

        Returns the logits for the video so far and the state for the next chunk.
        After the last chunk they equal :meth:`forward` on the whole video. Until
        ``2 ** depth`` steps have been seen the time average is empty and taken as zero.
        """
        if x.ndim in (3, 4) and x.shape[1] == 0:
            raise InvalidValueError(f"empty chunk: {tuple(x.shape)}")
        if state is None:
            state = self.default_state(x.shape[0], x.device)
        if not isinstance(state, ViS4merState) or len(state.stages) != self.depth:
            raise InvalidTypeError(f"state must be a ViS4merState from this model, got {type(state).__name__}")
        x = self._sequence(x)
        stages = []
        for stage, stage_state in zip(self.stages, state.stages):
            if x.shape[-1]:
                x, stage_state = stage.stream(x, stage_state)
            stages.append(stage_state)
        total, count = state.total, state.count
        if x.shape[-1]:  # only when every stage produced output
            total, count = total + x.sum(dim=-1), count + x.shape[-1]
        mean = total / max(count, 1)
        logits = self.fc(self.head_drop(mean))
        return logits, ViS4merState(stages, total, count)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, bidirectional={self.bidirectional}, token_pool={self.token_pool!r}"


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

    Shapes: clips ``(B, 3, T, H, W)`` -> logits ``(B, num_classes)``.
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

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode_frames(clips))

    def stream(self, clips: torch.Tensor, state: ViS4merState | None = None) -> tuple[torch.Tensor, ViS4merState]:
        """Next frames of a video ``(B, 3, Tc, H, W)`` -> logits so far and the state."""
        return self.head.stream(self.encode_frames(clips), state)
