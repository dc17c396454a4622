"""Baseline temporal heads over per-frame features, the yardsticks for :class:`~s4vision.models.ViS4mer`.

* :class:`MeanPoolHead` (``"mean_pool"``): LayerNorm, the average over time, a linear classifier.
  It ignores the order of the frames.
* :class:`TransformerHead` (``"transformer"``): a Transformer encoder (pre-norm, GELU, a class
  token) over tokens that each average ``patch`` consecutive frames (``patch=1``: one token per
  frame; longer patches keep attention affordable on thousands of frames, the temporal
  downsampling of long-video Transformers). Two position codes:

  - ``positions="learned"``: a learned vector per token index, as in ViT/ViViT-style heads. It
    indexes frames, so the same video at another frame rate is another input (its extra tokens
    meet positions never trained, up to ``max_tokens``).
  - ``positions="sinusoidal"``: tokens are time windows of ``patch / train_fps`` seconds
    (:func:`s4vision.sampling.time_window_index`, the frames in a window averaged) and each
    gets the sinusoidal code of its start time in windows, so timestamps at any rate (or
    jittered) give the same tokens at the same positions: the fair Transformer for a frame-rate
    test. It records its training frame rate like ViS4mer (``clock.fps``).

Both take ``timestamps`` / ``fps`` next to the features (the learned-position head ignores them).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_non_negative_int, check_positive_int
from ..errors import InvalidValueError
from ..sampling import ReferenceClock, complete_windows, time_window_index
from .heads import register_temporal_head
from .vis4mer import TemporalPool

__all__ = ["MeanPoolHead", "TransformerHead", "sinusoidal_positions"]

_POSITIONS = ("learned", "sinusoidal")


def _features(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``(B, T, D)``, or ``(B, T, N, D)`` tokens averaged per frame, checked."""
    if x.ndim not in (3, 4) or x.shape[-1] != dim:
        raise InvalidValueError(f"expected features (B, T, {dim}) or (B, T, N, {dim}), got {tuple(x.shape)}")
    return x.mean(dim=2) if x.ndim == 4 else x


class MeanPoolHead(nn.Module):
    """``(B, T, D)`` -> LayerNorm of the average over time -> linear classifier ``(B, num_classes)``."""

    def __init__(self, dim: int, num_classes: int, *, drop_rate: float = 0.0, device=None, dtype=None):
        super().__init__()
        check_positive_int("dim", dim)
        check_non_negative_int("num_classes", num_classes)
        self.dim, self.num_classes, self.num_features = dim, num_classes, dim
        self.norm = nn.LayerNorm(dim, device=device, dtype=dtype)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(dim, num_classes, device=device, dtype=dtype) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head_drop(self.norm(_features(x, self.dim).mean(dim=1))))


