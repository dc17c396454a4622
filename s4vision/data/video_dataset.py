"""Video classification datasets: decoded clips, or cached per-frame features.

Both return a :class:`VideoSample` ``(inputs, label, timestamps)``: the clip ``(C, T, H, W)``
(or features ``(T, D)`` / tokens ``(T, N, D)``), the class index and the time of every frame
in seconds ``(T,)`` (the decoder's timestamps; looped, padded or resampled samples carry their
sampling times, see :mod:`s4vision.data.clips`), which continuous-time heads take beside the
frames. A ``DataLoader`` batches them into a ``VideoSample`` of ``(B, ...)`` tensors.

Annotation files are read by :func:`~s4vision.data.annotations.read_annotations` (s4vision's
CSV, Kinetics, LVU and COIN layouts). Every file is probed when the dataset is built (opened,
and the first and last frame of its span decoded), so broken files are found up front. They are
listed in :attr:`VideoClipDataset.bad_files`; building fails with a summary of them unless
``skip_bad=True``, in which case they are skipped with a warning. An annotated ``end`` past the
end of its video is cut to the video's end with a warning (:func:`record_span`). A video shorter
than a clip is handled by the sampler's short-video policy (``reject`` fails here, naming the
videos). With ``fps`` (the frame rate a model was trained at), videos at another rate are named
in one warning: their frames are resampled by time.

A deterministic sampler that yields several clips per video (the multi-clip evaluation
protocol) makes one item per clip; :attr:`~_ClipPlan.clip_videos` says which video each item
is, so predictions can be averaged per video.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .annotations import UnknownClassError, VideoRecord, read_annotations
from .clips import Clip, ClipSampler, ShortVideoError, UniformClipSampler, frame_span
from .video import PathLike, SizeArg, VideoDecodeError, VideoReader
from ..errors import InvalidTypeError, InvalidValueError, MissingFileError, S4VisionError

__all__ = [
    "VideoRecord",
    "VideoSample",
    "BadVideoFilesError",
    "UnknownClassError",
    "read_annotations",
    "record_span",
    "normalize_frames",
    "center_crop",
    "VideoClipDataset",
    "VideoFeatureDataset",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VideoSample(NamedTuple):
    """One item of a video dataset (or a batch of them, stacked by a ``DataLoader``)."""

    inputs: torch.Tensor  # clip (C, T, H, W), features (T, D) or tokens (T, N, D)
    label: int
    timestamps: torch.Tensor  # (T,) seconds, float32


class BadVideoFilesError(S4VisionError, RuntimeError):
    """Some videos of a dataset cannot be read; ``bad_files`` lists ``(path, reason)``."""

    def __init__(self, bad_files: list[tuple[str, str]], total: int):
        self.bad_files = bad_files
        shown = "\n".join(f"  {path}: {reason}" for path, reason in bad_files[:10])
        more = f"\n  ... and {len(bad_files) - 10} more" if len(bad_files) > 10 else ""
        self.summary, self.listing = f"{len(bad_files)} of {total} videos cannot be read", shown + more
        super().__init__(f"{self.summary} (pass --skip-bad, skip_bad=True, to skip them):\n{self.listing}")


def record_span(record: VideoRecord, num_frames: int, fps: float) -> tuple[int, int]:
    """Frame range ``[first, stop)`` of a record's time span in a video of ``num_frames``
    frames at ``fps`` (see :func:`~s4vision.data.clips.frame_span`), with a warning naming
    the file when the annotated ``end`` lies more than a frame past the video's end (the span
    is then cut at the end of the video)."""
    duration = num_frames / fps
    if record.end is not None and record.end > duration + 1 / fps:
        warnings.warn(f"video {record.path} lasts {duration:.3f} s but its annotation ends at {record.end:g} s; "
                      "the span stops at the end of the video", RuntimeWarning, stacklevel=2)
    return frame_span(num_frames, fps, record.start, record.end)


def normalize_frames(
    frames: torch.Tensor, mean: Sequence[float] | None = IMAGENET_MEAN, std: Sequence[float] | None = IMAGENET_STD
) -> torch.Tensor:
    """``uint8`` frames ``(T, H, W, 3)`` -> float ``(T, C, H, W)`` in [0, 1], then
    ``(x - mean) / std`` per channel (skipped when ``mean``/``std`` are None). One-channel
    ``mean``/``std`` make grey frames (``C = 1``, the average of R, G and B), for models
    trained on grey images."""
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InvalidValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    x = frames.permute(0, 3, 1, 2).float().div_(255)
    channels = len(mean) if mean is not None else 3
    if channels == 1:
        x = x.mean(dim=1, keepdim=True)
    elif channels != 3:
        raise InvalidValueError(f"mean/std must have 1 or 3 values, got {channels}")
    if mean is not None:
        x.sub_(torch.as_tensor(mean, dtype=x.dtype).view(1, -1, 1, 1))
    if std is not None:
        x.div_(torch.as_tensor(std, dtype=x.dtype).view(1, -1, 1, 1))
    return x


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size x size`` window of the last two axes (no-op when already that size)."""
    height, width = x.shape[-2:]
    if size > min(height, width):
        raise InvalidValueError(f"cannot crop {size} x {size} from frames of {height} x {width}")
    top, left = (height - size) // 2, (width - size) // 2
    return x[..., top:top + size, left:left + size]


