"""Argument checks shared by every public entry point (ops, kernels, layers, models, data, engine).

One wording for every error: each check raises :class:`~s4vision.errors.InvalidValueError`
(a ``ValueError``) or :class:`~s4vision.errors.InvalidTypeError` (a ``TypeError``) naming the
argument and the offending value, and returns the value normalised (an ``int``, a ``float``,
a tuple).
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence, Tuple, Union

from .errors import InvalidTypeError, InvalidValueError

__all__ = [
    "NDIMS",
    "check_positive_int",
    "check_non_negative_int",
    "check_positive_number",
    "check_non_negative_number",
    "check_probability",
    "check_choice",
    "check_ndim",
    "check_sizes",
    "check_optional",
    "check_channels_first",
    "is_tracing",
]

NDIMS = (1, 2, 3)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_positive_int(name: str, value: object) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) above zero."""
    if not _is_int(value) or value <= 0:
        raise InvalidValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_non_negative_int(name: str, value: object) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) of at least zero."""
    if not _is_int(value) or value < 0:
        raise InvalidValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def check_positive_number(name: str, value: object) -> float:
    """``float(value)`` if it is a finite real number above zero."""
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise InvalidValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_non_negative_number(name: str, value: object) -> float:
    """``float(value)`` if it is a finite real number of at least zero."""
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise InvalidValueError(f"{name} must be a non-negative finite number, got {value!r}")
    return float(value)


def check_probability(name: str, value: object) -> float:
    """``float(value)`` if it is a number in ``[0, 1]``."""
    if not _is_number(value) or not 0 <= value <= 1:
        raise InvalidValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def check_choice(what: str, value: object, choices: Iterable[object]) -> object:
    """``value`` if it is one of ``choices``, else ``unknown {what} {value!r}; valid: ...``."""
    choices = list(choices)
    try:
        ok = value in choices
    except TypeError:  # an unhashable value against a dict's keys
        ok = False
    if not ok:
        raise InvalidValueError(f"unknown {what} {value!r}; valid: {', '.join(map(repr, choices))}")
    return value


def check_ndim(ndim: object, allowed: Sequence[int] = NDIMS) -> int:
    """``ndim`` if it is one of ``allowed`` (the number of spatial axes: 1, 2 or 3)."""
    if not _is_int(ndim) or ndim not in allowed:
        valid = ", ".join(map(str, allowed[:-1])) + f" or {allowed[-1]}" if len(allowed) > 1 else str(allowed[0])
        raise InvalidValueError(f"ndim must be {valid}, got {ndim!r}")
    return ndim


def check_sizes(name: str, value: Union[int, Sequence[int]], ndim: int, *, minimum: int = 1) -> Tuple[int, ...]:
    """An int (the same for every axis) or ``ndim`` ints, each at least ``minimum``, as a tuple."""
    if _is_int(value):
        value = (value,) * ndim
    elif isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidTypeError(f"{name} must be an int or a sequence of {ndim} ints, got {value!r}")
    value = tuple(value)
    if len(value) != ndim or not all(_is_int(v) and v >= minimum for v in value):
        what = "positive" if minimum == 1 else f">= {minimum}"
        raise InvalidValueError(f"{name} must be an int or {ndim} ints, each {what}, got {value!r}")
    return value


def check_optional(check, name: str, value: object, *args, **kwargs) -> Optional[object]:
    """``None`` if ``value`` is ``None``, else ``check(name, value, ...)``."""
    return None if value is None else check(name, value, *args, **kwargs)


def is_tracing() -> bool:
    """Whether ``torch.fx`` is tracing symbolically: inputs are then ``Proxy`` objects whose
    values and shapes are unknown, so input checks step aside (they run again on real tensors)."""
    from torch.fx import _symbolic_trace

    # newer torch names the precise question (and warns on the older name, which also answers
    # True under torch.export)
    for name in ("is_fx_symbolic_tracing", "is_fx_tracing_symbolic_tracing", "is_fx_tracing"):
        check = getattr(_symbolic_trace, name, None)
        if check is not None:
            return bool(check())
    return False


def is_tracked(*tensors: Optional["torch.Tensor"]) -> bool:
    """Whether autograd records an operation on ``tensors`` (``None`` entries ignored): fast
    inference-only paths take the other branch."""
    import torch

    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def check_channels_first(x: object, channels: int, ndim: int, name: str = "input") -> None:
    """Raise unless ``x`` is a tensor ``(B, channels, *S)`` with ``ndim`` non-empty spatial axes.

    Skipped while ``torch.fx`` traces (:func:`is_tracing`)."""
    import torch

    if is_tracing():
        return
    if not isinstance(x, torch.Tensor):
        raise InvalidTypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != ndim + 2:
        raise InvalidValueError(
            f"{name} must have rank {ndim + 2} (B, C{', *S' if ndim else ''}) with "
            f"{ndim} spatial axes, got rank {x.ndim} with shape {tuple(x.shape)}"
        )
    if x.shape[1] != channels:
        raise InvalidValueError(f"{name} has {x.shape[1]} channels (dim 1) but {channels} are expected")
    if any(s == 0 for s in x.shape[2:]):
        raise InvalidValueError(f"{name} has an empty spatial axis: {tuple(x.shape)}")
