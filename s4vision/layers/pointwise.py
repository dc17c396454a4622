"""Pointwise (1 x ... x 1) layers on channels-first tensors ``(B, C, *S)``, any number of axes,
and the activation / output-projection vocabulary every s4vision layer shares."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_positive_int
from ..errors import InvalidValueError
from ..ops.pointwise import pointwise_conv

__all__ = ["ACTIVATIONS", "OUT_PROJS", "create_activation", "create_out_proj", "PointwiseConv", "PointwiseMlp", "pointwise_conv"]

ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh}
OUT_PROJS = ("glu", "linear")


def create_activation(name: Optional[str]) -> nn.Module:
    """``"gelu"``, ``"silu"``, ``"relu"``, ``"tanh"``, or ``None`` (identity)."""
    if name is None:
        return nn.Identity()
    return ACTIVATIONS[check_choice("activation", name, [*ACTIVATIONS, None])]()


class PointwiseConv(nn.Conv1d):
    """A ``1 x ... x 1`` convolution for any number of spatial axes: ``(B, in_dim, *S) -> (B, out_dim, *S)``.

    One implementation for every pointwise projection in the package (the weight is
    ``(out_dim, in_dim, 1)`` whatever the number of axes).
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, device=None, dtype=None) -> None:
        check_positive_int("in_dim", in_dim)
        check_positive_int("out_dim", out_dim)
        super().__init__(in_dim, out_dim, 1, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 3 or x.shape[1] != self.in_channels:
            return super().forward(x)  # conv1d's own error message for a wrong shape
        return pointwise_conv(x, self.weight, self.bias)


class _GLUProjection(nn.Module):
    """Pointwise projection to ``2 * out_dim`` channels, then a GLU over channels."""

    def __init__(self, in_dim: int, out_dim: int, device=None, dtype=None) -> None:
        super().__init__()
        self.proj = PointwiseConv(in_dim, 2 * out_dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(self.proj(x), dim=1)


def create_out_proj(kind: Optional[str], in_dim: int, out_dim: int, device=None, dtype=None) -> nn.Module:
    """The output projection of a layer: ``"glu"`` (pointwise to ``2 * out_dim`` then GLU, as
    in S4), ``"linear"`` (pointwise to ``out_dim``) or ``None`` (identity; needs
    ``in_dim == out_dim``)."""
    check_choice("out_proj", kind, [*OUT_PROJS, None])
    if kind is None:
        if in_dim != out_dim:
            raise InvalidValueError(f"out_proj=None keeps the {in_dim} features; got out_dim={out_dim}")
        return nn.Identity()
    if kind == "glu":
        return _GLUProjection(in_dim, out_dim, device=device, dtype=dtype)
    return PointwiseConv(in_dim, out_dim, device=device, dtype=dtype)


class PointwiseMlp(nn.Module):
    """Channel MLP on ``(B, dim, *S)``: pointwise ``dim -> hidden``, activation, dropout, ``hidden -> dim``."""

    def __init__(self, dim: int, hidden: int, activation: Optional[str] = "gelu", dropout: float = 0.0,
                 device=None, dtype=None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.fc1 = PointwiseConv(dim, hidden, **dd)
        self.act = create_activation(activation)
        self.drop = nn.Dropout(dropout)
        self.fc2 = PointwiseConv(hidden, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))