class _Source(NamedTuple):
    name: str  # for messages
    length: int  # frames (or feature steps)
    fps: float  # their rate
    start: float | None
    end: float | None


class _ClipPlan(Dataset):
    """What both datasets share: the items a sampler makes of each source (one per clip of a
    deterministic sampler, one per video of a random one), short-video checks, labels."""

    sampler: ClipSampler
    classes: list[str] | None
    _sources: list[_Source]
    _labels: list[int]

    def _plan(self) -> None:
        self._items: list[tuple[int, Clip | None]] = []
        short = []
        for v, source in enumerate(self._sources):
            try:
                clips = self.sampler.clips(source.length, source.fps, start=source.start, end=source.end,
                                           generator=torch.Generator().manual_seed(0))
            except ShortVideoError as err:
                short.append(f"{source.name}: {err}")
                continue
            if self.sampler.is_random:
                self._items.append((v, None))
            else:
                self._items.extend((v, clip) for clip in clips)
        if short:
            more = f"; ... and {len(short) - 3} more" if len(short) > 3 else ""
            raise ShortVideoError(f"{len(short)} of {len(self._sources)} videos are shorter than a clip: "
                                  + "; ".join(short[:3]) + more)

    def set_sampler(self, sampler: ClipSampler | None) -> None:
        """Cut the items with ``sampler`` from now on (``None``, feature sequences only: each
        whole sequence is one item)."""
        if sampler is None and not isinstance(self, VideoFeatureDataset):
            raise InvalidTypeError("a clip dataset needs a sampler")
        if sampler is not None and not isinstance(sampler, ClipSampler):
            raise InvalidTypeError(f"sampler must be a ClipSampler, got {type(sampler).__name__}")
        self.sampler = sampler
        if sampler is None:
            self._items = [(v, None) for v in range(len(self._sources))]
        else:
            self._plan()

    def _clip(self, index: int) -> tuple[int, Clip]:
        video, clip = self._items[index]
        if clip is None:
            source = self._sources[video]
            clip = self.sampler.clips(source.length, source.fps, start=source.start, end=source.end)[0]
        return video, clip

    def __len__(self) -> int:
        return len(self._items)

    @property
    def labels(self) -> list[int]:
        """Label of every item, in order."""
        return [self._labels[video] for video, _ in self._items]

    @property
    def clip_videos(self) -> list[int]:
        """Index of the video each item comes from (several items per video under a
        multi-clip sampler)."""
        return [video for video, _ in self._items]

    @property
    def num_videos(self) -> int:
        return len(self._sources)

    @property
    def video_labels(self) -> list[int]:
        return list(self._labels)

    @property
    def video_names(self) -> list[str]:
        return [source.name for source in self._sources]

    @property
    def frame_rates(self) -> list[float]:
        """The rate of every video (frames, or feature steps, per second)."""
        return [source.fps for source in self._sources]

    def warn_other_rates(self, fps: float | None) -> None:
        """One warning naming the videos whose rate differs from ``fps`` by more than 1% (their
        frames are resampled by time)."""
        if fps is None:
            return
        others = [(s.name, s.fps) for s in self._sources if abs(s.fps - fps) > 0.01 * fps]
        if others:
            shown = ", ".join(f"{Path(name).name} at {rate:.3g} fps" for name, rate in others[:3])
            more = f", ... ({len(others)} in all)" if len(others) > 3 else ""
            warnings.warn(f"{len(others)} of {len(self._sources)} videos are not at the model's frame rate "
                          f"{fps:g} fps ({shown}{more}); their frames are resampled by time",
                          RuntimeWarning, stacklevel=2)


def _sample_times(clip: Clip, own: torch.Tensor, offset: float = 0.0) -> torch.Tensor:
    """The clip's times, with ``own`` (the decoder's times of the frames) where they apply."""
    times = clip.times + offset
    mask = clip.own_times
    times[mask] = own[mask]
    return times.float()


