"""Reading per-position tokens out of a timm image model."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import InvalidValueError

__all__ = ["frame_tokens"]


def frame_tokens(encoder: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """Tokens ``(B, N, D)`` of a timm image model for frames ``(B, 3, H, W)``.

    ``forward_features`` gives ``(B, N, D)`` for ViTs and a feature map for CNNs,
    ``(B, D, h, w)`` (or ``(B, h, w, D)`` for channels-last models), whose ``h * w``
    positions become the tokens.
    """
    out = encoder.forward_features(frames)
    if out.ndim == 3:
        return out
    dim = encoder.num_features
    if out.ndim == 4 and out.shape[1] == dim:
        return out.flatten(2).transpose(1, 2)
    if out.ndim == 4 and out.shape[-1] == dim:
        return out.flatten(1, 2)
    raise InvalidValueError(f"cannot read tokens from forward_features output of shape {tuple(out.shape)}")
