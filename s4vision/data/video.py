"""Frame-accurate video reading with interchangeable decoding backends.

:class:`VideoReader` gives random access to the frames of one video file as
``uint8`` tensors ``(T, H, W, 3)``, whichever backend decodes it:

* ``"pyav"`` (the default, also chosen by ``"auto"``): maintained and bundles
  its own FFmpeg. Opening a file demuxes it once (no decoding) to index the
  presentation timestamp and keyframe flag of every frame; a read seeks to the
  keyframe preceding the first wanted frame and decodes forward, counting
  frames by timestamp, and keeps decoding (rather than seeking again) while
  the next wanted frame lies before the next keyframe.
* ``"decord"``: used only when asked for. decord is unmaintained, leaks memory
  on large videos and, in 0.6.0, mis-decodes some frame widths (e.g. 48 px);
  the reader reads in bounded chunks, checks every returned shape and turns
  decord's failures into :class:`VideoDecodeError`. Whether decord notices a
  truncated file depends on where its reads stop, so the file's packets are
  first counted by demuxing it with PyAV (no decoding) when PyAV is installed:
  a file holding fewer frames than its header declares is refused up front.
* ``"torchcodec"``: used when asked for and importable (it needs FFmpeg's
  shared libraries installed on the system).

Every failure to decode raises :class:`VideoDecodeError` naming the file and
the backend; a missing file raises :class:`FileNotFoundError`, a directory or
another non-file ``ValueError``. Paths may be ``str``, ``bytes`` or path objects.
"""
from __future__ import annotations

import bisect
import importlib.util
import math
import os
import re
from abc import ABC, abstractmethod
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence, Union

import numpy as np
import torch

from .._checks import check_choice, check_positive_int, check_sizes
from ..errors import InvalidTypeError, InvalidValueError, MissingFileError, S4VisionError

__all__ = [
    "VideoDecodeError",
    "VideoReader",
    "available_backends",
    "check_size",
    "resolve_frame_size",
    "write_video",
]

PathLike = Union[str, os.PathLike]
SizeArg = Union[int, Sequence[int], None]

BACKENDS = ("pyav", "decord", "torchcodec")
_BACKEND_MODULES = {"pyav": "av", "decord": "decord", "torchcodec": "torchcodec"}


class VideoDecodeError(S4VisionError, RuntimeError):
    """A video file could not be opened or decoded.

    Attributes:
        path: the file that failed.
        backend: the backend that was decoding it.
    """

    def __init__(self, path: PathLike, backend: str, reason: str):
        self.path = str(path)
        self.backend = backend
        self.reason = reason
        super().__init__(f"cannot decode video {self.path!r} with backend {backend!r}: {reason}")


def available_backends() -> list[str]:
    """Names of the decoding backends whose Python package is installed."""
    return [name for name in BACKENDS if importlib.util.find_spec(_BACKEND_MODULES[name]) is not None]


def check_size(size: SizeArg) -> int | tuple[int, int] | None:
    """Validate a ``size`` argument: None, a positive int (the short side), or a
    ``(height, width)`` pair of positive ints."""
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        return check_positive_int("size", size)
    return check_sizes("size", size, 2)


def resolve_frame_size(native_hw: tuple[int, int], size: SizeArg) -> tuple[int, int]:
    """Output ``(height, width)`` for a frame of ``native_hw`` resized to ``size``.

    ``size=None`` keeps the native size, an int sets the short side (aspect ratio
    kept, long side rounded), and a ``(height, width)`` pair is taken as is.
    """
    size = check_size(size)
    h, w = native_hw
    if size is None:
        return h, w
    if isinstance(size, tuple):
        return size
    if h <= w:
        return size, max(1, round(w * size / h))
    return max(1, round(h * size / w)), size


