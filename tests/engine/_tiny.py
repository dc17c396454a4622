"""A tiny timm-registered CNN for engine tests: fast on CPU, with dropout (it consumes the RNG)
and a declared minimum input size of 6 pixels."""
from __future__ import annotations

import torch
from timm.models import register_model
from torch import nn

TINY = "s4v_test_tiny"
MIN_SIZE = 6


class TinyNet(nn.Module):
    def __init__(self, in_chans: int = 1, num_classes: int = 10, width: int = 16, drop_rate: float = 0.1):
        super().__init__()
        self.stem = nn.Conv2d(in_chans, width, 3, padding=1)
        self.norm = nn.GroupNorm(4, width)
        self.body = nn.Conv2d(width, width, 3, padding=1, stride=2)
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(width, num_classes)
        self.pretrained_cfg = {"architecture": TINY, "input_size": (in_chans, 8, 8),
                               "min_input_size": (in_chans, MIN_SIZE, MIN_SIZE)}

    def no_weight_decay(self) -> set[str]:
        return {"head.weight"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.gelu(self.norm(self.stem(x)))
        x = nn.functional.gelu(self.body(x)).mean(dim=(2, 3))
        return self.head(self.drop(x))


@register_model
def s4v_test_tiny(pretrained: bool = False, **kwargs) -> TinyNet:
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    if pretrained:
        raise ValueError("s4v_test_tiny has no pretrained weights")
    return TinyNet(**kwargs)
