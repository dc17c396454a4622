"""The reference grid of a resolution-agnostic layer, and the sampling rates derived from it.

A layer sees its input ``(B, C, *S)`` as samples of a continuous signal over a fixed extent.
The *reference grid* is the number of samples per axis the layer's kernels were defined for:
``l_max`` when given, else the first input size seen in training. An input sampled ``S_i``
times along axis ``i`` is then sampled at ``rate_i = ref_i / S_i`` relative to the reference
(``rate < 1``: finer), the sample spacing in units of the extent is ``rate_i / ref_i``, and the
kernels are rescaled so the convolution approximates the same integral at every resolution.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..kernels.cache import EvalKernelCache

__all__ = ["ReferenceGrid", "EvalKernelCache", "as_sizes", "check_ndim"]

Rate = Union[float, Sequence[float]]


def check_ndim(ndim: int) -> int:
    if not isinstance(ndim, int) or isinstance(ndim, bool) or ndim not in (1, 2, 3):
        raise ValueError(f"ndim must be 1, 2 or 3, got {ndim!r}")
    return ndim


def as_sizes(value: Union[int, Sequence[int]], ndim: int, name: str) -> Tuple[int, ...]:
    """An int (same for every axis) or ``ndim`` ints, each positive, as a tuple."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * ndim
    try:
        value = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be an int or a sequence of {ndim} ints, got {value!r}") from None
    if len(value) != ndim or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise ValueError(f"{name} must be a positive int or {ndim} positive ints, got {value!r}")
    return value


def _as_rates(rate: Rate, ndim: int) -> Tuple[float, ...]:
    if isinstance(rate, (int, float)) and not isinstance(rate, bool):
        rate = (rate,) * ndim
    rate = tuple(float(r) for r in rate)
    if len(rate) != ndim or not all(math.isfinite(r) and r > 0 for r in rate):
        raise ValueError(f"rate must be a positive number or {ndim} positive numbers, got {rate!r}")
    return rate


class ReferenceGrid(nn.Module):
    """The reference sizes of a layer, kept in a buffer so checkpoints carry them.

    Args:
        ndim: number of spatial axes.
        l_max: reference size, an int or one int per axis; ``None`` sets it from the first
            input seen in training mode.

    The buffer ``size (ndim,)`` holds 0 while unset; layers call :meth:`observe` on every
    input, which stores the first size seen in training. An unset grid uses the input's own
    size (rate 1), so eval works before any training.
    """

    size: torch.Tensor

    def __init__(self, ndim: int, l_max: Optional[Union[int, Sequence[int]]] = None) -> None:
        super().__init__()
        self.ndim = check_ndim(ndim)
        size = (0,) * ndim if l_max is None else as_sizes(l_max, ndim, "l_max")
        self.register_buffer("size", torch.tensor(size, dtype=torch.long))
        self._size = size  # host copy: reading the buffer on an accelerator would synchronise

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._size = tuple(int(s) for s in self.size.tolist())

    @property
    def is_set(self) -> bool:
        return all(s > 0 for s in self._size)

    def observe(self, sizes: Sequence[int]) -> None:
        """Adopt ``sizes`` as the reference if none is set yet and the module is training."""
        if self.training and not self.is_set:
            self._size = tuple(int(s) for s in sizes)
            self.size.copy_(torch.tensor(self._size, dtype=torch.long))

    def reference(self, sizes: Sequence[int]) -> Tuple[int, ...]:
        """The reference sizes, or ``sizes`` itself while none is set."""
        return self._size if self.is_set else tuple(int(s) for s in sizes)

    def rates(self, sizes: Sequence[int], rate: Optional[Rate] = None) -> Tuple[float, ...]:
        """Per-axis rates ``ref_i / S_i``, or ``rate`` (a number or one per axis) when given."""
        ref = self.reference(sizes)
        if rate is not None:
            return _as_rates(rate, self.ndim)
        return tuple(r / s for r, s in zip(ref, sizes))

    def spacings(self, sizes: Sequence[int], rate: Optional[Rate] = None) -> Tuple[float, ...]:
        """Sample spacing per axis in units of the extent: ``rate_i / ref_i`` (``1 / S_i`` by default)."""
        ref = self.reference(sizes)
        rates = self.rates(sizes, rate)
        return tuple(r / n for r, n in zip(rates, ref))

    def extra_repr(self) -> str:
        return f"ndim={self.ndim}, size={self._size if self.is_set else None}"