def sinusoidal_positions(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal codes ``(L, dim)`` of real ``positions (L,)`` (Vaswani et al.: ``sin`` and ``cos``
    of ``position / 10000^(2i / dim)``), defined between integers too."""
    i = torch.arange(dim // 2, dtype=torch.float64, device=positions.device)
    angles = positions.to(torch.float64)[:, None] / 10000.0 ** (2 * i / dim)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)


class TransformerHead(nn.Module):
    """Transformer encoder over (patches of) frames, learned or sinusoidal (time) positions.

    Args:
        dim: feature size ``D`` of the input ``(B, T, D)`` (or tokens ``(B, T, N, D)``, averaged).
        num_classes: classifier outputs (0: the class token's features).
        embed_dim, depth, num_heads, mlp_ratio: the encoder (pre-norm layers, GELU).
        positions: ``"learned"`` (per token index) or ``"sinusoidal"`` (per token time).
        patch: frames per token at the training frame rate.
        max_tokens: size of the learned position table (``"learned"`` only).
        train_fps: the training frame rate (``"sinusoidal"``; ``None``: the first one seen in training).
        dropout: in the encoder; ``drop_rate``: before the classifier.

    Shapes: ``(B, T, D)`` -> logits ``(B, num_classes)``, with optional ``timestamps`` ``(T,)`` /
    ``(B, T)`` seconds or ``fps``.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        *,
        embed_dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        positions: str = "learned",
        patch: int = 1,
        max_tokens: int = 1024,
        train_fps: Optional[float] = None,
        dropout: float = 0.0,
        drop_rate: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        for name, value in (("dim", dim), ("embed_dim", embed_dim), ("depth", depth), ("num_heads", num_heads),
                            ("patch", patch), ("max_tokens", max_tokens)):
            check_positive_int(name, value)
        check_non_negative_int("num_classes", num_classes)
        self.positions = check_choice("positions", positions, _POSITIONS)
        if positions == "sinusoidal" and embed_dim % 2:
            raise InvalidValueError(f"sinusoidal positions need an even embed_dim, got {embed_dim}")
        dd = dict(device=device, dtype=dtype)
        self.dim, self.num_classes, self.num_features, self.patch = dim, num_classes, embed_dim, patch
        self.proj = nn.Linear(dim, embed_dim, **dd)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim, **dd))
        if positions == "learned":
            self.pos_embed = nn.Parameter(torch.randn(1, max_tokens + 1, embed_dim, **dd) * 0.02)
        else:
            self.clock = ReferenceClock(train_fps, device=device)
            self.pool = TemporalPool("avg")
        layer = nn.TransformerEncoderLayer(embed_dim, num_heads, round(mlp_ratio * embed_dim), dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True, **dd)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embed_dim, **dd)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()

    def _encode(self, tokens: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, n, E)`` plus position codes ``(n + 1, E)`` (class token first) -> ``(B, E)``."""
        x = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1) + codes
        return self.norm(self.encoder(x)[:, 0])

    def _learned(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1] // self.patch
        if not 1 <= n <= self.pos_embed.shape[1] - 1:
            raise InvalidValueError(f"{x.shape[1]} frames make {n} tokens of {self.patch} frames; "
                                    f"this head has positions for 1 to {self.pos_embed.shape[1] - 1}")
        tokens = F.avg_pool1d(self.proj(x).transpose(1, 2), self.patch).transpose(1, 2)
        return self._encode(tokens, self.pos_embed[0, : n + 1])

    def _timed(self, x: torch.Tensor, timestamps, fps) -> torch.Tensor:
        projected = self.proj(x).transpose(1, 2)  # (B, E, T)
        outputs, rows = [], []
        for timeline in self.clock.timelines(x.shape[1], x.shape[0], timestamps, fps, device=x.device):
            part = projected if timeline.rows is None else projected[timeline.rows]
            window = time_window_index(timeline.positions, self.patch)
            tokens, ids = self.pool.windows(part, window, complete_windows(timeline.end, self.patch))
            if not ids.numel():
                raise InvalidValueError(f"the clip is shorter than one token ({self.patch} training frame intervals)")
            codes = sinusoidal_positions(torch.cat([ids.new_zeros(1), ids + 1]).to(torch.float64), self.num_features)
            outputs.append(self._encode(tokens.transpose(1, 2), codes.to(part.dtype)))
            rows.append(timeline.rows)
        if len(outputs) == 1:
            return outputs[0]
        order = torch.argsort(torch.cat(rows))
        return torch.cat(outputs)[order]

    def forward(self, x: torch.Tensor, timestamps=None, fps: Optional[float] = None) -> torch.Tensor:
        x = _features(x, self.dim)
        pooled = self._learned(x) if self.positions == "learned" else self._timed(x, timestamps, fps)
        return self.fc(self.head_drop(pooled))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, positions={self.positions!r}, patch={self.patch}"


@register_temporal_head("mean_pool")
def _mean_pool(dim: int, num_classes: int, **kwargs) -> nn.Module:
    return MeanPoolHead(dim, num_classes, **kwargs)


@register_temporal_head("transformer")
def _transformer(dim: int, num_classes: int, **kwargs) -> nn.Module:
    return TransformerHead(dim, num_classes, **kwargs)