class VideoClipDataset(_ClipPlan):
    """Clips ``(C, T, H, W)``, labels and frame times from the videos of an annotation file.

    Args:
        annotation_file: an annotation file in any layout :func:`read_annotations` reads.
        root: directory the paths are relative to; defaults to the annotation file's folder.
        sampler: chooses each video's clips (see :mod:`s4vision.data.clips`); defaults to
            ``UniformClipSampler(num_frames)``. A deterministic sampler yielding several clips
            per video (sliding windows) makes one item per clip; a random one (TSN) draws a
            fresh clip at each access.
        num_frames: clip length of the default sampler.
        size: resize at decode: short side (int) or ``(height, width)``.
        crop: then take the central ``crop x crop`` window (so that videos of any aspect
            ratio batch together).
        mean, std: per-channel normalisation of the [0, 1] frames; None skips it; one value
            each makes grey frames.
        backend: video decoding backend (see :class:`~s4vision.data.video.VideoReader`).
        skip_bad: skip unreadable videos (with a warning) instead of failing.
        transform: optional callable applied to each normalised clip ``(C, T, H, W)``.
        progress: show a progress bar while probing the files.
        format, subset: the annotation layout and split (see :func:`read_annotations`).
        classes: class names to map name labels with (the training split's or a checkpoint's).
        fps: the frame rate a model was trained at: videos at another rate are named in a
            warning (the sampler resamples them by time).

    Attributes:
        videos: the readable videos' records.
        bad_files: ``(path, reason)`` for every video that failed the probe.
        classes: class names, or None when the labels are integers.

    Raises:
        BadVideoFilesError: some files cannot be read and ``skip_bad`` is False.
        ShortVideoError: some videos are shorter than a clip and the sampler's policy is
            ``"reject"``.
    """

    def __init__(
        self,
        annotation_file: PathLike,
        root: PathLike | None = None,
        *,
        sampler: ClipSampler | None = None,
        num_frames: int = 16,
        size: SizeArg = None,
        crop: int | None = None,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
        backend: str = "auto",
        skip_bad: bool = False,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        progress: bool = True,
        format: str = "auto",
        subset: str | None = None,
        classes: Sequence[str] | None = None,
        fps: float | None = None,
    ):
        self.sampler = UniformClipSampler(num_frames) if sampler is None else sampler
        if not isinstance(self.sampler, ClipSampler):
            raise InvalidTypeError(f"sampler must be a ClipSampler, got {type(sampler).__name__}")
        self.size, self.crop, self.mean, self.std = size, crop, mean, std
        self.backend, self.transform = backend, transform
        self.annotation_file = str(annotation_file)
        records, self.classes = read_annotations(annotation_file, root, format=format, subset=subset, classes=classes)

        self.videos: list[VideoRecord] = []
        self._sources: list[_Source] = []
        self.bad_files: list[tuple[str, str]] = []
        for record in tqdm(records, desc="probing videos", disable=not progress or len(records) < 2, leave=False):
            try:
                length, rate = self._probe(record)
            except (FileNotFoundError, VideoDecodeError, ValueError, IndexError) as e:
                self.bad_files.append((record.path, f"{type(e).__name__}: {e}"))
                continue
            self.videos.append(record)
            self._sources.append(_Source(record.path, length, rate, record.start, record.end))
        if self.bad_files:
            error = BadVideoFilesError(self.bad_files, len(records))
            if not skip_bad:
                raise error
            warnings.warn(f"skipping {error.summary}:\n{error.listing}", RuntimeWarning, stacklevel=2)
        if not self.videos:
            raise InvalidValueError(f"no readable video in {str(annotation_file)!r}")
        self._labels = [record.label for record in self.videos]
        self.warn_other_rates(fps)
        self.set_sampler(self.sampler)

    def _probe(self, record: VideoRecord) -> tuple[int, float]:
        # Opening indexes the file; decoding the span's ends catches truncated data.
        with VideoReader(record.path, backend=self.backend) as reader:
            length, fps = len(reader), reader.fps
            first, stop = record_span(record, length, fps)
            reader.get_frames([first, stop - 1])
        return length, fps

    def __getitem__(self, index: int) -> VideoSample:
        video, clip = self._clip(index)
        record = self.videos[video]
        # One reader at a time, closed right away: bounds decoder memory (decord leaks).
        with VideoReader(record.path, backend=self.backend, size=self.size) as reader:
            frames = reader.get_frames(clip.indices)
            times = _sample_times(clip, reader.timestamps(clip.indices))
        x = normalize_frames(frames, self.mean, self.std).transpose(0, 1)  # (C, T, H, W)
        if self.crop is not None:
            x = center_crop(x, self.crop)
        x = x.contiguous()
        if self.transform is not None:
            x = self.transform(x)
        return VideoSample(x, record.label, times)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(videos={len(self.videos)}, clips={len(self)}, sampler={self.sampler}, "
            f"size={self.size}, backend={self.backend!r}, bad_files={len(self.bad_files)})"
        )


