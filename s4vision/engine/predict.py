"""Apply a checkpoint to image and video files: the top classes with their probabilities.

:func:`predict` takes image files, video files or directories of them (searched recursively).
An image model predicts images, a video model videos (the other kind is refused, naming the
file). Every input is checked before any prediction: unreadable or truncated files, and videos
shorter than a clip under the ``reject`` policy, are listed in one error
(:class:`BadInputFilesError`) unless ``skip_bad`` leaves them out with a warning.

Videos are cut as the checkpoint was trained (:class:`~s4vision.engine.tasks.ClipSpec`): the
same sampling of frames (or feature steps), the multi-clip protocol, logits averaged over a
video's clips. A feature-head checkpoint rebuilds its frame encoder from the feature cache's
recorded settings. Decoding and encoding go ``chunk`` frames at a time, so memory does not grow
with a video's length (only the small per-step features of a whole-sequence model do).

Streaming (``stream=True``): a causal temporal head (``ViS4mer(bidirectional=False)``) consumes
the whole video as one sequence at the training frame rate, ``chunk`` samples at a time,
reporting the running prediction after each chunk (``on_update``); its final logits equal the
offline forward on the whole sequence, and memory stays bounded whatever the video's length.

Frame rates: a video at another rate than the training videos is named in a warning and its
frames are taken by time at the training rate (a continuous-time head, one whose ``forward``
takes ``timestamps``, gets a whole sequence at its own rate with its timestamps instead).
"""
from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .._checks import check_positive_int
from ..data.annotations import VIDEO_EXTENSIONS
from ..data.clips import Clip, ClipSampler, ShortVideoError, UniformClipSampler
from ..data.video import VideoDecodeError, VideoReader
from ..data.video_dataset import center_crop, normalize_frames
from ..errors import InvalidValueError, MissingFileError, S4VisionError
from ..models.heads import accepts_time, batch_fps
from .distributed import resolve_device
from .evaluate import load_checkpoint_model

__all__ = ["Prediction", "Predictor", "BadInputFilesError", "WrongInputKindError", "predict", "list_inputs",
           "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class WrongInputKindError(InvalidValueError):
    """A video given to an image model, or an image to a video model."""


class BadInputFilesError(S4VisionError, RuntimeError):
    """Some inputs cannot be predicted; ``bad_files`` lists ``(path, reason)``."""

    def __init__(self, bad_files: list[tuple[str, str]], total: int):
        self.bad_files = bad_files
        shown = "; ".join(f"{path}: {reason}" for path, reason in bad_files[:5])
        more = f"; ... and {len(bad_files) - 5} more" if len(bad_files) > 5 else ""
        super().__init__(f"{len(bad_files)} of {total} inputs cannot be predicted ({shown}{more}); "
                         "pass --skip-bad (skip_bad=True) to predict the others")


@dataclass
class Prediction:
    """What :func:`predict` returns for one input."""

    input: str
    kind: str  # "image" or "video"
    logits: torch.Tensor  # (classes,), averaged over a video's clips
    classes: Sequence[str]
    clips: int = 1
    updates: list[tuple[float, torch.Tensor]] = field(default_factory=list)  # (seconds, logits) when streaming

    @property
    def probabilities(self) -> torch.Tensor:
        return self.logits.double().softmax(dim=0)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most probable classes as ``(name, probability)``."""
        probabilities = self.probabilities
        values, indices = probabilities.topk(min(k, len(probabilities)))
        return [(str(self.classes[i]), float(v)) for v, i in zip(values, indices.tolist())]

    def to_dict(self, k: int = 5) -> dict[str, Any]:
        return {"input": self.input, "kind": self.kind, "clips": self.clips,
                "top": [{"class": name, "probability": p} for name, p in self.top(k)],
                "logits": [float(v) for v in self.logits]}


def list_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Image and video files among ``inputs``, directories searched recursively (sorted)."""
    if not inputs:
        raise InvalidValueError("give at least one image or video file, or a directory of them")
    known = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in known)
            if not files:
                raise InvalidValueError(f"no image or video files in directory {item} (looked for "
                                        f"{', '.join(known)})")
            found.extend(files)
        elif item.is_file():
            if item.suffix.lower() not in known:
                raise InvalidValueError(f"{item} is neither an image nor a video file (known suffixes: "
                                        f"{', '.join(known)})")
            found.append(item)
        else:
            raise MissingFileError(f"no such file or directory: {item}")
    return found


