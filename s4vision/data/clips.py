"""Clip samplers: which frame indices of a (long) video make up each clip.

A sampler is called with the number of frames of a video and its frame rate,
optionally restricted to a time span ``[start, end)`` in seconds, and returns
a list of clips, each a ``LongTensor`` of frame indices ``(T,)``:

* :class:`UniformClipSampler`: one clip of ``num_frames`` frames spread evenly
  over the span, or frames taken at a fixed rate (``fps``), for evaluation.
* :class:`SlidingWindowSampler`: dense windows of ``window`` frames (or
  seconds) every ``stride`` frames (or seconds), covering the whole span.
* :class:`RandomSegmentSampler`: TSN-style training sampling: the span is cut
  into ``num_segments`` equal segments and one random frame is drawn from each
  (the segment centres when ``random=False``).

The functions under them (:func:`uniform_indices`, :func:`sliding_windows`,
:func:`segment_indices`) work on a plain frame range ``[first, stop)``.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from .._checks import check_choice, check_positive_int, check_positive_number
from ..errors import InvalidValueError

__all__ = [
    "ClipSampler",
    "UniformClipSampler",
    "SlidingWindowSampler",
    "RandomSegmentSampler",
    "uniform_indices",
    "sliding_windows",
    "segment_indices",
    "frame_span",
]


def _check_range(first: int, stop: int) -> None:
    if not (0 <= first < stop):
        raise InvalidValueError(f"frame range [{first}, {stop}) is empty or negative")


def frame_span(num_frames: int, fps: float, start: float | None = None, end: float | None = None) -> tuple[int, int]:
    """Frame range ``[first, stop)`` of the time span ``[start, end)`` seconds.

    A frame belongs to the span when its timestamp ``i / fps`` does; ``None``
    means the start or the end of the video.
    """
    check_positive_int("num_frames", num_frames)
    check_positive_number("fps", fps)
    first = 0 if start is None else math.ceil(start * fps - 1e-9)
    stop = num_frames if end is None else min(num_frames, math.ceil(end * fps - 1e-9))
    if start is not None and start < 0:
        raise InvalidValueError(f"start must be >= 0 seconds, got {start}")
    if first >= stop:
        raise InvalidValueError(
            f"time span [{start}, {end}) s holds no frame of a {num_frames}-frame video at {fps:g} fps"
        )
    return first, stop


def uniform_indices(first: int, stop: int, num: int) -> torch.Tensor:
    """``num`` indices spread evenly over ``[first, stop)``: the centre of each of
    ``num`` equal segments. Frames repeat when the range is shorter than ``num``."""
    _check_range(first, stop)
    check_positive_int("num", num)
    centres = first + (torch.arange(num, dtype=torch.float64) + 0.5) * (stop - first) / num
    return centres.floor().long().clamp_(first, stop - 1)


def segment_indices(first: int, stop: int, num_segments: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One random index from each of ``num_segments`` equal segments of ``[first, stop)``
    (TSN sampling). Segments shorter than one frame share frames."""
    _check_range(first, stop)
    check_positive_int("num_segments", num_segments)
    bounds = first + torch.arange(num_segments + 1, dtype=torch.float64) * (stop - first) / num_segments
    low = bounds[:-1].floor()
    width = (bounds[1:].floor() - low).clamp_(min=1)
    offset = torch.floor(torch.rand(num_segments, generator=generator, dtype=torch.float64) * width)
    return (low + offset).long().clamp_(first, stop - 1)


def sliding_windows(first: int, stop: int, window: int, stride: int, frame_stride: int = 1) -> list[torch.Tensor]:
    """Windows of ``window`` frames (every ``frame_stride``-th frame) starting every
    ``stride`` frames, covering ``[first, stop)``.

    A window stands for ``window * frame_stride`` frames of video. The last window
    is shifted back to end with the range when the range does not divide evenly;
    a range shorter than one window gives a single window whose end repeats the
    last frame.
    """
    _check_range(first, stop)
    for name, value in (("window", window), ("stride", stride), ("frame_stride", frame_stride)):
        check_positive_int(name, value)
    offsets = torch.arange(window) * frame_stride
    last_start = max(first, stop - window * frame_stride)
    starts = list(range(first, last_start + 1, stride))
    if starts[-1] != last_start:
        starts.append(last_start)
    return [(start + offsets).clamp_(max=stop - 1) for start in starts]