def _check_indices(indices, num_frames: int, path: str) -> np.ndarray:
    if isinstance(indices, (int, np.integer)):
        raise InvalidTypeError("get_frames expects a sequence of frame indices, got a single int; wrap it in a list")
    if isinstance(indices, torch.Tensor):
        array = indices.detach().cpu().numpy()
    else:
        array = np.asarray(indices if isinstance(indices, np.ndarray) else list(indices))
    if array.ndim != 1:
        raise InvalidValueError(f"frame indices must be one-dimensional, got shape {array.shape}")
    if array.size and array.dtype.kind not in "iu":
        raise InvalidTypeError(f"frame indices must be integers, got dtype {array.dtype}")
    array = array.astype(np.int64)
    bad = array[(array < 0) | (array >= num_frames)]
    if bad.size:
        raise IndexError(f"frame index {int(bad[0])} out of range [0, {num_frames}) for video {path!r}")
    return array


class _Backend(ABC):
    """One open file in one decoding library. Indices given to ``read`` are valid,
    sorted and unique; it returns ``uint8`` frames ``(T, H, W, 3)`` at the output size."""

    name: str
    num_frames: int
    fps: float
    height: int
    width: int

    @abstractmethod
    def read(self, indices: np.ndarray) -> np.ndarray: ...

    def times(self, indices: np.ndarray) -> np.ndarray:
        """Presentation times (seconds after the first frame) of frames ``indices``; backends
        without a timestamp index assume a constant frame rate."""
        return indices / self.fps

    @abstractmethod
    def close(self) -> None: ...


class _PyAVBackend(_Backend):
    name = "pyav"

    def __init__(self, path: str, size: SizeArg):
        import av

        self._av = av
        self.path = path
        try:
            self._container = av.open(path)
        except av.FFmpegError as e:
            raise VideoDecodeError(path, self.name, str(e)) from e
        try:
            if not self._container.streams.video:
                raise VideoDecodeError(path, self.name, "the file has no video stream")
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = "AUTO"
            self._build_index()
            ctx = self._stream.codec_context
            if not ctx.width or not ctx.height:
                raise VideoDecodeError(path, self.name, "the video stream has no frame size")
            rate = self._stream.average_rate or self._stream.guessed_rate
            if not rate and self._stream.duration and self._stream.time_base:
                rate = Fraction(self.num_frames) / (self._stream.duration * self._stream.time_base)
            self.fps = float(rate) if rate else float("nan")
            self.native_hw = (ctx.height, ctx.width)
            self.height, self.width = resolve_frame_size(self.native_hw, size)
        except VideoDecodeError:
            self._container.close()
            raise
        except av.FFmpegError as e:
            self._container.close()
            raise VideoDecodeError(path, self.name, str(e)) from e
        self._frames: Iterator | None = None
        self._position = -1  # index of the last frame the open decode iterator produced

    def _build_index(self) -> None:
        """Demux every packet once (no decoding): frame timestamps and keyframes."""
        pts, keyframe_pts = [], []
        for packet in self._container.demux(self._stream):
            if packet.size == 0:  # the flush packet at the end of the stream
                continue
            stamp = packet.pts if packet.pts is not None else packet.dts
            if stamp is None:
                raise VideoDecodeError(self.path, self.name, "packets carry no timestamps")
            pts.append(stamp)
            if packet.is_keyframe:
                keyframe_pts.append(stamp)
        if not pts:
            raise VideoDecodeError(self.path, self.name, "the video stream holds no frames")
        _check_complete(self.path, self.name, self._stream.frames, len(pts))
        self._pts = sorted(set(pts))
        self.num_frames = len(self._pts)
        self._index_of_pts = {p: i for i, p in enumerate(self._pts)}
        self._keyframes = sorted(self._index_of_pts[p] for p in set(keyframe_pts)) or [0]
        self._container.seek(0)  # rewind after demuxing to the end

    def times(self, indices: np.ndarray) -> np.ndarray:
        pts = np.asarray(self._pts, dtype=np.int64)[indices] - self._pts[0]
        base = self._stream.time_base
        if base is None:
            return super().times(indices)
        return pts * float(base)

    def _preceding_keyframe(self, index: int) -> int:
        k = bisect.bisect_right(self._keyframes, index) - 1
        return self._keyframes[max(k, 0)]

    def _seek(self, index: int) -> None:
        keyframe = self._preceding_keyframe(index)
        self._container.seek(self._pts[keyframe], stream=self._stream, backward=True, any_frame=False)
        self._frames = self._container.decode(self._stream)
        self._position = -1

    def read(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), self.height, self.width, 3), dtype=np.uint8)
        try:
            for slot, index in enumerate(indices.tolist()):
                # Seek only when a keyframe lies between where the decoder stands and
                # the frame we want; otherwise decoding forward is cheaper.
                if self._frames is None or index <= self._position or (
                    self._preceding_keyframe(index) > self._position + 1
                ):
                    self._seek(index)
                frame = self._decode_until(index)
                out[slot] = frame.to_ndarray(format="rgb24", width=self.width, height=self.height)
        except self._av.FFmpegError as e:
            self._frames = None
            raise VideoDecodeError(self.path, self.name, str(e)) from e
        return out

    def _decode_until(self, index: int):
        for frame in self._frames:
            stamp = frame.pts if frame.pts is not None else frame.dts
            position = self._index_of_pts.get(stamp)
            if position is None:
                continue
            self._position = position
            if position == index:
                return frame
            if position > index:
                break
        self._frames = None
        raise VideoDecodeError(
            self.path, self.name, f"frame {index} of {self.num_frames} could not be decoded (truncated file?)"
        )

    def close(self) -> None:
        self._frames = None
        self._container.close()