def _kind(path: Path) -> str:
    return "video" if path.suffix.lower() in VIDEO_EXTENSIONS else "image"


class Predictor:
    """A checkpoint loaded once, applied to many files (see the module docstring).

    Args:
        checkpoint: a model file, a run folder, or a pretrained name (``s4nd_iso_micro.mnist5k``).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        chunk: frames decoded (and encoded, and streamed) at a time.
    """

    def __init__(self, checkpoint: str | Path, *, device: str = "auto", chunk: int = 256):
        self.device = resolve_device(device)
        self.chunk = check_positive_int("chunk", chunk)
        self.model, self.info = load_checkpoint_model(checkpoint, device=self.device)
        self.task = self.info.get("task", "image")
        self.kind = "image" if self.task == "image" else "video"
        self.classes = list(self.info.get("classes") or [str(i) for i in range(self.info["num_classes"])])
        if self.kind == "video":
            self._setup_video()

    # -- checks ----------------------------------------------------------------------------------

    def check(self, path: Path) -> None:
        """Raise if ``path`` cannot be predicted (wrong kind, unreadable, too short)."""
        kind = _kind(path)
        if kind != self.kind:
            other = "images" if self.kind == "image" else "videos"
            raise WrongInputKindError(f"checkpoint {self.info['file']} is a{'n' if self.kind == 'image' else ''} "
                                    f"{self.kind} model (task {self.task}) but {path} is a{'n' if kind == 'image' else ''} "
                                    f"{kind}: give it {other}")
        if kind == "image":
            from ..data.images import find_bad_images

            bad = find_bad_images([path])
            if bad:
                raise InvalidValueError(bad[0][1])
        else:
            with VideoReader(path, size=self.frame_size) as reader:
                reader.get_frames([0, len(reader) - 1])
                self._plan(reader, str(path), warn=False)

    # -- images ------------------------------------------------------------------------------------

    def _image_stats(self) -> tuple[list[float], list[float]]:
        mean, std = self.info.get("mean"), self.info.get("std")
        if mean and std:
            return list(mean), list(std)
        from ..data.images import IMAGE_DATASETS, create_image_dataset

        dataset = self.info.get("dataset")
        if dataset in IMAGE_DATASETS[:2]:  # in memory, no download
            data = create_image_dataset(dataset, "test")
            return list(data.mean), list(data.std)
        chans = self.info.get("in_chans") or 3
        return [0.5] * chans, [0.5] * chans

    @torch.no_grad()
    def predict_image(self, path: Path) -> Prediction:
        from PIL import Image
        from torchvision.transforms.functional import pil_to_tensor

        from ..data.images import create_image_transform

        chans = self.info.get("in_chans") or 3
        with Image.open(path) as image:
            x = pil_to_tensor(image.convert("L" if chans == 1 else "RGB")).float().div_(255)
        mean, std = self._image_stats()
        resolution = self.info.get("train_resolution")
        if resolution is None:
            raise InvalidValueError(f"checkpoint {self.info['file']} does not record its training resolution")
        x = create_image_transform(int(resolution), mean=mean, std=std)(x)
        logits = self.model(x[None].to(self.device))[0].float().cpu()
        return Prediction(str(path), "image", logits, self.classes)

    # -- videos ------------------------------------------------------------------------------------

    def _setup_video(self) -> None:
        from .tasks import ClipSpec

        self.spec = ClipSpec(**self.info["video"]["clips"])
        self.time_aware = accepts_time(self.model) is not None
        self.encoder = None
        if self.task == "video_features":
            from .features import FrameEncoder

            self.encoder = FrameEncoder.from_settings(self.info["features"], batch_size=self.chunk, device=self.device)
            self.frame_size = self.encoder.frame_size
        else:
            self.frame_size = int(self.info["train_resolution"])

    def _steps(self, reader: VideoReader) -> tuple[Clip, float]:
        """The frames the model's sequence is made of (route 1: those the feature extraction
        took; else every frame) and their rate."""
        settings = self.info.get("features") or {}
        num, fps, short = settings.get("num_frames"), settings.get("fps"), settings.get("short", "reject")
        if num is None and fps is None:
            return Clip.of_frames(torch.arange(len(reader)), reader.fps), reader.fps
        steps = UniformClipSampler(num, fps=fps, short=short).clips(len(reader), reader.fps)[0]
        times = steps.times
        rate = (len(times) - 1) / float(times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else reader.fps
        return steps, rate

    def _sampler(self, steps: Clip, rate: float) -> ClipSampler | None:
        sampler = self.spec.make_sampler(training=False, time_aware=self.time_aware)
        if self.spec.num_frames is None and sampler is not None and self.spec.whole_sequences_at_rate([rate]):
            return None
        return sampler

    def _plan(self, reader: VideoReader, name: str, warn: bool = True) -> tuple[Clip, list[Clip]]:
        """``(steps, clips over the steps)`` of a video; warns when its rate is not the training one."""
        steps, rate = self._steps(reader)
        resampled = self.spec.sampler == "window" or (self.spec.num_frames is None and not self.time_aware)
        if warn and resampled and abs(rate - self.spec.source_fps) > 0.01 * self.spec.source_fps:
            warnings.warn(f"video {name} is at {rate:.3g} fps but the model was trained on {self.spec.source_fps:g} fps "
                          f"videos; its frames are taken at {self.spec.fps:g} fps by time", RuntimeWarning, stacklevel=2)
        sampler = self._sampler(steps, rate)
        try:
            clips = [Clip(torch.arange(len(steps.indices)), steps.times - steps.times[0], steps.extra)] \
                if sampler is None else sampler.clips(len(steps.indices), rate)
        except ShortVideoError as err:
            raise ShortVideoError(f"video {name} is shorter than a clip: {err}") from None
        return steps, clips

    def _inputs(self, reader: VideoReader, frame_indices: torch.Tensor) -> torch.Tensor:
        """Model inputs for frames ``frame_indices``, decoded ``chunk`` at a time: features
        ``(T, D)`` (route 1) or a clip ``(C, T, H, W)``."""
        parts = []
        for part in frame_indices.split(self.chunk):
            frames = reader.get_frames(part)
            if self.encoder is not None:
                parts.append(self.encoder(frames))
            else:
                x = center_crop(normalize_frames(frames, self.info["mean"], self.info["std"]), self.frame_size)
                parts.append(x.transpose(0, 1))
        return torch.cat(parts, dim=0 if self.encoder is not None else 1)

    def _times(self, reader: VideoReader, steps: Clip, clip: Clip) -> torch.Tensor:
        """The sample times of a clip over the steps (decoder times where they are the frames' own)."""
        own = steps.own_times[clip.indices] & clip.own_times
        times = steps.times[clip.indices].clone()
        times[own] = reader.timestamps(steps.indices[clip.indices][own])
        extra = ~clip.own_times  # looped / padded / resampled samples: their sampling times
        times[extra] = steps.times[0] + clip.times[extra]
        return times.float()

    def _forward(self, x: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        from ..models.heads import forward_with_time

        return forward_with_time(self.model, x[None].to(self.device), times[None].to(self.device))[0].float().cpu()

    @torch.no_grad()
    def predict_video(self, path: Path, *, stream: bool = False,
                      on_update: Callable[[float, Prediction], None] | None = None) -> Prediction:
        with VideoReader(path, size=self.frame_size) as reader:
            steps, clips = self._plan(reader, str(path))
            if stream:
                return self._stream(reader, path, steps, clips, on_update)
            total = None
            for clip in clips:
                frame_indices = steps.indices[clip.indices]
                logits = self._forward(self._inputs(reader, frame_indices), self._times(reader, steps, clip))
                total = logits if total is None else total + logits
        return Prediction(str(path), "video", total / len(clips), self.classes, clips=len(clips))

    def _stream_head(self) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
        head = self.model if self.task == "video_features" else getattr(self.model, "head", None)
        if head is None or not hasattr(head, "stream"):
            raise InvalidValueError(f"--stream needs a temporal head with a streaming mode; checkpoint "
                                    f"{self.info['file']} holds a {self.info['arch']} model")
        if getattr(head, "bidirectional", False):
            raise InvalidValueError(f"--stream needs a causal head: checkpoint {self.info['file']} holds a "
                                    f"bidirectional {self.info['arch']} (train it with model.kwargs.bidirectional=false)")
        if self.spec.num_frames is not None:
            warnings.warn(f"the model was trained on clips of {self.spec.num_frames} frames; --stream runs it over the "
                          f"whole video at {self.spec.fps:g} fps instead", RuntimeWarning, stacklevel=2)
        encode = (lambda x: x) if self.task == "video_features" else (
            lambda clip: self.model.encode_frames(clip[None])[0])
        return head, encode

    def _stream(self, reader: VideoReader, path: Path, steps: Clip, clips: list[Clip],
                on_update: Callable[[float, Prediction], None] | None) -> Prediction:
        head, encode = self._stream_head()
        if self.spec.num_frames is None:
            (sequence,) = clips
        else:  # the whole video at the training rate
            rate = float(self.spec.fps)
            sequence = (UniformClipSampler(fps=rate).clips(len(steps.indices), self._steps(reader)[1])[0]
                        if not self.time_aware else Clip.of_frames(torch.arange(len(steps.indices)), rate))
        takes = set(inspect.signature(head.stream).parameters)
        state, logits, updates = None, None, []
        for part in torch.arange(len(sequence.indices)).split(self.chunk):
            piece = Clip(sequence.indices[part], sequence.times[part], sequence.extra[part], sequence.resampled)
            x = encode(self._inputs(reader, steps.indices[piece.indices])).to(self.device)
            times = self._times(reader, steps, piece)[None].to(self.device)
            kwargs = {"timestamps": times} if "timestamps" in takes else (
                {"fps": batch_fps(times)} if "fps" in takes and times.shape[1] > 1 else {})
            logits, state = head.stream(x[None], state, **kwargs)
            logits = logits[0].float().cpu()
            updates.append((float(times[0, -1]), logits))
            if on_update is not None:
                on_update(float(times[0, -1]), Prediction(str(path), "video", logits, self.classes))
        return Prediction(str(path), "video", logits, self.classes, clips=1, updates=updates)

    def predict_file(self, path: Path, *, stream: bool = False,
                     on_update: Callable[[float, Prediction], None] | None = None) -> Prediction:
        if self.kind == "image":
            if stream:
                raise InvalidValueError("--stream is for videos; this is an image model")
            return self.predict_image(path)
        return self.predict_video(path, stream=stream, on_update=on_update)


def predict(checkpoint: str | Path, inputs: Sequence[str | Path], *, device: str = "auto", chunk: int = 256,
            stream: bool = False, skip_bad: bool = False,
            on_update: Callable[[Path, float, Prediction], None] | None = None) -> list[Prediction]:
    """Predict every image or video in ``inputs`` with ``checkpoint`` (see the module docstring).

    ``on_update(path, seconds, prediction)`` receives the running prediction while streaming.
    Raises :class:`BadInputFilesError` listing the inputs that cannot be predicted (unless
    ``skip_bad``, which leaves them out with a warning).
    """
    paths = list_inputs(inputs)
    predictor = Predictor(checkpoint, device=device, chunk=chunk)
    bad, good = [], []
    for path in paths:
        try:
            predictor.check(path)
            good.append(path)
        except WrongInputKindError:
            raise  # not a damaged file: the wrong checkpoint, or the wrong inputs
        except (VideoDecodeError, ValueError, OSError, IndexError) as err:
            bad.append((str(path), f"{type(err).__name__}: {err}"))
    if bad:
        error = BadInputFilesError(bad, len(paths))
        if not skip_bad or not good:
            raise error
        warnings.warn(f"skipping {error}".replace("; pass --skip-bad (skip_bad=True) to predict the others", ""),
                      RuntimeWarning, stacklevel=2)
    results = []
    for path in good:
        update = None if on_update is None else (lambda seconds, running, path=path: on_update(path, seconds, running))
        results.append(predictor.predict_file(path, stream=stream, on_update=update))
    return results
