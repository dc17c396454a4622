"""What the engine trains on. One :class:`Task` per kind of data; one training loop for all.

The :class:`~s4vision.engine.train.Trainer` asks its task what a dataset is, how the model is
built, what a batch is and how the model is scored, and what a checkpoint must record to
rebuild the model and its inputs. Everything else (optimiser and parameter groups, schedule,
EMA, AMP, checkpoints, resume, run lock, DDP, logs) is the same for every task.

``task=image`` (:class:`ImageTask`)
    timm / s4vision image classifiers on image datasets, resized by the transform (progressive
    resizing, zero-shot evaluation at ``eval.resolutions``).
``task=video_features`` (:class:`VideoFeatureTask`)
    a temporal head (:func:`~s4vision.models.heads.create_temporal_head`) on per-frame features
    cached by ``s4vision video extract-features`` (the ViS4mer recipe).
``task=video_clips`` (:class:`VideoClipTask`)
    clips decoded from the videos of an annotation file, into a clip model
    (``s4nd_convnext3d_*``) or into a frame encoder (``model.encoder``, a timm image model)
    followed by a temporal head (:class:`~s4vision.models.VideoClassifier`).

Video items are :class:`~s4vision.data.video_dataset.VideoSample` ``(inputs, label,
timestamps)``; the frames' times go to models whose ``forward`` takes ``timestamps`` (or
``fps``). Clips are cut as :class:`ClipSpec` says, which checkpoints record (with the class
names, the training frame rate, clip length and frame size), so ``eval`` and ``predict`` cut
them the same way.
"""
from __future__ import annotations

import statistics
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn
from torch.utils.data import Dataset

from ..data.clips import ClipSampler, RandomSegmentSampler, ShortVideoError, UniformClipSampler, WindowSampler
from ..data.images import (SubsetImageDataset, TransformedDataset, _sample_seed, create_image_dataset,
                           create_image_transform)
from ..data.video_dataset import IMAGENET_MEAN, IMAGENET_STD, VideoClipDataset, VideoFeatureDataset
from ..errors import InvalidValueError
from ..models.heads import accepts_time, create_temporal_head, forward_with_time, is_temporal_head
from .checkpoint import load_model_weights
from .config import ExperimentConfig, progressive_schedule, resolution_at_epoch
from .distributed import DistributedContext, barrier
from .evaluate import EvalResult, autocast, evaluate, evaluate_resolutions, evaluation_loader
from .factory import check_resolution, create_classifier, is_s4vision_model
from .video_eval import collate_samples, video_logits, video_metrics

__all__ = ["Task", "ImageTask", "VideoFeatureTask", "VideoClipTask", "ClipSpec", "create_task",
           "build_video_model", "open_video_dataset", "SeededSamples"]


def create_task(cfg: ExperimentConfig, ctx: DistributedContext) -> "Task":
    """The task ``cfg.task`` names."""
    return {"image": ImageTask, "video_features": VideoFeatureTask, "video_clips": VideoClipTask}[cfg.task](cfg, ctx)