def _check_complete(path: str, backend: str, declared: int, present: int) -> None:
    if present < declared:
        raise VideoDecodeError(
            path, backend, f"the header declares {declared} frames but only {present} are present (truncated file?)"
        )


def _demuxed_frames(path: str) -> tuple[int, int] | None:
    """``(frames the header declares, packets actually present)`` of the first video stream,
    by demuxing with PyAV (no decoding); ``None`` when PyAV is not installed or cannot open
    the file (the decoding backend then reports what is wrong)."""
    try:
        import av
    except ImportError:
        return None
    try:
        container = av.open(path)
    except av.FFmpegError:
        return None
    with container:
        if not container.streams.video:
            return None
        stream = container.streams.video[0]
        present = 0
        try:
            for packet in container.demux(stream):
                present += packet.size > 0
        except av.FFmpegError:
            pass  # demuxing stopped at damaged data: what was counted is all there is
        return stream.frames, present


def _decord_reason(error: Exception) -> str:
    """decord's message without its log prefix ("[12:00:00] /src/file.cc:171: ")."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", lines[0])


class _DecordBackend(_Backend):
    name = "decord"
    chunk = 32  # frames per get_batch call: bounds decord's buffers

    def __init__(self, path: str, size: SizeArg):
        import decord

        self._decord = decord
        self.path = path
        counts = _demuxed_frames(path)  # decord's own detection of truncation is unreliable
        if counts is not None:
            _check_complete(path, self.name, *counts)
        try:
            reader = decord.VideoReader(path, num_threads=1)
            self.num_frames = len(reader)
            self.fps = float(reader.get_avg_fps())
            self.native_hw = tuple(reader[0].shape[:2]) if self.num_frames else (0, 0)
            self.height, self.width = resolve_frame_size(self.native_hw, size)
            if (self.height, self.width) != self.native_hw:
                del reader
                reader = decord.VideoReader(path, num_threads=1, width=self.width, height=self.height)
        except (decord.DECORDError, RuntimeError) as e:
            raise VideoDecodeError(path, self.name, _decord_reason(e)) from e
        if self.num_frames == 0:
            raise VideoDecodeError(path, self.name, "the video stream holds no frames")
        self._reader = reader

    def read(self, indices: np.ndarray) -> np.ndarray:
        expected = (self.height, self.width, 3)
        chunks = []
        try:
            for start in range(0, len(indices), self.chunk):
                batch = self._reader.get_batch(indices[start:start + self.chunk].tolist()).asnumpy()
                if batch.shape[1:] != expected:
                    raise VideoDecodeError(
                        self.path, self.name,
                        f"decord returned frames of shape {batch.shape[1:]} instead of {expected} "
                        "(a known decord 0.6 bug for some frame widths); use backend='pyav'",
                    )
                chunks.append(batch)
        except self._decord.DECORDError as e:
            reason = _decord_reason(e)
            raise VideoDecodeError(self.path, self.name, f"{reason} (decord fails on some frame widths; use backend='pyav')") from e
        if not chunks:
            return np.empty((0, *expected), dtype=np.uint8)
        return np.concatenate(chunks)

    def close(self) -> None:
        self._reader = None


class _TorchCodecBackend(_Backend):
    name = "torchcodec"

    def __init__(self, path: str, size: SizeArg):
        try:
            from torchcodec.decoders import VideoDecoder
        except (ImportError, OSError, RuntimeError) as e:
            raise ImportError(
                "backend='torchcodec' needs the torchcodec package and FFmpeg's shared libraries "
                f"(libavcodec, libavformat, ...) installed on the system: {e}"
            ) from e
        self.path = path
        try:
            probe = VideoDecoder(path, dimension_order="NHWC", seek_mode="exact")
            meta = probe.metadata
            self.num_frames = int(meta.num_frames or 0)
            self.fps = float(meta.average_fps or float("nan"))
            self.native_hw = (int(meta.height), int(meta.width))
            self.height, self.width = resolve_frame_size(self.native_hw, size)
            if (self.height, self.width) != self.native_hw:
                from torchcodec.transforms import Resize

                probe = VideoDecoder(
                    path, dimension_order="NHWC", seek_mode="exact",
                    transforms=[Resize((self.height, self.width))],
                )
        except (RuntimeError, ValueError) as e:
            raise VideoDecodeError(path, self.name, str(e)) from e
        if self.num_frames == 0:
            raise VideoDecodeError(path, self.name, "the video stream holds no frames")
        self._decoder = probe

    def read(self, indices: np.ndarray) -> np.ndarray:
        try:
            return self._decoder.get_frames_at(indices.tolist()).data.numpy()
        except (RuntimeError, ValueError, IndexError) as e:
            raise VideoDecodeError(self.path, self.name, str(e)) from e

    def close(self) -> None:
        self._decoder = None


_BACKEND_CLASSES = {"pyav": _PyAVBackend, "decord": _DecordBackend, "torchcodec": _TorchCodecBackend}


class VideoReader:
    """Random access to the frames of one video file.

    Args:
        path: the video file.
        backend: ``"auto"`` (PyAV), ``"pyav"``, ``"decord"`` or ``"torchcodec"``.
        size: resize at decode: ``None`` keeps the native size, an int sets the
            short side (aspect ratio kept), a ``(height, width)`` pair sets both.

    Use as a context manager, or call :meth:`close`, to release the decoder::

        with VideoReader("clip.mp4", size=128) as reader:
            frames = reader.get_frames(range(0, len(reader), 4))  # (T, H, W, 3) uint8

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is a directory or another non-file.
        TypeError: ``path`` is not a ``str``, ``bytes`` or path object.
        VideoDecodeError: the file cannot be opened or decoded.
        ImportError: the requested backend is not installed.
    """

    def __init__(self, path: PathLike | bytes, backend: str = "auto", size: SizeArg = None):
        check_choice("backend", backend, ("auto", *BACKENDS))
        self.size = check_size(size)
        try:
            self.path = os.fsdecode(path)
        except TypeError:
            raise InvalidTypeError(f"path must be a str, bytes or path object, got {type(path).__name__}") from None
        if os.path.isdir(self.path):
            raise InvalidValueError(f"{self.path!r} is a directory, not a video file")
        if not os.path.exists(self.path):
            raise MissingFileError(f"no such video file: {self.path!r}")
        if not os.path.isfile(self.path):
            raise InvalidValueError(f"{self.path!r} is not a regular file")
        self.backend = "pyav" if backend == "auto" else backend
        if importlib.util.find_spec(_BACKEND_MODULES[self.backend]) is None:
            raise ImportError(
                f"video backend {self.backend!r} is not installed "
                f"(pip install {_BACKEND_MODULES[self.backend]}); installed: {available_backends()}"
            )
        self._impl: _Backend | None = _BACKEND_CLASSES[self.backend](self.path, self.size)

    def _open_impl(self) -> _Backend:
        if self._impl is None:
            raise RuntimeError(f"VideoReader for {self.path!r} is closed")
        return self._impl

    def __len__(self) -> int:
        return self._open_impl().num_frames

    @property
    def fps(self) -> float:
        """Average frame rate, frames per second."""
        return self._open_impl().fps

    @property
    def duration(self) -> float:
        """Duration in seconds: number of frames / fps."""
        impl = self._open_impl()
        return impl.num_frames / impl.fps

    @property
    def frame_size(self) -> tuple[int, int]:
        """``(height, width)`` of the frames :meth:`get_frames` returns."""
        impl = self._open_impl()
        return impl.height, impl.width

    def timestamps(self, indices: Sequence[int] | torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
        """Presentation times in seconds (float64, the first frame at 0) of the frames at
        ``indices`` (all frames when ``None``), from the decoder's timestamps (PyAV) or
        ``index / fps`` (other backends). Variable-frame-rate files get their real times."""
        impl = self._open_impl()
        wanted = np.arange(impl.num_frames) if indices is None else _check_indices(indices, impl.num_frames, self.path)
        return torch.from_numpy(np.asarray(impl.times(wanted), dtype=np.float64))

    def get_frames(self, indices: Sequence[int] | torch.Tensor | np.ndarray) -> torch.Tensor:
        """Frames at ``indices`` (any order, repeats allowed) as ``uint8`` ``(T, H, W, 3)``.

        Raises:
            IndexError: an index lies outside ``[0, len(self))``.
            VideoDecodeError: a frame cannot be decoded.
        """
        impl = self._open_impl()
        wanted = _check_indices(indices, impl.num_frames, self.path)
        if wanted.size == 0:
            return torch.empty((0, impl.height, impl.width, 3), dtype=torch.uint8)
        unique, inverse = np.unique(wanted, return_inverse=True)
        frames = impl.read(unique)
        return torch.from_numpy(np.ascontiguousarray(frames[inverse]))

    def close(self) -> None:
        """Release the decoder; the reader cannot be used afterwards."""
        if self._impl is not None:
            self._impl.close()
            self._impl = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_impl", None) is not None:
            self.close()

    def __repr__(self) -> str:
        if self._impl is None:
            return f"VideoReader({self.path!r}, backend={self.backend!r}, closed)"
        return (
            f"VideoReader({self.path!r}, backend={self.backend!r}, frames={len(self)}, "
            f"fps={self.fps:.3g}, frame_size={self.frame_size})"
        )


def write_video(
    path: PathLike,
    frames: torch.Tensor | np.ndarray,
    fps: float,
    *,
    codec: str = "libx264",
    crf: int = 18,
    gop_size: int | None = None,
    threads: int = 0,
) -> Path:
    """Encode ``uint8`` frames ``(T, H, W, 3)`` (RGB) into an H.264 file with PyAV.

    ``crf`` sets x264's quality (0 is lossless, 18 visually lossless); ``gop_size``
    the maximum distance between keyframes; ``threads`` the encoder threads (0:
    automatic; 1 is fastest for tiny frames). Height and width must be even
    (yuv420p). Returns the path written.
    """
    import av

    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InvalidValueError(f"frames must be uint8 of shape (T, H, W, 3), got {frames.dtype} {frames.shape}")
    num_frames, height, width, _ = frames.shape
    if num_frames == 0 or height % 2 or width % 2:
        raise InvalidValueError(f"need at least one frame with even height and width, got shape {frames.shape}")
    if not (isinstance(fps, (int, float, Fraction)) and fps > 0 and math.isfinite(fps)):
        raise InvalidValueError(f"fps must be a positive number, got {fps!r}")
    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "threads": str(threads)}
        if gop_size is not None:
            stream.codec_context.gop_size = gop_size
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
