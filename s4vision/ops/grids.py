"""Coordinate grids for layers that treat their input as samples of a continuous signal.

An axis of ``L`` samples covers the unit extent ``[0, 1]``; sample ``i`` is the centre of its
cell, ``(i + 1/2) / L``. The offset between two cell centres is always a whole number of
cells, ``m / L`` with ``|m| <= L - 1``, so a kernel that spans the whole input is sampled at
those ``2L - 1`` offsets, centred on offset 0. Grids at two resolutions are therefore
consistent: every offset of the coarse grid is also an offset of the fine one.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .._checks import check_positive_int

__all__ = ["cell_centres", "kernel_offsets", "offset_grid"]


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
    if not extent > 0:
        raise ValueError(f"extent must be positive, got {extent!r}")
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
    if spacing is None:
        spacing = 1.0 / size
    if not spacing > 0:
        raise ValueError(f"spacing must be positive, got {spacing!r}")
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
        raise ValueError("offset_grid needs at least one axis")
    if spacings is None:
        spacings = [None] * len(sizes)
    spacings = tuple(spacings)
    if len(spacings) != len(sizes):
        raise ValueError(f"got {len(spacings)} spacings for {len(sizes)} axes")
    axes = [kernel_offsets(s, d, device=device, dtype=dtype) for s, d in zip(sizes, spacings)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
