"""Helpers shared by the tests; ``tests/conftest.py`` imports this module, so every test sees it.

pytest puts ``tests/`` (the directory of the root ``conftest.py``) on ``sys.path``, so test
modules import it as ``import _helpers``. A test that starts Python in a subprocess passes
:func:`subprocess_env` as its environment, which puts ``tests/`` on ``PYTHONPATH`` there.

``s4v_test_tiny`` is a tiny timm-registered CNN for engine tests: fast on CPU, with dropout
(it consumes the RNG) and a declared minimum input size of ``MIN_SIZE`` pixels.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from timm.models import register_model
from torch import nn

TESTS_DIR = Path(__file__).resolve().parent
TINY = "s4v_test_tiny"
MIN_SIZE = 6


def subprocess_env(**extra: str) -> dict[str, str]:
    """``os.environ`` plus ``extra``, with ``tests/`` first on ``PYTHONPATH`` (so a child
    process can ``import _helpers``)."""
    path = os.pathsep.join(p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


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
