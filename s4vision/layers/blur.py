"""A low-pass filter whose width is fixed in units of the input's extent."""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_positive_number
from ..sampling import GridView, ReferenceGrid

__all__ = ["AntiAliasBlur"]


class AntiAliasBlur(nn.Module):
    """Gaussian low-pass filter of images ``(B, C, H, W) -> (B, C, H, W)``, no parameters.

    ``sigma`` is given in pixels of the reference grid ``l_max`` (the training resolution; an
    int, ``(H, W)`` or a view of a model's grid); at an input of ``S`` pixels the filter is
    ``sigma * S / ref`` pixels wide, so inputs at any resolution are reduced to about the detail
    the reference grid could resolve. Taps integrate the Gaussian over each pixel cell and sum
    to one; borders are padded by replication.
    """

    def __init__(self, sigma: float, l_max: Union[int, Sequence[int], GridView]) -> None:
        super().__init__()
        self.sigma = check_positive_number("blur sigma", sigma)
        self.grid = l_max if isinstance(l_max, GridView) else ReferenceGrid(2, l_max)

    def _taps(self, rate: float, device, dtype) -> torch.Tensor:
        width = self.sigma / rate  # in pixels of this input
        radius = max(1, math.ceil(3 * width))
        edges = torch.arange(-radius - 0.5, radius + 1.0, 1.0, device=device, dtype=torch.float64)
        cdf = 0.5 * (1 + torch.erf(edges / (width * math.sqrt(2))))
        taps = cdf[1:] - cdf[:-1]
        return (taps / taps.sum()).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        C = x.shape[1]
        for axis, rate in enumerate(self.grid.rates(x.shape[2:])):
            taps = self._taps(rate, x.device, x.dtype)
            r = taps.numel() // 2
            shape = (1, 1, -1, 1) if axis == 0 else (1, 1, 1, -1)
            pad = (0, 0, r, r) if axis == 0 else (r, r, 0, 0)
            weight = taps.view(shape).expand(C, 1, *taps.view(shape).shape[2:])
            x = F.conv2d(F.pad(x, pad, mode="replicate"), weight, groups=C)
        return x

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"
