"""Video classification datasets read from an annotation file.

The annotation file is a CSV with one video per line, ``path,label[,start,end]``:
``path`` relative to ``root`` (or absolute), ``label`` an integer class index or
a class name, and ``start``/``end`` an optional time span in seconds (either may
be left empty). A first line ``path,label,...`` is taken as a header; blank lines
and lines starting with ``#`` are ignored.

Every file is probed when the dataset is built (opened, and the first and last
frame of its span decoded), so broken files are found up front. They are listed
in :attr:`VideoClipDataset.bad_files`; building fails with a summary of them
unless ``skip_bad=True``, in which case they are skipped with a warning.
"""
from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors.torch import load_file
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .clips import ClipSampler, UniformClipSampler, frame_span
from .video import PathLike, SizeArg, VideoDecodeError, VideoReader
from ..errors import InvalidTypeError, InvalidValueError, MissingFileError, S4VisionError

__all__ = [
    "VideoRecord",
    "BadVideoFilesError",
    "read_annotations",
    "normalize_frames",
    "VideoClipDataset",
    "VideoFeatureDataset",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class VideoRecord:
    """One line of an annotation file; ``path`` is resolved against the root."""

    path: str
    label: int
    start: float | None = None
    end: float | None = None


class BadVideoFilesError(S4VisionError, RuntimeError):
    """Some videos of a dataset cannot be read; ``bad_files`` lists ``(path, reason)``."""

    def __init__(self, bad_files: list[tuple[str, str]], total: int):
        self.bad_files = bad_files
        shown = "\n".join(f"  {path}: {reason}" for path, reason in bad_files[:10])
        more = f"\n  ... and {len(bad_files) - 10} more" if len(bad_files) > 10 else ""
        super().__init__(
            f"{len(bad_files)} of {total} videos cannot be read "
            f"(pass skip_bad=True to skip them):\n{shown}{more}"
        )


def _parse_time(text: str, what: str, where: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InvalidValueError(f"{where}: {what} must be a number of seconds, got {text!r}") from None
    if value < 0:
        raise InvalidValueError(f"{where}: {what} must be >= 0 seconds, got {value}")
    return value


def read_annotations(
    annotation_file: PathLike, root: PathLike | None = None
) -> tuple[list[VideoRecord], list[str] | None]:
    """Parse an annotation CSV (``path,label[,start,end]``).

    Returns the records and the class names: ``None`` when every label is an
    integer (used as the class index), else the sorted distinct names, the
    label of each record being its name's position in that list.
    """
    annotation_file = Path(annotation_file)
    if not annotation_file.is_file():
        raise MissingFileError(f"no such annotation file: {str(annotation_file)!r}")
    root = annotation_file.parent if root is None else Path(root)
    rows = []
    with open(annotation_file, newline="") as f:
        for line_number, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if not rows and row[0].strip().lower() == "path":
                continue  # header
            where = f"{annotation_file}:{line_number}"
            if not 2 <= len(row) <= 4:
                raise InvalidValueError(f"{where}: expected 'path,label[,start,end]', got {len(row)} fields: {row}")
            path, label = row[0].strip(), row[1].strip()
            if not path or not label:
                raise InvalidValueError(f"{where}: empty path or label in {row}")
            start = _parse_time(row[2], "start", where) if len(row) > 2 else None
            end = _parse_time(row[3], "end", where) if len(row) > 3 else None
            if start is not None and end is not None and end <= start:
                raise InvalidValueError(f"{where}: end ({end}) must come after start ({start})")
            rows.append((path, label, start, end))
    if not rows:
        raise InvalidValueError(f"annotation file {str(annotation_file)!r} lists no videos")

    labels = [label for _, label, _, _ in rows]
    try:
        indices = [int(label) for label in labels]
        classes = None
    except ValueError:
        classes = sorted(set(labels))
        indices = [classes.index(label) for label in labels]
    records = [
        VideoRecord(str(root / path), index, start, end)
        for (path, _, start, end), index in zip(rows, indices)
    ]
    return records, classes


def normalize_frames(
    frames: torch.Tensor, mean: Sequence[float] | None = IMAGENET_MEAN, std: Sequence[float] | None = IMAGENET_STD
) -> torch.Tensor:
    """``uint8`` frames ``(T, H, W, 3)`` -> float ``(T, 3, H, W)`` in [0, 1], then
    ``(x - mean) / std`` per channel (skipped when ``mean``/``std`` are None)."""
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InvalidValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    x = frames.permute(0, 3, 1, 2).float().div_(255)
    if mean is not None:
        x.sub_(torch.as_tensor(mean, dtype=x.dtype).view(1, 3, 1, 1))
    if std is not None:
        x.div_(torch.as_tensor(std, dtype=x.dtype).view(1, 3, 1, 1))
    return x


@dataclass(frozen=True)
class _Clip:
    video: int  # index into dataset.videos
    indices: torch.Tensor | None  # None: drawn by the (random) sampler at access time


class VideoClipDataset(Dataset):
    """Clips ``(C, T, H, W)`` and labels from the videos of an annotation file.

    Args:
        annotation_file: CSV ``path,label[,start,end]`` (see the module docstring).
        root: directory the paths are relative to; defaults to the annotation
            file's directory.
        sampler: chooses each video's clips (see :mod:`s4vision.data.clips`);
            defaults to ``UniformClipSampler(num_frames)``. A deterministic
            sampler yielding several clips per video (sliding windows) makes one
            item per clip; a random one (TSN) draws a fresh clip at each access.
        num_frames: clip length of the default sampler.
        size: resize at decode: short side (int) or ``(height, width)``.
        mean, std: per-channel normalisation of the [0, 1] frames; None skips it.
        backend: video decoding backend (see :class:`~s4vision.data.video.VideoReader`).
        skip_bad: skip unreadable videos (with a warning) instead of failing.
        transform: optional callable applied to each normalised clip ``(C, T, H, W)``.
        progress: show a progress bar while probing the files.

    Attributes:
        videos: the readable videos' records.
        bad_files: ``(path, reason)`` for every video that failed the probe.
        classes: class names, or None when the labels are integers.

    Raises:
        BadVideoFilesError: some files cannot be read and ``skip_bad`` is False.
    """

    def __init__(
        self,
        annotation_file: PathLike,
        root: PathLike | None = None,
        *,
        sampler: ClipSampler | None = None,
        num_frames: int = 16,
        size: SizeArg = None,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
        backend: str = "auto",
        skip_bad: bool = False,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        progress: bool = True,
    ):
        self.sampler = UniformClipSampler(num_frames) if sampler is None else sampler
        if not isinstance(self.sampler, ClipSampler):
            raise InvalidTypeError(f"sampler must be a ClipSampler, got {type(sampler).__name__}")
        self.size, self.mean, self.std = size, mean, std
        self.backend, self.transform = backend, transform
        records, self.classes = read_annotations(annotation_file, root)

        self.videos: list[VideoRecord] = []
        self._meta: list[tuple[int, float]] = []  # (num_frames, fps) per video
        self.bad_files: list[tuple[str, str]] = []
        for record in tqdm(records, desc="probing videos", disable=not progress or len(records) < 2, leave=False):
            try:
                self._meta.append(self._probe(record))
                self.videos.append(record)
            except (FileNotFoundError, VideoDecodeError, ValueError, IndexError) as e:
                self.bad_files.append((record.path, f"{type(e).__name__}: {e}"))
        if self.bad_files:
            error = BadVideoFilesError(self.bad_files, len(records))
            if not skip_bad:
                raise error
            warnings.warn(f"skipping {error}", RuntimeWarning, stacklevel=2)
        if not self.videos:
            raise InvalidValueError(f"no readable video in {str(annotation_file)!r}")

        self._clips: list[_Clip] = []
        for v, (record, (length, fps)) in enumerate(zip(self.videos, self._meta)):
            if self.sampler.is_random:
                self._clips.append(_Clip(v, None))
            else:
                clips = self.sampler(length, fps, start=record.start, end=record.end)
                self._clips.extend(_Clip(v, indices) for indices in clips)

    def _probe(self, record: VideoRecord) -> tuple[int, float]:
        # Opening indexes the file; decoding the span's ends catches truncated data.
        with VideoReader(record.path, backend=self.backend) as reader:
            length, fps = len(reader), reader.fps
            first, stop = frame_span(length, fps, record.start, record.end)
            reader.get_frames([first, stop - 1])
        return length, fps

    def __len__(self) -> int:
        return len(self._clips)

    @property
    def labels(self) -> list[int]:
        """Label of every item, in order."""
        return [self.videos[clip.video].label for clip in self._clips]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        clip = self._clips[index]
        record = self.videos[clip.video]
        indices = clip.indices
        if indices is None:
            length, fps = self._meta[clip.video]
            indices = self.sampler(length, fps, start=record.start, end=record.end)[0]
        # One reader at a time, closed right away: bounds decoder memory (decord leaks).
        with VideoReader(record.path, backend=self.backend, size=self.size) as reader:
            frames = reader.get_frames(indices)
        x = normalize_frames(frames, self.mean, self.std).transpose(0, 1).contiguous()  # (C, T, H, W)
        if self.transform is not None:
            x = self.transform(x)
        return x, record.label

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(videos={len(self.videos)}, clips={len(self)}, sampler={self.sampler}, "
            f"size={self.size}, backend={self.backend!r}, bad_files={len(self.bad_files)})"
        )


class VideoFeatureDataset(Dataset):
    """Cached per-frame features ``(T, D)`` (or tokens ``(T, N, D)``) and labels,
    as written by :func:`s4vision.engine.features.extract_features`.

    Args:
        index: the cache's ``index.json`` or the directory holding it.
    """

    def __init__(self, index: PathLike):
        index = Path(index)
        if index.is_dir():
            index = index / "index.json"
        if not index.is_file():
            raise MissingFileError(f"no feature index at {str(index)!r}")
        content = json.loads(index.read_text())
        self.root = index.parent
        self.settings: dict = content["settings"]
        self.entries: list[dict] = content["videos"]
        self.failed: list[dict] = content.get("failed", [])
        if not self.entries:
            raise InvalidValueError(f"feature index {str(index)!r} lists no videos")

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def labels(self) -> list[int]:
        return [entry["label"] for entry in self.entries]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        entry = self.entries[index]
        features = load_file(str(self.root / entry["features"]))["features"]
        return features, entry["label"]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(videos={len(self)}, model={self.settings.get('model')!r}, "
            f"tokens={self.settings.get('tokens')}, shape of first={self.entries[0]['shape']})"
        )
