"""Argument checks shared by the public constructors (ops, kernels, layers, models).

Each raises ``ValueError`` naming the argument and the offending value.
"""
from __future__ import annotations

from typing import Iterable

__all__ = ["check_positive_int", "check_choice"]


def check_positive_int(name: str, value: object) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) above zero, else ``ValueError``."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_choice(what: str, value: object, choices: Iterable[str]) -> None:
    """``ValueError`` ``unknown {what} {value!r}; valid: ...`` unless ``value`` is in ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(choices)}")
