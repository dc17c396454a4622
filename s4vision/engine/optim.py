"""Optimiser and learning-rate schedule: AdamW over three parameter groups, warmup + cosine.

Groups, as in the S4 papers:

- ``ssm``: the state-space parameters, as :func:`~s4vision.kernels.ssm.ssm_parameter_names`
  names them (every parameter of an SSM kernel generator, or any carrying an ``_optim`` hint),
  train with their own learning rate ``ssm_lr`` and no weight decay;
- ``no_decay``: biases, norm scales (any tensor with ``ndim <= 1``) and the names (or
  ``fnmatch`` patterns) returned by the model's ``no_weight_decay()``: no weight decay;
- ``decay``: everything else.
"""
from __future__ import annotations

import fnmatch
import math
from typing import Any, Iterable

import torch
from torch import nn

from .._checks import check_positive_int, check_probability
from ..kernels.ssm import ssm_parameter_names
from .config import OptimConfig

__all__ = ["param_groups", "create_optimizer", "WarmupCosine", "create_scheduler"]


def _no_weight_decay_patterns(model: nn.Module) -> set[str]:
    fn = getattr(model, "no_weight_decay", None)
    return set(fn()) if callable(fn) else set()


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(name == p or fnmatch.fnmatchcase(name, p) for p in patterns)


def param_groups(model: nn.Module, lr: float, weight_decay: float, ssm_lr: float | None = None) -> list[dict[str, Any]]:
    """AdamW parameter groups ``decay`` / ``no_decay`` / ``ssm`` (empty groups are dropped).

    Each group carries a ``name`` key so logs and tests can find it.
    """
    ssm_names = ssm_parameter_names(model)
    no_wd = _no_weight_decay_patterns(model)
    groups: dict[str, list[nn.Parameter]] = {"decay": [], "no_decay": [], "ssm": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name in ssm_names:
            groups["ssm"].append(param)
        elif param.ndim <= 1 or _matches(name, no_wd):
            groups["no_decay"].append(param)
        else:
            groups["decay"].append(param)
    settings = {
        "decay": {"lr": lr, "weight_decay": weight_decay},
        "no_decay": {"lr": lr, "weight_decay": 0.0},
        "ssm": {"lr": lr if ssm_lr is None else ssm_lr, "weight_decay": 0.0},
    }
    return [{"name": key, "params": params, **settings[key]} for key, params in groups.items() if params]


def create_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    groups = param_groups(model, cfg.lr, cfg.weight_decay, cfg.ssm_lr)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


class WarmupCosine:
    """Learning-rate multiplier: linear warmup to 1 over ``warmup_steps``, then a cosine down
    to ``min_ratio`` at ``total_steps``. Picklable, so ``LambdaLR`` state round-trips."""

    def __init__(self, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0):
        self.total_steps = check_positive_int("total_steps", total_steps)
        self.warmup_steps = max(0, min(warmup_steps, total_steps - 1))
        self.min_ratio = check_probability("min_ratio", min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def create_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                     min_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: call ``scheduler.step()`` after every optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(total_steps, warmup_steps, min_ratio))