class ClipSampler(ABC):
    """Maps a video's length and frame rate to a list of clips (frame-index tensors)."""

    #: whether two calls may return different clips (training-time sampling)
    is_random: bool = False

    def __call__(
        self,
        num_frames: int,
        fps: float,
        *,
        start: float | None = None,
        end: float | None = None,
        generator: torch.Generator | None = None,
    ) -> list[torch.Tensor]:
        """Clips of a ``num_frames``-frame video at ``fps`` within ``[start, end)`` seconds."""
        first, stop = frame_span(num_frames, fps, start, end)
        return self.sample(first, stop, float(fps), generator)

    @abstractmethod
    def sample(self, first: int, stop: int, fps: float, generator: torch.Generator | None) -> list[torch.Tensor]:
        """Clips within the frame range ``[first, stop)``."""


class UniformClipSampler(ClipSampler):
    """One clip spread evenly over the whole span.

    Args:
        num_frames: take this many frames, whatever the span's length.
        fps: or take frames at this rate (frames per second of video time), so a
            clip's length grows with the span. Give exactly one of the two.
    """

    def __init__(self, num_frames: int | None = None, *, fps: float | None = None):
        if (num_frames is None) == (fps is None):
            raise InvalidValueError(f"give exactly one of num_frames and fps, got num_frames={num_frames}, fps={fps}")
        self.num_frames = None if num_frames is None else check_positive_int("num_frames", num_frames)
        self.fps = None if fps is None else check_positive_number("fps", fps)

    def sample(self, first, stop, fps, generator):
        num = self.num_frames
        if num is None:
            num = max(1, round((stop - first) / fps * self.fps))
        return [uniform_indices(first, stop, num)]

    def __repr__(self) -> str:
        arg = f"num_frames={self.num_frames}" if self.fps is None else f"fps={self.fps:g}"
        return f"UniformClipSampler({arg})"


class SlidingWindowSampler(ClipSampler):
    """Dense windows over the span, for evaluating long videos clip by clip.

    Args:
        window: window length, in frames or seconds (``unit``).
        stride: distance between window starts, same unit; defaults to
            back-to-back windows (``window * frame_stride`` frames, or ``window``
            seconds).
        unit: ``"frames"`` or ``"seconds"`` (converted with the video's fps).
        frame_stride: take every ``frame_stride``-th frame within a window. With
            ``unit="frames"`` a clip holds ``window`` frames standing for
            ``window * frame_stride`` frames of video; with
            ``unit="seconds"`` a clip covers ``window`` seconds and holds
            ``ceil(window * fps / frame_stride)`` frames.
    """

    def __init__(self, window: float, stride: float | None = None, *, unit: str = "frames", frame_stride: int = 1):
        check_choice("unit", unit, ("frames", "seconds"))
        if unit == "frames":
            check_positive_int("window", window)
            if stride is not None:
                check_positive_int("stride", stride)
        else:
            check_positive_number("window", window)
            if stride is not None:
                check_positive_number("stride", stride)
        self.window = window
        self.stride = stride
        self.unit = unit
        self.frame_stride = check_positive_int("frame_stride", frame_stride)

    def sample(self, first, stop, fps, generator):
        if self.unit == "frames":
            window = self.window
            stride = self.window * self.frame_stride if self.stride is None else self.stride
        else:
            window = max(1, math.ceil(round(self.window * fps, 6) / self.frame_stride))
            stride = max(1, round((self.window if self.stride is None else self.stride) * fps))
        return sliding_windows(first, stop, window, stride, self.frame_stride)

    def __repr__(self) -> str:
        return (
            f"SlidingWindowSampler(window={self.window}, stride={self.stride}, unit={self.unit!r}, "
            f"frame_stride={self.frame_stride})"
        )


class RandomSegmentSampler(ClipSampler):
    """TSN sampling: ``num_segments`` equal segments, one random frame from each.

    With ``random=False`` it takes each segment's centre (the usual evaluation
    counterpart), which equals :class:`UniformClipSampler` ``(num_segments)``.
    """

    def __init__(self, num_segments: int, *, random: bool = True):
        self.num_segments = check_positive_int("num_segments", num_segments)
        self.is_random = bool(random)

    def sample(self, first, stop, fps, generator):
        if not self.is_random:
            return [uniform_indices(first, stop, self.num_segments)]
        return [segment_indices(first, stop, self.num_segments, generator)]

    def __repr__(self) -> str:
        return f"RandomSegmentSampler(num_segments={self.num_segments}, random={self.is_random})"
