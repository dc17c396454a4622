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
* :class:`WindowSampler`: windows of ``num_frames`` samples taken *by time* at a
  frame rate ``fps`` (a video at another rate is resampled: the frame shown at
  each sample time is taken), at a random position (training), at
  ``clips`` evenly spread positions or as sliding windows (the multi-clip
  evaluation protocol).

Every sampler also gives :meth:`ClipSampler.clips`: :class:`Clip` objects
holding the frame indices *and* the time of every sample in seconds, which
continuous-time models take next to the frames.

Short videos. A span holding fewer samples than a clip needs is handled by an
explicit policy (``short``, one of :data:`SHORT_POLICIES`): ``"reject"`` (the
default) raises :class:`ShortVideoError`; ``"loop"`` plays the span again from
its start; ``"pad"`` holds its last frame. Looped and padded samples keep
advancing in time (their times continue at the clip's frame rate), so
timestamps always increase; :attr:`Clip.extra` marks them.

The functions under them (:func:`uniform_indices`, :func:`sliding_windows`,
:func:`segment_indices`) work on a plain frame range ``[first, stop)``.
"""
from __future__ import annotations

import math
from abc import ABC
from dataclasses import dataclass

import torch

from .._checks import check_choice, check_positive_int, check_positive_number
from ..errors import InvalidValueError

__all__ = [
    "Clip",
    "ClipSampler",
    "UniformClipSampler",
    "SlidingWindowSampler",
    "RandomSegmentSampler",
    "WindowSampler",
    "ShortVideoError",
    "SHORT_POLICIES",
    "WINDOW_POSITIONS",
    "uniform_indices",
    "sliding_windows",
    "segment_indices",
    "frame_span",
]

SHORT_POLICIES = ("reject", "loop", "pad")
WINDOW_POSITIONS = ("random", "uniform", "sliding")


class ShortVideoError(InvalidValueError):
    """A video (span) holds fewer samples than a clip needs and the policy is ``"reject"``."""


@dataclass(frozen=True)
class Clip:
    """One clip of a video.

    Attributes:
        indices: frame indices ``(T,)`` (``int64``) within the span.
        times: the time of every sample in seconds ``(T,)`` (``float64``, video time: frame
            ``i`` of a video at ``fps`` is at ``i / fps``), increasing.
        extra: ``(T,)`` bool, the samples past the span's end that the short-video policy
            added (looped or padded frames, at times continuing the clip's rate).
        resampled: the samples were taken by time at another rate than the video's own, so
            ``times`` are the sampling times, not the times of the frames shown.

    A dataset replaces the times of the other samples (not ``extra``, not ``resampled``) by the
    decoder's timestamps of their frames (exact for variable-frame-rate files).
    """

    indices: torch.Tensor
    times: torch.Tensor
    extra: torch.Tensor
    resampled: bool = False

    @property
    def own_times(self) -> torch.Tensor:
        """``(T,)`` bool: the samples whose time is their frame's own time."""
        return torch.zeros_like(self.extra) if self.resampled else ~self.extra

    @classmethod
    def of_frames(cls, indices: torch.Tensor, fps: float) -> "Clip":
        """A clip of real frames: each sample at its frame's time ``index / fps``."""
        indices = indices.long()
        return cls(indices, indices.double() / fps, torch.zeros(len(indices), dtype=torch.bool))


def _short_clip(first: int, stop: int, num: int, fps: float, policy: str, what: str) -> Clip:
    """A clip of ``num`` samples from a span of ``stop - first < num`` frames at ``fps``,
    by ``policy`` (see the module docstring)."""
    available = stop - first
    if policy == "reject":
        raise ShortVideoError(
            f"the span holds {available} {what} ({available / fps:.3f} s) but a clip needs {num} "
            f"(short-video policy 'reject'; choose 'loop' or 'pad' to use it)")
    steps = torch.arange(num)
    inside = steps % available if policy == "loop" else steps.clamp(max=available - 1)
    return Clip(first + inside, (first + steps).double() / fps, steps >= available)


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
    """Maps a video's length and frame rate to a list of clips (frame-index tensors), or
    with :meth:`clips` to :class:`Clip` objects that also carry every sample's time."""

    #: whether two calls may return different clips (training-time sampling)
    is_random: bool = False
    #: what a span shorter than a clip gets: "reject", "loop" or "pad"
    short: str = "reject"

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
        return [clip.indices for clip in self.clips(num_frames, fps, start=start, end=end, generator=generator)]

    def clips(
        self,
        num_frames: int,
        fps: float,
        *,
        start: float | None = None,
        end: float | None = None,
        generator: torch.Generator | None = None,
    ) -> list[Clip]:
        """Clips (frame indices and sample times) of a ``num_frames``-frame video at ``fps``
        within ``[start, end)`` seconds. Raises :class:`ShortVideoError` when the span is too
        short for a clip and ``short="reject"``."""
        first, stop = frame_span(num_frames, fps, start, end)
        return self.sample_clips(first, stop, float(fps), generator)

    def sample_clips(self, first: int, stop: int, fps: float, generator: torch.Generator | None) -> list[Clip]:
        """:class:`Clip` objects within ``[first, stop)``: the frames of :meth:`sample` at their
        own times (samplers with a short-video policy override this)."""
        return [Clip.of_frames(indices, fps) for indices in self.sample(first, stop, fps, generator)]

    def sample(self, first: int, stop: int, fps: float, generator: torch.Generator | None) -> list[torch.Tensor]:
        """Clips within the frame range ``[first, stop)`` as frame-index tensors."""
        return [clip.indices for clip in self.sample_clips(first, stop, fps, generator)]


def _check_short(short: str) -> str:
    return check_choice("short-video policy", short, SHORT_POLICIES)


class UniformClipSampler(ClipSampler):
    """One clip spread evenly over the whole span.

    Args:
        num_frames: take this many frames, whatever the span's length.
        fps: or take frames at this rate (frames per second of video time), so a
            clip's length grows with the span. Give exactly one of the two.
    """

    def __init__(self, num_frames: int | None = None, *, fps: float | None = None, clips: int = 1,
                 short: str = "reject"):
        if (num_frames is None) == (fps is None):
            raise InvalidValueError(f"give exactly one of num_frames and fps, got num_frames={num_frames}, fps={fps}")
        self.num_frames = None if num_frames is None else check_positive_int("num_frames", num_frames)
        self.fps = None if fps is None else check_positive_number("fps", fps)
        self.num_clips = check_positive_int("clips", clips)
        self.short = _check_short(short)

    def sample_clips(self, first, stop, fps, generator):
        num = self.num_frames
        if num is None:
            num = max(1, round((stop - first) / fps * self.fps))
        if stop - first < num:
            return [_short_clip(first, stop, num, fps, self.short, "frames")]
        # View k of n takes the point (k + 0.5) / n of the way through each of the num segments
        # (n = 1: the segment centres): the usual multi-view evaluation of uniform sampling.
        offsets = (torch.arange(self.num_clips, dtype=torch.float64) + 0.5) / self.num_clips
        length = stop - first
        clips = []
        for offset in offsets.tolist():
            points = first + (torch.arange(num, dtype=torch.float64) + offset) * length / num
            clips.append(Clip.of_frames(points.floor().long().clamp_(first, stop - 1), fps))
        return clips

    def __repr__(self) -> str:
        arg = f"num_frames={self.num_frames}" if self.fps is None else f"fps={self.fps:g}"
        views = f", clips={self.num_clips}" if self.num_clips > 1 else ""
        return f"UniformClipSampler({arg}{views}, short={self.short!r})"


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
        short: policy for a span shorter than one window (see the module docstring).
    """

    def __init__(self, window: float, stride: float | None = None, *, unit: str = "frames", frame_stride: int = 1,
                 short: str = "reject"):
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
        self.short = _check_short(short)

    def sample_clips(self, first, stop, fps, generator):
        if self.unit == "frames":
            window = self.window
            stride = self.window * self.frame_stride if self.stride is None else self.stride
        else:
            window = max(1, math.ceil(round(self.window * fps, 6) / self.frame_stride))
            stride = max(1, round((self.window if self.stride is None else self.stride) * fps))
        available = math.ceil((stop - first) / self.frame_stride)  # samples on the frame_stride grid
        if available < window:
            clip = _short_clip(0, available, window, fps / self.frame_stride, self.short, "samples")
            return [Clip(first + clip.indices * self.frame_stride, first / fps + clip.times, clip.extra)]
        return [Clip.of_frames(w, fps) for w in sliding_windows(first, stop, window, stride, self.frame_stride)]

    def __repr__(self) -> str:
        return (
            f"SlidingWindowSampler(window={self.window}, stride={self.stride}, unit={self.unit!r}, "
            f"frame_stride={self.frame_stride}, short={self.short!r})"
        )


class RandomSegmentSampler(ClipSampler):
    """TSN sampling: ``num_segments`` equal segments, one random frame from each.

    With ``random=False`` it takes each segment's centre (the usual evaluation
    counterpart), which equals :class:`UniformClipSampler` ``(num_segments)``.
    """

    def __init__(self, num_segments: int, *, random: bool = True, short: str = "reject"):
        self.num_segments = check_positive_int("num_segments", num_segments)
        self.is_random = bool(random)
        self.short = _check_short(short)

    def sample_clips(self, first, stop, fps, generator):
        if stop - first < self.num_segments:
            return [_short_clip(first, stop, self.num_segments, fps, self.short, "frames")]
        if not self.is_random:
            return [Clip.of_frames(uniform_indices(first, stop, self.num_segments), fps)]
        return [Clip.of_frames(segment_indices(first, stop, self.num_segments, generator), fps)]

    def __repr__(self) -> str:
        return f"RandomSegmentSampler(num_segments={self.num_segments}, random={self.is_random}, short={self.short!r})"


class WindowSampler(ClipSampler):
    """Windows of ``num_frames`` samples taken by time at ``fps`` frames per second.

    Sample ``k`` of a window starting at time ``s`` is at ``s + k / fps`` and shows the frame
    on screen then (frame ``floor(t * video_fps)``), so a video at another frame rate is
    resampled by time, never misaligned. Window starts lie on the ``fps`` grid from the span's
    start.

    Args:
        num_frames: samples per clip.
        fps: sampling rate; ``None`` takes every frame of the video (its own rate).
        position: ``"random"`` (one window at a random start: training), ``"uniform"``
            (``clips`` windows with starts spread evenly from the span's start to its end;
            one window is centred) or ``"sliding"`` (windows every ``stride`` seconds, the last
            one ending with the span).
        clips: windows per video for ``position="uniform"``.
        stride: seconds between sliding windows (default: back to back).
        short: policy for a span shorter than a window (see the module docstring).
    """

    def __init__(self, num_frames: int, fps: float | None = None, *, position: str = "uniform", clips: int = 1,
                 stride: float | None = None, short: str = "reject"):
        self.num_frames = check_positive_int("num_frames", num_frames)
        self.fps = None if fps is None else check_positive_number("fps", fps)
        self.position = check_choice("window position", position, WINDOW_POSITIONS)
        self.num_clips = check_positive_int("clips", clips)
        self.stride = None if stride is None else check_positive_number("stride", stride)
        self.short = _check_short(short)
        self.is_random = position == "random"

    def sample_clips(self, first, stop, fps, generator):
        rate = self.fps or fps
        # samples of the rate grid inside the span: first / fps + j / rate < stop / fps
        available = max(1, math.ceil((stop - first) / fps * rate - 1e-9))
        num = self.num_frames
        if available < num:
            clip = _short_clip(0, available, num, rate, self.short, f"samples at {rate:g} fps")
            return [self._on_frames(clip.indices, first, stop, fps, rate, clip.extra)]
        last = available - num
        if self.position == "random":
            starts = [int(torch.randint(last + 1, (1,), generator=generator))]
        elif self.position == "uniform":
            if self.num_clips == 1:
                starts = [last // 2]
            else:
                starts = sorted({round(k * last / (self.num_clips - 1)) for k in range(self.num_clips)})
        else:
            step = num if self.stride is None else max(1, round(self.stride * rate))
            starts = list(range(0, last + 1, step))
            if starts[-1] != last:
                starts.append(last)
        steps = torch.arange(num)
        return [self._on_frames(start + steps, first, stop, fps, rate, torch.zeros(num, dtype=torch.bool))
                for start in starts]

    @staticmethod
    def _on_frames(grid: torch.Tensor, first: int, stop: int, fps: float, rate: float, extra: torch.Tensor) -> Clip:
        """Samples ``grid`` (steps of the ``rate`` grid from the span's start) as a clip of the
        video's frames; ``extra`` samples keep advancing in time."""
        start_time = first / fps
        sample_times = start_time + grid.double() / rate
        indices = torch.floor(sample_times * fps + 1e-6).long().clamp_(first, stop - 1)
        steps = torch.arange(len(grid))
        times = torch.where(extra, start_time + (grid[0] + steps).double() / rate, sample_times)
        return Clip(indices, times, extra, resampled=abs(rate - fps) > 1e-6 * fps)

    def __repr__(self) -> str:
        rate = "native" if self.fps is None else f"{self.fps:g}"
        return (f"WindowSampler(num_frames={self.num_frames}, fps={rate}, position={self.position!r}, "
                f"clips={self.num_clips}, stride={self.stride}, short={self.short!r})")
