"""Sampling semantics: how a tensor's samples map to a continuous signal over a fixed extent.

This module is the one place that defines them; layers, models and the engine ask it rather
than re-deriving rates.

Space. An axis of ``S`` samples covers the unit extent ``[0, 1]``; sample ``i`` is the centre of
its cell, ``(i + 1/2) / S``. The offset between two cell centres is a whole number of cells,
``m / S`` with ``|m| <= S - 1``, so a kernel spanning the whole input is sampled at those
``2S - 1`` offsets, centred on offset 0 (:func:`kernel_offsets`, :func:`offset_grid`). Grids at
two resolutions are consistent: every offset of the coarse grid is an offset of the fine one.

The *reference grid* of a layer (:class:`ReferenceGrid`) is the number of samples per axis its
kernels were defined for: ``l_max`` when given, else the first input size seen in training. An
input sampled ``S_i`` times along axis ``i`` is sampled at ``rate_i = ref_i / S_i`` relative to
the reference (``rate < 1``: finer), with spacing ``rate_i / ref_i`` in units of the extent.
A model holds one reference grid, its training resolution; the grids of its layers are views of
it divided by their stride (:meth:`ReferenceGrid.view`), so the resolution is stored once.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ._checks import _is_number, check_ndim, check_positive_int, check_positive_number, check_sizes
from .errors import InvalidTypeError, InvalidValueError

__all__ = [
    "Rate",
    "check_rate",
    "check_rates",
    "cell_centres",
    "kernel_offsets",
    "offset_grid",
    "ReferenceGrid",
    "GridView",
]

Rate = Union[float, Sequence[float]]


# -- rates -------------------------------------------------------------------------------------


def check_rate(rate: object) -> float:
    """A sampling rate relative to the reference: a positive finite number, as ``float``."""
    return check_positive_number("rate", rate)


def check_rates(rate: Rate, ndim: int) -> Tuple[float, ...]:
    """A rate for every axis: one positive number (all axes) or ``ndim`` of them."""
    if _is_number(rate):
        rate = (rate,) * ndim
    elif isinstance(rate, (str, bytes)) or not isinstance(rate, Sequence):
        raise InvalidTypeError(f"rate must be a positive number or {ndim} positive numbers, got {rate!r}")
    rate = tuple(rate)
    if len(rate) != ndim or not all(_is_number(r) and math.isfinite(r) and r > 0 for r in rate):
        raise InvalidValueError(f"rate must be a positive number or {ndim} positive numbers, got {rate!r}")
    return tuple(float(r) for r in rate)


# -- coordinates -------------------------------------------------------------------------------


def cell_centres(
    size: int,
    extent: float = 1.0,
    *,
    device: Optional[torch.device] = None,
    dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Centres of ``size`` equal cells covering ``[0, extent]``: ``(i + 1/2) * extent / size``.

    Returns:
        ``(size,)``.
    """
    check_positive_int("size", size)
    check_positive_number("extent", extent)
    i = torch.arange(size, device=device, dtype=dtype or torch.get_default_dtype())
    return (i + 0.5) * (extent / size)