class SeededSamples(Dataset):
    """Sample ``i`` of epoch ``e`` is drawn with the global RNG seeded by ``(seed, e, i)``: random
    clip positions do not depend on worker count or on a resume halfway through an epoch."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_sample_seed(self.seed, self.epoch, index))
            return self.dataset[index]


class Task(ABC):
    """The data-dependent half of training (see the module docstring)."""

    kind: str
    train_set: Any
    eval_set: Any

    def __init__(self, cfg: ExperimentConfig, ctx: DistributedContext):
        self.cfg, self.ctx = cfg, ctx

    @property
    def arch(self) -> str:
        return self.cfg.model.name.split(".")[0]

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    @abstractmethod
    def build_datasets(self) -> None:
        """Set ``train_set`` and ``eval_set``."""

    @property
    @abstractmethod
    def classes(self) -> list[str]:
        """Class names, by index."""

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The model to train (initial weights from ``model.checkpoint`` loaded)."""

    @abstractmethod
    def metadata(self, resolution: int) -> dict[str, Any]:
        """What a model file records to rebuild the model and cut its inputs."""

    @abstractmethod
    def train_data(self) -> Dataset:
        """The dataset the training loader reads (reproducible per sample and epoch)."""

    @abstractmethod
    def start_epoch(self, epoch: int, resolution: int) -> None:
        """Prepare ``train_data()`` for ``epoch`` (its transform, its random draws)."""

    @abstractmethod
    def forward(self, net: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, targets)`` of a training batch, on the device."""

    @abstractmethod
    def evaluate(self, model: nn.Module, resolution: int, progress: bool, position: int | None) -> EvalResult:
        """The held-out score (a collective under ``torchrun``)."""

    def final_evaluation(self, model: nn.Module, progress: bool, position: int | None) -> dict[int, EvalResult]:
        """Evaluations after training (the image task's zero-shot resolutions)."""
        return {}

    def resolution_at_epoch(self, epoch: int) -> int:
        return self.cfg.data.resolution

    def describe(self, resolution: int) -> str:
        """What progress lines say about the input size (``@14px``)."""
        return f" @{resolution}px"

    def check_model(self, model: nn.Module) -> None:
        """Refuse settings the model cannot take, before training starts."""

    collate_fn = None

    def _load_initial_weights(self, model: nn.Module) -> nn.Module:
        if self.cfg.model.checkpoint:
            load_model_weights(model, self.cfg.model.checkpoint, arch=self.arch)
        return model


# -- images --------------------------------------------------------------------------------------


class ImageTask(Task):
    kind = "image"

    def build_datasets(self) -> None:
        data = self.cfg.data

        def make(split: str):
            return create_image_dataset(data.dataset, split, root=data.root, download=data.download,
                                        in_chans=self.cfg.model.kwargs.get("in_chans"), bad_images=data.bad_images)

        if data.download and self.ctx.distributed and not self.ctx.is_main:
            barrier(self.ctx)  # let rank 0 download first
        self.train_set, self.eval_set = make(data.train_split), make(data.eval_split)
        if data.eval_limit is not None:
            self.eval_set = SubsetImageDataset(self.eval_set, data.eval_limit)
        if data.download and self.ctx.distributed and self.ctx.is_main:
            barrier(self.ctx)
        self._train_data = TransformedDataset(self.train_set, transform=None, seed=self.cfg.train.seed)

    @property
    def classes(self) -> list[str]:
        return list(self.train_set.classes)

    def model_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.cfg.model.kwargs)
        kwargs.setdefault("in_chans", self.train_set.in_chans)
        kwargs.setdefault("num_classes", self.train_set.num_classes)
        if is_s4vision_model(self.arch):
            # s4vision backbones record the resolution they are trained at (the sampling step
            # their continuous kernels are defined against): the final one of the schedule.
            final = progressive_schedule(self.cfg)[-1][1]
            kwargs.setdefault("img_size", (final, final))
        return kwargs

    def build_model(self) -> nn.Module:
        model = create_classifier(self.cfg.model.name, pretrained=self.cfg.model.pretrained, **self.model_kwargs())
        return self._load_initial_weights(model)

    def check_model(self, model: nn.Module) -> None:
        for resolution in {res for _, res in progressive_schedule(self.cfg)} | set(self.cfg.eval.resolutions):
            check_resolution(model, resolution, self.cfg.model.name)

    def resolution_at_epoch(self, epoch: int) -> int:
        return resolution_at_epoch(self.cfg, epoch)

    def metadata(self, resolution: int) -> dict[str, Any]:
        kwargs = self.model_kwargs()
        root = self.cfg.data.root
        return {"task": self.kind, "arch": self.arch, "in_chans": kwargs.pop("in_chans"),
                "num_classes": kwargs.pop("num_classes"), "model_kwargs": kwargs, "dataset": self.cfg.data.dataset,
                "classes": self.classes, "data_root": str(Path(root).resolve()) if root else None,
                "train_resolution": resolution, "mean": list(self.train_set.mean), "std": list(self.train_set.std)}

    def train_data(self) -> Dataset:
        return self._train_data

    def start_epoch(self, epoch: int, resolution: int) -> None:
        data = self.cfg.data
        aug = data.augment
        self._train_data.transform = create_image_transform(
            resolution, training=True, mean=self.train_set.mean, std=self.train_set.std,
            random_resized_crop=aug.random_resized_crop, scale=aug.scale, ratio=aug.ratio, hflip=aug.hflip,
            antialias_prob=aug.antialias_prob, blur_prob=aug.blur_prob, blur_sigma=aug.blur_sigma,
            interpolation=data.interpolation)
        self._train_data.set_epoch(epoch)

    def forward(self, net: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = batch
        images = images.to(self.device, non_blocking=True)
        with autocast(self.device, self.cfg.train.amp):
            logits = net(images)
        return logits, targets.to(self.device, non_blocking=True)

    def evaluate(self, model: nn.Module, resolution: int, progress: bool, position: int | None) -> EvalResult:
        loader = evaluation_loader(self.eval_set, resolution, batch_size=self.cfg.data.eval_batch_size,
                                   interpolation=self.cfg.data.interpolation, ctx=self.ctx)
        return evaluate(model, loader, self.device, amp=self.cfg.train.amp, ctx=self.ctx)

    def final_evaluation(self, model: nn.Module, progress: bool, position: int | None) -> dict[int, EvalResult]:
        if not self.cfg.eval.resolutions:
            return {}
        return evaluate_resolutions(model, self.eval_set, self.cfg.eval.resolutions, device=self.device,
                                    batch_size=self.cfg.data.eval_batch_size, interpolation=self.cfg.data.interpolation,
                                    amp=self.cfg.train.amp, ctx=self.ctx, progress=progress, position=position)


# -- video: how clips are cut --------------------------------------------------------------------


@dataclass
class ClipSpec:
    """How clips are cut from videos (or feature sequences), as trained; recorded in checkpoints.

    ``fps`` is the training frame rate: the window sampler's rate, or (uniform sampling, whole
    sequences) the median rate of the training clips. ``source_fps`` is the median rate of the
    training videos themselves (feature steps per second for cached features).
    """

    num_frames: int | None
    sampler: str  # uniform | segments | window
    fps: float
    source_fps: float
    short: str = "reject"
    eval_clips: int = 1
    eval_windows: str = "uniform"
    eval_stride: float | None = None

    def make_sampler(self, training: bool, time_aware: bool = False) -> ClipSampler | None:
        """The training (random) or evaluation (multi-clip) sampler; ``None``: whole sequences
        as they are (a continuous-time model takes any rate)."""
        n, short = self.num_frames, self.short
        if n is None:
            return None if time_aware else UniformClipSampler(fps=self.fps, short=short)
        if self.sampler == "window":
            if training:
                return WindowSampler(n, self.fps, position="random", short=short)
            return WindowSampler(n, self.fps, position=self.eval_windows, clips=self.eval_clips,
                                 stride=self.eval_stride, short=short)
        if self.sampler == "segments" and training:
            return RandomSegmentSampler(n, short=short)
        return UniformClipSampler(n, clips=1 if training else self.eval_clips, short=short)

    def whole_sequences_at_rate(self, rates: list[float]) -> bool:
        """Whether every sequence is at the training rate already (no resampling needed)."""
        return all(abs(rate - self.fps) <= 0.01 * self.fps for rate in rates)


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _clip_rate(spec_sampler: ClipSampler | None, length: int, rate: float) -> float:
    """Samples per second of the (first evaluation) clip a sampler cuts from a sequence."""
    if spec_sampler is None:
        return rate
    times = spec_sampler.clips(length, rate, generator=torch.Generator().manual_seed(0))[0].times
    if len(times) < 2:
        return rate
    return (len(times) - 1) / float(times[-1] - times[0]) if times[-1] > times[0] else rate


def _resolve(path: str | None) -> str | None:
    return None if path is None else str(Path(path).resolve())


class _VideoTask(Task):
    """Shared by the two video tasks: samplers, seeded training draws, the multi-clip evaluation."""

    spec: ClipSpec

    def _make_spec(self, rates: list[float], lengths: list[int]) -> ClipSpec:
        video = self.cfg.video
        source_fps = _median(rates)
        spec = ClipSpec(num_frames=video.num_frames, sampler=video.sampler, fps=video.fps or source_fps,
                        source_fps=source_fps, short=video.short, eval_clips=video.eval_clips,
                        eval_windows=video.eval_windows, eval_stride=video.eval_stride)
        if video.sampler != "window" and video.num_frames is not None:
            # uniform sampling spreads the clip over the video: its rate is the clip's
            provisional = spec.make_sampler(training=False)
            clip_rates = []
            for length, rate in zip(lengths, rates):
                try:
                    clip_rates.append(_clip_rate(provisional, length, rate))
                except ShortVideoError:
                    pass  # reported, naming the video, when the samplers are set
            spec.fps = round(_median(clip_rates or rates), 6)
        return spec

    def _configure_sampling(self, model: nn.Module) -> None:
        """Samplers for the model: a continuous-time model takes whole sequences at any rate."""
        self.time_aware = accepts_time(model) is not None
        train_sampler = self.spec.make_sampler(training=True, time_aware=self.time_aware)
        eval_sampler = self.spec.make_sampler(training=False, time_aware=self.time_aware)
        if self.spec.num_frames is None and self.train_set.sampler is None and train_sampler is not None:
            if self.spec.whole_sequences_at_rate(self.train_set.frame_rates + self.eval_set.frame_rates):
                train_sampler = eval_sampler = None  # already at the training rate: keep them whole
        self.train_set.set_sampler(train_sampler)
        self.eval_set.set_sampler(eval_sampler)
        self._train_data = SeededSamples(self.train_set, self.cfg.train.seed)

    @property
    def classes(self) -> list[str]:
        if self.train_set.classes is not None:
            return list(self.train_set.classes)
        return [str(i) for i in range(max(self.train_set.video_labels) + 1)]

    def _check_eval_classes(self) -> None:
        count = len(self.classes)
        bad = [label for label in self.eval_set.video_labels if label >= count]
        if bad:
            raise InvalidValueError(f"video.eval has class index {bad[0]}, but video.train has only {count} classes")

    def train_data(self) -> Dataset:
        return self._train_data

    def start_epoch(self, epoch: int, resolution: int) -> None:
        self._train_data.set_epoch(epoch)

    collate_fn = staticmethod(collate_samples)

    def forward(self, net: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets, timestamps = batch
        with autocast(self.device, self.cfg.train.amp):
            logits = forward_with_time(net, inputs.to(self.device, non_blocking=True), timestamps.to(self.device))
        return logits, targets.to(self.device, non_blocking=True)

    def evaluate(self, model: nn.Module, resolution: int, progress: bool, position: int | None) -> EvalResult:
        logits, _ = video_logits(model, self.eval_set, num_classes=len(self.classes), device=self.device,
                                 batch_size=self.cfg.data.eval_batch_size, amp=self.cfg.train.amp, ctx=self.ctx,
                                 num_workers=self.cfg.data.num_workers, progress=progress, position=position)
        metrics = video_metrics(logits, self.eval_set.video_labels, self.classes)
        return EvalResult(top1=metrics["top1"], loss=metrics["loss"], count=metrics["count"])

    def _video_metadata(self) -> dict[str, Any]:
        video = self.cfg.video
        return {"clips": asdict(self.spec), "eval": _resolve(video.eval), "train": _resolve(video.train),
                "root": _resolve(video.root), "format": video.format, "eval_subset": video.eval_subset,
                "backend": video.backend}


class VideoFeatureTask(_VideoTask):
    kind = "video_features"

    def build_datasets(self) -> None:
        video = self.cfg.video
        self.train_set = VideoFeatureDataset(video.train)
        self.eval_set = VideoFeatureDataset(video.eval, classes=self.train_set.classes)
        self._check_eval_classes()
        for name, data in (("video.eval", self.eval_set),):
            if data.feature_dim != self.train_set.feature_dim:
                raise InvalidValueError(f"{name} ({data.index_path}) holds {data.feature_dim}-dim features but "
                                        f"video.train ({self.train_set.index_path}) {self.train_set.feature_dim}-dim")
        lengths = [entry["shape"][0] for entry in self.train_set.entries]
        self.spec = self._make_spec(self.train_set.frame_rates, lengths)
        self.eval_set.warn_other_rates(self.spec.source_fps)

    def resolution_at_epoch(self, epoch: int) -> int:
        """The frame size the features were extracted at (``data.resolution`` does not apply)."""
        return int(self.train_set.settings.get("size") or 0)

    def describe(self, resolution: int) -> str:
        return ""  # the features were computed at the extraction's size

    def build_model(self) -> nn.Module:
        if not is_temporal_head(self.cfg.model.name):
            from ..models.heads import list_temporal_heads

            raise InvalidValueError(f"task=video_features trains a temporal head; model.name={self.cfg.model.name!r} "
                                    f"is not one (registered: {', '.join(list_temporal_heads())})")
        model = create_temporal_head(self.cfg.model.name, self.train_set.feature_dim, len(self.classes),
                                     **self.cfg.model.kwargs)
        self._configure_sampling(model)
        return self._load_initial_weights(model)

    def metadata(self, resolution: int) -> dict[str, Any]:
        return {"task": self.kind, "arch": self.cfg.model.name, "num_classes": len(self.classes),
                "classes": self.classes, "model_kwargs": dict(self.cfg.model.kwargs),
                "feature_dim": self.train_set.feature_dim, "train_resolution": self.train_set.settings.get("size"),
                "features": self.train_set.settings, "fps": self.spec.fps, "num_frames": self.spec.num_frames,
                "video": self._video_metadata()}


class VideoClipTask(_VideoTask):
    kind = "video_clips"

    @property
    def uses_encoder(self) -> bool:
        return is_temporal_head(self.cfg.model.name)

    def _normalisation(self) -> tuple[list[float], list[float]]:
        """Frame normalisation: video.mean/std, else the (encoder) model's own, else ImageNet's."""
        video, model = self.cfg.video, self.cfg.model
        if video.mean is not None and video.std is not None:
            return list(video.mean), list(video.std)
        name, kwargs = (model.encoder, model.encoder_kwargs) if self.uses_encoder else (model.name, model.kwargs)
        try:
            with torch.device("meta"):
                cfg = timm.create_model(name, pretrained=False, **kwargs).pretrained_cfg
        except Exception:  # unknown here (reported when the model is built), or not buildable on meta
            cfg = {}
        mean, std = cfg.get("mean"), cfg.get("std")
        if mean is None or std is None:
            return list(IMAGENET_MEAN), list(IMAGENET_STD)
        return list(mean), list(std)

    def build_datasets(self) -> None:
        video, data = self.cfg.video, self.cfg.data
        if self.uses_encoder and not self.cfg.model.encoder:
            raise InvalidValueError(f"model.name={self.cfg.model.name!r} is a temporal head: task=video_clips needs "
                                    "model.encoder, the timm image model that encodes each frame")
        self.mean, self.std = self._normalisation()
        common = dict(root=video.root, size=data.resolution, crop=data.resolution, mean=self.mean, std=self.std,
                      backend=video.backend, skip_bad=video.bad_videos == "skip", format=video.format,
                      progress=self.cfg.train.progress and self.ctx.is_main,
                      sampler=UniformClipSampler(video.num_frames, short="loop"))  # replaced once the model is built
        self.train_set = VideoClipDataset(video.train, subset=video.train_subset, **common)
        self.eval_set = VideoClipDataset(video.eval, subset=video.eval_subset, classes=self.train_set.classes, **common)
        self._check_eval_classes()
        lengths = [source.length for source in self.train_set._sources]
        self.spec = self._make_spec(self.train_set.frame_rates, lengths)
        if video.sampler == "window":
            self.train_set.warn_other_rates(self.spec.source_fps)
            self.eval_set.warn_other_rates(self.spec.source_fps)

    def _encoder_spec(self) -> dict[str, Any] | None:
        model = self.cfg.model
        if not self.uses_encoder:
            return None
        return {"name": model.encoder, "kwargs": dict(model.encoder_kwargs), "freeze": model.freeze_encoder,
                "frame_batch": model.frame_batch}

    def build_model(self) -> nn.Module:
        model_cfg = self.cfg.model
        if self.uses_encoder:
            encoder = timm.create_model(model_cfg.encoder, pretrained=model_cfg.encoder_pretrained, num_classes=0,
                                        **model_cfg.encoder_kwargs)
            if model_cfg.encoder_checkpoint:
                _load_encoder_weights(encoder, model_cfg.encoder_checkpoint)
        else:
            encoder = None
        model = build_video_model("video_clips", model_cfg.name, len(self.classes), dict(model_cfg.kwargs),
                                  encoder_spec=self._encoder_spec(), encoder=encoder, num_frames=self.spec.num_frames,
                                  resolution=self.cfg.data.resolution, pretrained=model_cfg.pretrained)
        self._configure_sampling(model)
        return self._load_initial_weights(model)

    def check_model(self, model: nn.Module) -> None:
        if not self.uses_encoder:
            check_resolution(model, self.cfg.data.resolution, self.cfg.model.name)

    def metadata(self, resolution: int) -> dict[str, Any]:
        return {"task": self.kind, "arch": self.cfg.model.name, "num_classes": len(self.classes),
                "classes": self.classes, "model_kwargs": dict(self.cfg.model.kwargs), "encoder": self._encoder_spec(),
                "train_resolution": self.cfg.data.resolution, "mean": self.mean, "std": self.std,
                "fps": self.spec.fps, "num_frames": self.spec.num_frames, "video": self._video_metadata()}


def _load_encoder_weights(encoder: nn.Module, path: str) -> None:
    """Weights for the frame encoder from a local file (a classifier head in it is ignored)."""
    from ..errors import MissingFileError

    if not Path(path).is_file():
        raise MissingFileError(f"model.encoder_checkpoint file not found: {path}")
    state = timm.models.load_state_dict(path)
    result = encoder.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise InvalidValueError(f"model.encoder_checkpoint {path} does not fit the encoder: missing "
                                f"{result.missing_keys[:5]}")


def build_video_model(task: str, arch: str, num_classes: int, kwargs: dict[str, Any], *,
                      encoder_spec: dict[str, Any] | None = None, encoder: nn.Module | None = None,
                      feature_dim: int | None = None, num_frames: int | None = None, resolution: int | None = None,
                      pretrained: bool = False) -> nn.Module:
    """The model of a video task, from what a checkpoint records: a temporal head on features
    (``feature_dim``), a frame encoder + temporal head (``encoder_spec``; ``encoder`` when
    already built), or a timm clip model (built for ``num_frames`` x ``resolution`` clips)."""
    from ..models import VideoClassifier

    if task == "video_features":
        return create_temporal_head(arch, feature_dim, num_classes, **kwargs)
    if encoder_spec is not None:
        if encoder is None:
            encoder = timm.create_model(encoder_spec["name"], pretrained=False, num_classes=0, **encoder_spec["kwargs"])
        head = create_temporal_head(arch, encoder.num_features, num_classes, **kwargs)
        return VideoClassifier(encoder, head, freeze_encoder=encoder_spec["freeze"],
                               frame_batch=encoder_spec["frame_batch"])
    kwargs = dict(kwargs)
    if is_s4vision_model(arch):
        kwargs.setdefault("num_frames", num_frames)
        kwargs.setdefault("img_size", (resolution, resolution))
    model = create_classifier(arch, num_classes=num_classes, pretrained=pretrained, **kwargs)
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size") or ()
    if len(size) != 4:
        raise InvalidValueError(f"task=video_clips needs a clip model (input (B, C, T, H, W)) or a temporal head "
                                f"with model.encoder; {arch!r} takes images {tuple(size)}: use task=image, or "
                                f"set model.encoder and a temporal head as model.name")
    return model



def open_video_dataset(info: dict[str, Any], data: str | None = None, *, model: nn.Module | None = None,
                       spec: ClipSpec | None = None, subset: str | None = None, root: str | None = None,
                       format: str | None = None, skip_bad: bool = False, progress: bool = True) -> Dataset:
    """The evaluation dataset of a video checkpoint (``info`` from
    :func:`~s4vision.engine.evaluate.load_checkpoint_model`): ``data`` (default: the held-out
    data it was validated on) cut into clips as ``spec`` (default: as trained) says, with the
    checkpoint's class names. Refuses data of the other kind (videos for a feature head and
    the reverse) and feature caches of another dimension, naming the file."""
    video = info.get("video") or {}
    spec = spec or ClipSpec(**video["clips"])
    data = data or video.get("eval")
    if data is None:
        raise InvalidValueError(f"checkpoint {info.get('file')} records no evaluation data; give one")
    time_aware = model is not None and accepts_time(model) is not None
    path = Path(data)
    is_cache = (path / "index.json").is_file() if path.is_dir() else path.name == "index.json"
    if info["task"] == "video_features":
        if not is_cache:
            raise InvalidValueError(f"checkpoint {info.get('file')} is a temporal head on cached features "
                                    f"(task video_features): the data must be a feature cache (index.json or its "
                                    f"folder, from s4vision video extract-features), not {data}")
        dataset = VideoFeatureDataset(data, classes=info["classes"])
        if dataset.feature_dim != info["feature_dim"]:
            raise InvalidValueError(f"feature cache {dataset.index_path} holds {dataset.feature_dim}-dim features but "
                                    f"checkpoint {info.get('file')} was trained on {info['feature_dim']}-dim ones "
                                    f"(from {info.get('features', {}).get('model')}): extract them with that model")
        sampler = spec.make_sampler(training=False, time_aware=time_aware)
        if spec.num_frames is None and sampler is not None and spec.whole_sequences_at_rate(dataset.frame_rates):
            sampler = None
        dataset.warn_other_rates(spec.source_fps)
        dataset.set_sampler(sampler)
        return dataset
    if is_cache:
        raise InvalidValueError(f"checkpoint {info.get('file')} takes decoded clips (task video_clips): the data "
                                f"must be an annotation file of videos, not the feature cache {data}")
    resolution = info["train_resolution"]
    dataset = VideoClipDataset(data, root if root is not None else video.get("root") if data == video.get("eval") else None,
                               sampler=spec.make_sampler(training=False, time_aware=time_aware), size=resolution,
                               crop=resolution, mean=info["mean"], std=info["std"], backend=video.get("backend", "auto"),
                               skip_bad=skip_bad, format=format or video.get("format", "auto"),
                               subset=subset if subset is not None else (video.get("eval_subset")
                                                                         if data == video.get("eval") else None),
                               classes=info["classes"], progress=progress)
    if spec.sampler == "window":
        dataset.warn_other_rates(spec.source_fps)
    return dataset
