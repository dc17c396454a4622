"""Fixed-size convolutions for any number of spatial axes (the baselines S4ND is compared to)."""
from __future__ import annotations

from typing import Optional, Type

import torch
from torch import nn

from .._checks import check_ndim, check_positive_int
from .pointwise import create_activation, create_out_proj

__all__ = ["conv_nd", "DepthwiseConvMixer"]

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def conv_nd(ndim: int) -> Type[nn.Module]:
    """``nn.Conv1d``, ``nn.Conv2d`` or ``nn.Conv3d``."""
    return _CONV[check_ndim(ndim)]


class DepthwiseConvMixer(nn.Module):
    """S4ND's layer structure with a fixed-size depthwise convolution in place of the SSM kernel.

    ``out_proj(dropout(act(conv(x))))`` on ``(B, dim, *S)``; the convolution is ``kernel_size``
    samples wide whatever the resolution (the Conv2D baseline of the S4ND paper). Arguments
    follow :class:`~s4vision.layers.S4ND`; ``l_max`` is accepted and ignored (a fixed kernel has
    no reference grid).
    """

    def __init__(
        self,
        dim: int,
        ndim: int = 2,
        kernel_size: int = 5,
        *,
        activation: Optional[str] = "gelu",
        out_proj: Optional[str] = "glu",
        dropout: float = 0.0,
        l_max: object = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        check_positive_int("kernel_size", kernel_size)
        del l_max
        dd = dict(device=device, dtype=dtype)
        self.conv = conv_nd(ndim)(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, **dd)
        self.act = create_activation(activation)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = create_out_proj(out_proj, dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(self.act(self.conv(x))))