def kernel_offsets(
    size: int,
    spacing: Optional[float] = None,
    *,
    device: Optional[torch.device] = None,
    dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Offsets ``m * spacing`` for ``m = -(size - 1), ..., size - 1`` (centred, odd length).

    These are the offsets between all pairs of ``size`` cell centres; ``spacing`` defaults to
    the cell width of a unit extent, ``1 / size``.

    Returns:
        ``(2 * size - 1,)``.
    """
    check_positive_int("size", size)
    spacing = 1.0 / size if spacing is None else check_positive_number("spacing", spacing)
    m = torch.arange(-(size - 1), size, device=device, dtype=dtype or torch.get_default_dtype())
    return m * spacing


def offset_grid(
    sizes: Sequence[int],
    spacings: Optional[Sequence[float]] = None,
    *,
    device: Optional[torch.device] = None,
    dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """N-d grid of cell-centre offsets, one :func:`kernel_offsets` axis per input axis.

    Args:
        sizes: input sizes ``S = (S_1, ..., S_N)``.
        spacings: sample spacing per axis; defaults to ``1 / S_i`` (unit extent).

    Returns:
        ``(2 S_1 - 1, ..., 2 S_N - 1, N)``: the coordinates of every kernel tap, last axis
        ordered like ``sizes``.
    """
    sizes = tuple(sizes)
    if not sizes:
        raise InvalidValueError("offset_grid needs at least one axis")
    spacings = (None,) * len(sizes) if spacings is None else tuple(spacings)
    if len(spacings) != len(sizes):
        raise InvalidValueError(f"got {len(spacings)} spacings for {len(sizes)} axes")
    axes = [kernel_offsets(s, d, device=device, dtype=dtype) for s, d in zip(sizes, spacings)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


# -- reference grids ---------------------------------------------------------------------------


class _GridSemantics:
    """Rates and spacings from a reference size; subclasses provide ``ndim`` and ``_size``."""

    ndim: int
    _size: Tuple[int, ...]

    @property
    def is_set(self) -> bool:
        return all(s > 0 for s in self._size)

    @property
    def sizes(self) -> Optional[Tuple[int, ...]]:
        """The reference sizes, or ``None`` while unset."""
        return self._size if self.is_set else None

    def reference(self, sizes: Sequence[int]) -> Tuple[int, ...]:
        """The reference sizes, or ``sizes`` itself while none is set."""
        return self._size if self.is_set else tuple(int(s) for s in sizes)

    def rates(self, sizes: Sequence[int], rate: Optional[Rate] = None) -> Tuple[float, ...]:
        """Per-axis rates ``ref_i / S_i``, or ``rate`` (a number or one per axis) when given."""
        if rate is not None:
            return check_rates(rate, self.ndim)
        return tuple(r / s for r, s in zip(self.reference(sizes), sizes))

    def spacings(self, sizes: Sequence[int], rate: Optional[Rate] = None) -> Tuple[float, ...]:
        """Sample spacing per axis in units of the extent: ``rate_i / ref_i`` (``1 / S_i`` by default)."""
        return tuple(r / n for r, n in zip(self.rates(sizes, rate), self.reference(sizes)))

    def view(self, stride: Union[int, Sequence[int]] = 1) -> "GridView":
        """This grid divided by ``stride`` per axis (floored, at least 1): the grid of a layer
        that sees the input after a total stride of ``stride``."""
        return GridView(self, check_sizes("stride", stride, self.ndim))


class ReferenceGrid(_GridSemantics, nn.Module):
    """Reference sizes kept in a buffer ``size (ndim,)``, so checkpoints carry them.

    Args:
        ndim: number of axes.
        l_max: reference size, an int or one int per axis; ``None`` sets it from the first
            input seen in training mode (the buffer holds zeros until then, and an unset grid
            uses each input's own size: rate 1).
    """

    size: torch.Tensor

    def __init__(self, ndim: int, l_max: Optional[Union[int, Sequence[int]]] = None, *, device=None) -> None:
        super().__init__()
        self.ndim = check_ndim(ndim)
        size = (0,) * ndim if l_max is None else check_sizes("l_max", l_max, ndim)
        self.register_buffer("size", torch.tensor(size, dtype=torch.long, device=device))
        self._size = size  # host copy: reading the buffer on an accelerator would synchronise

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if not self.size.is_meta:
            self._size = tuple(int(s) for s in self.size.tolist())

    def observe(self, sizes: Sequence[int]) -> None:
        """Adopt ``sizes`` as the reference if none is set yet and the module is training."""
        if self.training and not self.is_set:
            self.set(sizes)

    def set(self, sizes: Union[int, Sequence[int]]) -> None:
        """Set the reference sizes (e.g. the training resolution of a model)."""
        self._size = check_sizes("sizes", sizes, self.ndim)
        if not self.size.is_meta:
            self.size.copy_(torch.tensor(self._size, dtype=torch.long))

    def extra_repr(self) -> str:
        return f"ndim={self.ndim}, size={self.sizes}"


class GridView(_GridSemantics):
    """A reference grid derived from another, divided by a stride: ``max(ref // stride, 1)``.

    It stores nothing of its own (no buffer, no state-dict entry): it reads its parent's sizes,
    so loading the parent's buffer updates every view. :meth:`observe` does nothing.
    """

    def __init__(self, parent: _GridSemantics, stride: Tuple[int, ...]) -> None:
        self.parent, self.stride, self.ndim = parent, tuple(stride), parent.ndim

    @property
    def _size(self) -> Tuple[int, ...]:
        size = self.parent._size
        if not all(s > 0 for s in size):
            return size
        return tuple(max(s // k, 1) for s, k in zip(size, self.stride))

    def observe(self, sizes: Sequence[int]) -> None:
        del sizes

    def __repr__(self) -> str:
        return f"GridView(stride={self.stride}, size={self.sizes})"
