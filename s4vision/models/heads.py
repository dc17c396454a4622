"""Temporal heads by name: models over per-frame features ``(B, T, D)`` -> logits ``(B, classes)``.

A temporal head is not a timm model (timm's model tests expect image inputs), so heads have
their own small registry::

    head = create_temporal_head("vis4mer", dim=64, num_classes=10, depth=3)
    logits = forward_with_time(head, features, timestamps)   # (B, T, D), (B, T) seconds

Every head takes ``dim`` (the feature size) and ``num_classes`` first, then its own keyword
arguments. A head that understands time declares it in its ``forward``: a ``timestamps``
keyword (``(B, T)`` seconds) or an ``fps`` keyword (a float). :func:`forward_with_time` passes
what the module accepts and nothing else, so the engine, ``eval`` and ``predict`` drive
frame-indexed and continuous-time heads alike.

Register a head with :func:`register_temporal_head`::

    @register_temporal_head("mean_pool")
    def mean_pool(dim, num_classes, **kwargs):
        return MeanPoolHead(dim, num_classes, **kwargs)
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .._checks import check_non_negative_int, check_positive_int
from ..errors import InvalidTypeError, InvalidValueError

__all__ = [
    "register_temporal_head",
    "create_temporal_head",
    "list_temporal_heads",
    "is_temporal_head",
    "accepts_time",
    "forward_with_time",
    "batch_fps",
]

_HEADS: dict[str, Callable[..., nn.Module]] = {}


def register_temporal_head(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``fn(dim, num_classes, **kwargs) -> nn.Module`` as head ``name``."""
    if not isinstance(name, str) or not name:
        raise InvalidValueError(f"a temporal head needs a non-empty name, got {name!r}")

    def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _HEADS and _HEADS[name] is not fn:
            raise InvalidValueError(f"temporal head {name!r} is already registered")
        _HEADS[name] = fn
        return fn

    return register


def _load_registrations() -> None:
    import s4vision.models  # noqa: F401  (importing the package registers every head)


def list_temporal_heads() -> list[str]:
    """Names of the registered temporal heads, sorted."""
    _load_registrations()
    return sorted(_HEADS)


def is_temporal_head(name: str) -> bool:
    """Whether ``name`` is a registered temporal head."""
    _load_registrations()
    return name in _HEADS


def create_temporal_head(name: str, dim: int, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build temporal head ``name`` over ``dim``-dimensional frame features with
    ``num_classes`` outputs (0: pooled features). Unknown names list the registered ones;
    unknown keyword arguments name the head and the arguments."""
    _load_registrations()
    if name not in _HEADS:
        raise InvalidValueError(f"unknown temporal head {name!r}; registered: {', '.join(sorted(_HEADS)) or 'none'}")
    check_positive_int("dim", dim)
    check_non_negative_int("num_classes", num_classes)
    try:
        return _HEADS[name](dim, num_classes, **kwargs)
    except TypeError as err:  # an unknown keyword argument
        raise InvalidTypeError(f"cannot create temporal head {name!r} with arguments {sorted(kwargs)}: {err}") from None


def accepts_time(module: nn.Module) -> str | None:
    """What time input ``module.forward`` takes: ``"timestamps"``, ``"fps"`` or ``None``
    (a frame-indexed model). A wrapper (``DistributedDataParallel``) is looked through."""
    if isinstance(module, DistributedDataParallel):
        module = module.module
    try:
        parameters = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return None
    for name in ("timestamps", "fps"):
        if name in parameters:
            return name
    return None


def batch_fps(timestamps: torch.Tensor) -> float:
    """One frame rate for a batch of timestamps ``(B, T)`` (seconds): the inverse of the
    median gap between consecutive frames (for heads that take ``fps`` instead of timestamps)."""
    if timestamps.ndim != 2 or timestamps.shape[1] < 2:
        raise InvalidValueError(f"need timestamps (B, T) with T >= 2 to derive a frame rate, got {tuple(timestamps.shape)}")
    gap = timestamps.diff(dim=1).median().item()
    if not gap > 0:
        raise InvalidValueError(f"timestamps must increase to derive a frame rate; median gap {gap}")
    return 1.0 / gap


def forward_with_time(module: nn.Module, x: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
    """``module(x)``, plus the frames' ``timestamps`` ``(B, T)`` when its forward takes them
    (or the frame rate they imply, when it takes ``fps``). Works through ``DistributedDataParallel``."""
    wants = accepts_time(module) if timestamps is not None else None
    if wants == "timestamps":
        return module(x, timestamps=timestamps)
    if wants == "fps":
        return module(x, fps=batch_fps(timestamps))
    return module(x)


@register_temporal_head("vis4mer")
def _vis4mer(dim: int, num_classes: int, **kwargs: Any) -> nn.Module:
    from .vis4mer import ViS4mer

    return ViS4mer(dim, num_classes, **kwargs)