class VideoFeatureDataset(_ClipPlan):
    """Cached per-frame features ``(T, D)`` (or tokens ``(T, N, D)``), labels and frame times,
    as written by :func:`s4vision.engine.features.extract_features`.

    Args:
        index: the cache's ``index.json`` or the directory holding it.
        sampler: chooses the clips of each feature sequence (a "frame" is a feature step at the
            sequence's own rate); ``None``: the whole sequence is one item.
        classes: class names to map the cache's labels with (the training split's or a
            checkpoint's); a name outside it raises :class:`UnknownClassError`.
        fps: the frame rate a model was trained at (see :class:`VideoClipDataset`).
    """

    def __init__(self, index: PathLike, *, sampler: ClipSampler | None = None, classes: Sequence[str] | None = None,
                 fps: float | None = None):
        index = Path(index)
        if index.is_dir():
            index = index / "index.json"
        if not index.is_file():
            raise MissingFileError(f"no feature index at {str(index)!r}")
        try:
            content = json.loads(index.read_text())
            if not isinstance(content, dict) or not {"settings", "videos"} <= set(content):
                raise ValueError("it lacks 'settings' or 'videos'")
        except (OSError, ValueError) as err:
            raise InvalidValueError(f"feature index {str(index)!r} is damaged ({err}); "
                                    "rerun extract-features into its folder to rebuild it") from None
        self.index_path = index
        self.root = index.parent
        self.settings: dict = content["settings"]
        self.entries: list[dict] = content["videos"]
        self.failed: list[dict] = content.get("failed", [])
        if not self.entries:
            raise InvalidValueError(f"feature index {str(index)!r} lists no videos")
        self.sampler = sampler
        own_classes = content.get("classes")
        self.classes, self._labels = self._map_labels(own_classes, classes)
        self._sources = [_Source(entry["path"], entry["shape"][0], float(entry.get("fps") or 1.0), None, None)
                         for entry in self.entries]
        self.warn_other_rates(fps)
        self.set_sampler(sampler)

    def _map_labels(self, own: list[str] | None, wanted: Sequence[str] | None) -> tuple[list[str] | None, list[int]]:
        labels = [int(entry["label"]) for entry in self.entries]
        if wanted is None:
            return own, labels
        if own is None:  # integer labels: they are the indices
            bad = [(e["path"], label) for e, label in zip(self.entries, labels) if not 0 <= label < len(wanted)]
            if bad:
                raise UnknownClassError(f"{self.index_path}: video {bad[0][0]} has class index {bad[0][1]}, out of "
                                        f"range for the {len(wanted)} known classes")
            return list(wanted), labels
        lookup = {name: i for i, name in enumerate(wanted)}
        mapped = []
        for entry, label in zip(self.entries, labels):
            name = own[label]
            if name not in lookup:
                shown = ", ".join(list(wanted)[:8]) + (", ..." if len(wanted) > 8 else "")
                raise UnknownClassError(f"{self.index_path}: video {entry['path']} has unknown class {name!r} "
                                        f"(known classes: {shown})")
            mapped.append(lookup[name])
        return list(wanted), mapped

    @property
    def feature_dim(self) -> int:
        """``D``, the size of one feature vector."""
        return int(self.entries[0]["shape"][-1])

    def load(self, video: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole cached sequence of video ``video``: features ``(T, ...)`` and times ``(T,)``."""
        entry = self.entries[video]
        path = self.root / entry["features"]
        try:
            tensors = load_file(str(path))
            features = tensors["features"]
        except FileNotFoundError:
            raise MissingFileError(f"feature file {str(path)!r} listed in {self.index_path} is missing; "
                                   "rerun extract-features to redo it") from None
        except (SafetensorError, OSError, KeyError) as err:
            raise InvalidValueError(f"cannot read feature file {str(path)!r} ({type(err).__name__}: {err}); "
                                    "rerun extract-features to redo it") from None
        if "timestamps" not in tensors:
            raise InvalidValueError(f"feature file {str(path)!r} has no frame timestamps (made by an older "
                                    "s4vision); rerun extract-features with --no-resume to redo it")
        return features, tensors["timestamps"]

    def __getitem__(self, index: int) -> VideoSample:
        video, clip = self._items[index] if self.sampler is None else self._clip(index)
        features, times = self.load(video)
        if clip is None:
            return VideoSample(features, self._labels[video], times.float())
        offset = float(times[0])  # sample times count from the sequence's first step
        return VideoSample(features[clip.indices], self._labels[video],
                           _sample_times(clip, times.double()[clip.indices], offset))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(videos={len(self.entries)}, items={len(self)}, model={self.settings.get('model')!r}, "
            f"tokens={self.settings.get('tokens')}, shape of first={self.entries[0]['shape']})"
        )
