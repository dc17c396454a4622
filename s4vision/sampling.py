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

Time. A video's frames are samples of a signal over time at timestamps ``t_i`` (seconds,
strictly increasing, any origin). A temporal model trained at ``train_fps`` frames per second
takes one training frame interval, ``1 / train_fps``, as its reference step, the time analogue of
the reference grid: the step before frame ``i`` is ``rate_i = (t_i - t_{i-1}) * train_fps``
reference steps (:func:`frame_rates`), so an SSM steps ``dt * rate_i`` and a video at twice the
frame rate is the same signal, twice as finely sampled. The step before the first frame is the
one after it (``rate_0 = rate_1``), so uniformly spaced timestamps give one constant rate,
``train_fps / fps``; a single frame takes one reference step. A frame rate ``fps`` stands for
the timestamps ``i / fps`` (:func:`uniform_timestamps`). The training frame rate is part of a
model's state (:class:`ReferenceClock`, a buffer that checkpoints carry, like the grid's size).
Timestamps are best given in float64: float32 seconds lose sub-frame precision after a few
minutes of video.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

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
    "uniform_timestamps",
    "check_timestamps",
    "frame_positions",
    "frame_rates",
    "uniform_rate",
    "time_window_index",
    "complete_windows",
    "Timeline",
    "ReferenceClock",
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
        """Per-axis rates ``ref_i / S_i``, or ``rate`` (a number or one per axis) when given.
        Axes fixed by :meth:`ReferenceGrid.fixed_rates` take the fixed rate instead of ``ref_i / S_i``."""
        if rate is not None:
            return check_rates(rate, self.ndim)
        derived = tuple(r / s for r, s in zip(self.reference(sizes), sizes))
        fixed = self._fixed_rates()
        return tuple(fixed.get(axis, r) for axis, r in enumerate(derived)) if fixed else derived

    def _fixed_rates(self) -> Dict[int, float]:
        raise NotImplementedError

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
        self._fixed: Dict[int, float] = {}

    def _fixed_rates(self) -> Dict[int, float]:
        return self._fixed

    @contextmanager
    def fixed_rates(self, rates: Dict[int, float]) -> Iterator[None]:
        """Within the block, axis ``i`` is sampled at ``rates[i]`` whatever its size, in this grid and
        every view of it (a view divides sizes and reference alike, so the rate is the same).

        Used for time: a clip of ``T`` frames at ``fps`` is sampled at ``train_fps / fps`` along
        time, not at ``num_frames / T`` (a clip of any length at the training frame rate has rate 1).
        """
        checked = {}
        for axis, rate in rates.items():
            if not isinstance(axis, int) or not 0 <= axis < self.ndim:
                raise InvalidValueError(f"axis must be in [0, {self.ndim}), got {axis!r}")
            checked[axis] = check_rate(rate)
        previous, self._fixed = self._fixed, {**self._fixed, **checked}
        try:
            yield
        finally:
            self._fixed = previous

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
        self._derived: Tuple[Optional[Tuple[int, ...]], Tuple[int, ...]] = (None, ())

    @property
    def _size(self) -> Tuple[int, ...]:
        # Read on every layer call: derived once per parent size (a parent replaces its tuple
        # whenever its size changes, so identity tells).
        size = self.parent._size
        if self._derived[0] is not size:
            own = tuple(max(s // k, 1) for s, k in zip(size, self.stride)) if all(s > 0 for s in size) else size
            self._derived = (size, own)
        return self._derived[1]

    def _fixed_rates(self) -> Dict[int, float]:
        return self.parent._fixed_rates()

    def observe(self, sizes: Sequence[int]) -> None:
        del sizes

    def __repr__(self) -> str:
        return f"GridView(stride={self.stride}, size={self.sizes})"


# -- time --------------------------------------------------------------------------------------

# Relative tolerance under which the steps between frames count as one rate (decoders round
# timestamps to their time base, e.g. 1/90000 s, so the gaps of a constant-rate video vary a little).
UNIFORM_RTOL = 1e-4


def uniform_timestamps(
    num_frames: int, fps: float, *, start: float = 0.0, device: Optional[torch.device] = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Timestamps ``start + i / fps`` of ``num_frames`` frames at ``fps``: ``(num_frames,)``."""
    check_positive_int("num_frames", num_frames)
    fps = check_positive_number("fps", fps)
    return start + torch.arange(num_frames, device=device, dtype=dtype) / fps


def check_timestamps(timestamps: object, num_frames: Optional[int] = None) -> torch.Tensor:
    """Frame timestamps in seconds, ``(T,)`` or ``(B, T)``, as a float64 tensor.

    Raises :class:`~s4vision.errors.InvalidValueError` (naming the problem and where) unless they
    are finite, strictly increasing along the last axis and, when ``num_frames`` is given, ``T``
    long.
    """
    if not isinstance(timestamps, torch.Tensor):
        if isinstance(timestamps, (str, bytes)) or not isinstance(timestamps, Sequence):
            raise InvalidTypeError(f"timestamps must be a tensor or a sequence of seconds, got {type(timestamps).__name__}")
        timestamps = torch.as_tensor(timestamps, dtype=torch.float64)
    if timestamps.is_complex() or not (timestamps.is_floating_point() or timestamps.dtype in (torch.int32, torch.int64)):
        raise InvalidTypeError(f"timestamps must hold real seconds, got dtype {timestamps.dtype}")
    if timestamps.ndim not in (1, 2) or timestamps.shape[-1] == 0:
        raise InvalidValueError(f"timestamps must have shape (T,) or (B, T) with T >= 1, got {tuple(timestamps.shape)}")
    if num_frames is not None and timestamps.shape[-1] != num_frames:
        raise InvalidValueError(f"got {timestamps.shape[-1]} timestamps for {num_frames} frames")
    t = timestamps.detach().to(torch.float64)
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        where = tuple(int(i) for i in (~finite).nonzero()[0])
        raise InvalidValueError(f"timestamps must be finite, got {float(t[where])} at index {where}")
    steps = t.diff(dim=-1)
    if not bool((steps > 0).all()):
        where = tuple(int(i) for i in (steps <= 0).nonzero()[0])
        before = where[:-1] + (where[-1],)
        after = where[:-1] + (where[-1] + 1,)
        raise InvalidValueError(
            f"timestamps must be strictly increasing, got {float(t[before]):g} then {float(t[after]):g} "
            f"at index {after}"
        )
    return t


def frame_positions(timestamps: torch.Tensor, train_fps: float) -> torch.Tensor:
    """Where each frame lies, in training frame intervals from the first frame:
    ``(t_i - t_0) * train_fps``, ``(..., T)`` float64 (timestamps as :func:`check_timestamps` returns)."""
    return (timestamps - timestamps[..., :1]) * check_positive_number("train_fps", train_fps)


def frame_rates(timestamps: torch.Tensor, train_fps: float) -> torch.Tensor:
    """The step before each frame in training frame intervals, ``(t_i - t_{i-1}) * train_fps``,
    with the step before the first frame equal to the one after it (one frame: 1). ``(..., T)``
    float64, the per-step ``rate`` of a continuous-time layer (its SSM steps ``dt * rate_i``)."""
    steps = timestamps.diff(dim=-1) * check_positive_number("train_fps", train_fps)
    if steps.shape[-1] == 0:
        return torch.ones_like(timestamps)
    return torch.cat([steps[..., :1], steps], dim=-1)


def uniform_rate(rates: torch.Tensor, rtol: float = UNIFORM_RTOL) -> Optional[float]:
    """The one rate of ``rates (..., T)`` when every entry equals their mean within ``rtol``, else None."""
    mean = float(rates.mean())
    if bool(((rates - mean).abs() <= rtol * mean).all()):
        return mean
    return None


# Window boundaries are compared with this slack (in window widths), so that a frame whose
# timestamp is rounded a hair below a boundary still counts in the window it starts.
_WINDOW_EPS = 1e-6


def time_window_index(positions: torch.Tensor, width: float) -> torch.Tensor:
    """The time window ``floor(position / width)`` of each position (training frame intervals from
    the first frame; windows ``[k width, (k + 1) width)``): int64, ``positions``' shape."""
    return torch.floor(positions / width + _WINDOW_EPS).long()


def complete_windows(end: float, width: float) -> int:
    """How many windows of ``width`` end at or before ``end`` (the end of the last frame)."""
    return int(math.floor(end / width + _WINDOW_EPS))


class Timeline(NamedTuple):
    """Where a sequence's samples lie in time, for the rows ``rows`` of a batch (``None``: all).

    ``positions (L,)`` float64 in training frame intervals from the first sample, ``first`` the
    step before the first sample, ``end`` where the last sample ends (``positions[-1]`` plus the
    step before it)."""

    rows: Optional[torch.Tensor]
    positions: torch.Tensor
    first: float
    end: float


class ReferenceClock(nn.Module):
    """The frame rate a temporal model was trained at, kept in a buffer ``fps ()`` (float64) so
    checkpoints carry it; the time analogue of :class:`ReferenceGrid`.

    Args:
        fps: training frame rate; ``None`` sets it from the first frame rate (or mean frame rate of
            timestamps) seen in training mode. Until then (the buffer holds 0) every input counts
            as sampled at the reference step (rate 1).
    """

    fps: torch.Tensor

    def __init__(self, fps: Optional[float] = None, *, device=None) -> None:
        super().__init__()
        value = 0.0 if fps is None else check_positive_number("fps", fps)
        self.register_buffer("fps", torch.tensor(value, dtype=torch.float64, device=device))
        self._fps = value  # host copy

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if not self.fps.is_meta:
            self._fps = float(self.fps)

    @property
    def is_set(self) -> bool:
        return self._fps > 0

    @property
    def train_fps(self) -> Optional[float]:
        """The training frame rate, or ``None`` while unset."""
        return self._fps if self.is_set else None

    def set(self, fps: float) -> None:
        """Set the training frame rate."""
        self._fps = check_positive_number("fps", fps)
        if not self.fps.is_meta:
            self.fps.fill_(self._fps)

    def observe(self, fps: float) -> None:
        """Adopt ``fps`` as the training frame rate if none is set yet and the module is training."""
        if self.training and not self.is_set:
            self.set(fps)

    def rate(self, fps: float) -> float:
        """The rate of a video at ``fps``: ``train_fps / fps`` (1 while unset)."""
        fps = check_positive_number("fps", fps)
        return self._fps / fps if self.is_set else 1.0

    def reference_fps(self, timestamps: torch.Tensor) -> float:
        """The training frame rate, or while unset the mean frame rate of ``timestamps (..., T)``
        (one frame: 1), observed in training."""
        if not self.is_set:
            T = timestamps.shape[-1]
            fps = (T - 1) / float((timestamps[..., -1] - timestamps[..., 0]).mean()) if T > 1 else 1.0
            self.observe(fps)
            return fps
        return self._fps

    def timelines(
        self, num_steps: int, batch: int, timestamps=None, fps: Optional[float] = None, *,
        device: Optional[torch.device] = None,
    ) -> List[Timeline]:
        """Where the ``num_steps`` frames of a batch of ``batch`` lie in time, from their
        ``timestamps`` (``(T,)`` or ``(B, T)`` seconds), their ``fps``, or neither (the training
        rate). Rows with the same spacing share one :class:`Timeline` (all of them: ``rows=None``);
        rows whose spacing differs get one each. Observes the frame rate in training."""
        if timestamps is not None and fps is not None:
            raise InvalidValueError("give the frames' timestamps or their fps, not both")
        if timestamps is None:
            rate = 1.0
            if fps is not None:
                fps = check_positive_number("fps", fps)
                self.observe(fps)
                rate = self.rate(fps)
            positions = torch.arange(num_steps, dtype=torch.float64, device=device) * rate
            return [Timeline(None, positions, rate, num_steps * rate)]
        ts = check_timestamps(timestamps, num_steps)
        if ts.ndim == 2 and ts.shape[0] not in (1, batch):
            raise InvalidValueError(f"timestamps have {ts.shape[0]} rows for a batch of {batch}")
        reference = self.reference_fps(ts)
        positions = frame_positions(ts, reference).reshape(-1, num_steps).to(device)
        steps = frame_rates(ts, reference).reshape(-1, num_steps).to(device)
        if positions.shape[0] == 1 or torch.allclose(positions, positions[:1].expand_as(positions), rtol=0, atol=1e-9):
            p, r = positions[0], steps[0]
            return [Timeline(None, p, float(r[0]), float(p[-1] + r[-1]))]
        unique, inverse = torch.unique(positions, dim=0, return_inverse=True)
        timelines = []
        for g in range(unique.shape[0]):
            rows = (inverse == g).nonzero()[:, 0]
            p, r = positions[rows[0]], steps[rows[0]]
            timelines.append(Timeline(rows, p, float(r[0]), float(p[-1] + r[-1])))
        return timelines

    def extra_repr(self) -> str:
        return f"fps={self.train_fps}"
