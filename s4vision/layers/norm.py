"""Normalisation over the channels of channels-first tensors."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LayerNormNd"]


class LayerNormNd(nn.LayerNorm):
    """LayerNorm over the channels of ``(B, C, *S)``, any number of spatial axes (also ``(B, C)``).

    Each position is normalised on its own, so the result does not depend on the input's size.
    The output is contiguous channels-first, the layout the S4ND and FlexConv layers are fastest on.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, **kwargs: Any) -> None:
        super().__init__(num_channels, eps=eps, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        x = F.layer_norm(x.movedim(1, -1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.movedim(-1, 1).contiguous()
