"""Global pooling and the classifier head for channels-first features of any number of axes."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from .._checks import check_choice

__all__ = ["POOL_TYPES", "global_pool_nd", "ClassifierHeadNd"]

POOL_TYPES = ("avg", "max", "avgmax", "")


def global_pool_nd(x: torch.Tensor, pool_type: str) -> torch.Tensor:
    """Pool ``(B, C, *S)`` over all spatial axes to ``(B, C)``; ``pool_type=""`` returns ``x``."""
    if not pool_type:
        return x
    dims = tuple(range(2, x.ndim))
    if pool_type == "avg":
        return x.mean(dims)
    if pool_type == "max":
        return x.amax(dims)
    return 0.5 * (x.mean(dims) + x.amax(dims))


class ClassifierHeadNd(nn.Module):
    """Global pool over every spatial axis, optional norm, dropout, linear classifier.

    ``(B, C, *S) -> (B, num_classes)``. With ``pool_type=""`` nothing is pooled and the norm and
    classifier act on the channels of every position: ``(B, C, *S) -> (B, num_classes, *S)``.
    ``norm_layer`` (a channels-first norm) is applied after pooling, as in ConvNeXt's head.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        pool_type: str = "avg",
        norm_layer: Optional[Callable[..., nn.Module]] = None,
        drop_rate: float = 0.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        check_choice("global_pool", pool_type, POOL_TYPES)
        self.in_features = self.num_features = in_features
        self.pool_type = pool_type
        self.norm = norm_layer(in_features, device=device, dtype=dtype) if norm_layer else nn.Identity()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes, device=device, dtype=dtype) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, pool_type: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0``: none) and optionally the pooling; the new
        classifier takes the device and dtype of the head's parameters."""
        if pool_type is not None:
            self.pool_type = check_choice("global_pool", pool_type, POOL_TYPES)
        p = next(self.parameters(), None)
        dd = dict(device=p.device, dtype=p.dtype) if p is not None else {}
        self.fc = nn.Linear(self.in_features, num_classes, **dd) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.norm(global_pool_nd(x, self.pool_type)))
        if pre_logits or isinstance(self.fc, nn.Identity):
            return x
        return self.fc(x) if x.ndim == 2 else self.fc(x.movedim(1, -1)).movedim(-1, 1)
