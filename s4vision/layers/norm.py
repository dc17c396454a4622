"""Normalisation over the channels of channels-first tensors."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import is_tracked, is_tracing

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
        if self._along_channels(x):
            return self._normalise_along_channels(x)
        x = F.layer_norm(x.movedim(1, -1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.movedim(-1, 1).contiguous()

    def _along_channels(self, x: torch.Tensor) -> bool:
        """CPU inference in fp32/fp64 reduces along dim 1 in place: ``layer_norm`` wants the
        channels last, which costs a copy in and a copy out (measured 1.3-1.5x slower at 40-384
        channels, one thread). With autograd, ``layer_norm``'s fused backward is kept."""
        if is_tracing() or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
            return False
        return not is_tracked(x, self.weight, self.bias)

    def _normalise_along_channels(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(1, keepdim=True)
        rstd = (centred * centred).mean(1, keepdim=True).add_(self.eps).rsqrt_()  # mul: faster than square()
        y = centred.mul_(rstd)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if self.weight is not None:
            y = y.mul_(self.weight.view(shape)) if self.bias is None else torch.addcmul(
                self.bias.view(shape), y, self.weight.view(shape), out=y)
        elif self.bias is not None:
            y = y.add_(self.bias.view(shape))
        return y
