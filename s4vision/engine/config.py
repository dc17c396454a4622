"""Experiment configuration: dataclasses merged with YAML files and ``key=value`` overrides.

The dataclasses are the schema: OmegaConf builds a structured config from them, merges the
YAML file and then the command-line overrides on top, and rejects a key that does not exist
or a value of the wrong type. :func:`load_config` turns those rejections into a one-line
``ValueError`` naming the key and the valid ones.

Ranges and choices are declared on the fields themselves (``metadata={"schema": ...}``, a
:class:`Range` or :class:`OneOf`), and :func:`validate_config` checks every one of them up front,
before any data is read or any model built: ``data.augment.scale=[1.5, 0.2]`` is refused at
load time, naming the key, the value and the valid range.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from .._checks import _is_int, _is_number
from ..data.annotations import ANNOTATION_FORMATS
from ..data.clips import SHORT_POLICIES
from ..data.images import BAD_IMAGE_POLICIES
from .._resources import shipped_dir
from ..errors import InvalidValueError, MissingFileError

__all__ = [
    "ModelConfig",
    "AugmentConfig",
    "DataConfig",
    "OptimConfig",
    "TrainConfig",
    "EvalConfig",
    "VideoConfig",
    "ExperimentConfig",
    "TASKS",
    "Range",
    "OneOf",
    "validate_config",
    "CONFIG_DIR",
    "CONFIG_PATH_ENV",
    "config_dirs",
    "list_configs",
    "resolve_config_path",
    "load_config",
    "config_to_dict",
    "config_from_dict",
]

AMP_MODES = ("none", "bf16", "fp16")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "nearest-exact")
# image: image classifiers (timm / s4vision backbones) on image datasets;
# video_features: a temporal head on cached per-frame features (s4vision video extract-features);
# video_clips: clips decoded from video files, into a clip model (s4nd_convnext3d_*) or a frame
# encoder followed by a temporal head (model.encoder)
TASKS = ("image", "video_features", "video_clips")
VIDEO_SAMPLERS = ("uniform", "segments", "window")
EVAL_WINDOWS = ("uniform", "sliding")


@dataclass(frozen=True)
class Range:
    """The numbers a config field may hold: ``low <= v <= high`` (``<`` where ``low_open`` /
    ``high_open``; ``None``: unbounded), integers only if ``integer``. A list or pair field is
    checked element by element; ``ordered`` asks for a pair ``(a, b)`` with ``a <= b``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    ordered: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            bounds = f" in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None:
            bounds = f" {'>' if self.low_open else '>='} {self.low:g}"
        elif self.high is not None:
            bounds = f" {'<' if self.high_open else '<='} {self.high:g}"
        else:
            bounds = ""
        return f"a pair [a, b] with a <= b, each {kind}{bounds}" if self.ordered else f"{kind}{bounds}"

    def _holds(self, v: object) -> bool:
        if not (_is_int(v) if self.integer else _is_number(v)) or v != v:  # v != v: NaN
            return False
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return self.high is None or (v < self.high if self.high_open else v <= self.high)

    def check(self, key: str, value: object) -> None:
        if isinstance(value, (list, tuple)):
            ok = all(self._holds(v) for v in value)
            if self.ordered:
                ok = ok and len(value) == 2 and value[0] <= value[1]
        else:
            ok = not self.ordered and self._holds(value)
        if not ok:
            shown = list(value) if isinstance(value, tuple) else value
            each = "each value " if isinstance(value, (list, tuple)) and not self.ordered else ""
            raise InvalidValueError(f"{key}={shown!r} is out of range: {each}must be {self.describe()}")


@dataclass(frozen=True)
class OneOf:
    """The strings a config field may hold."""

    choices: Tuple[str, ...]

    def describe(self) -> str:
        return "one of " + ", ".join(self.choices)

    def check(self, key: str, value: object) -> None:
        if value not in self.choices:
            raise InvalidValueError(f"{key}={value!r} is not {self.describe()}")


def _schema(rule: Range | OneOf) -> Dict[str, Any]:
    return {"schema": rule}


_POSITIVE_INT = _schema(Range(low=1, integer=True))
_NON_NEGATIVE_INT = _schema(Range(low=0, integer=True))
_POSITIVE = _schema(Range(low=0, low_open=True))
_NON_NEGATIVE = _schema(Range(low=0))
_PROBABILITY = _schema(Range(0, 1))
CONFIG_DIR = shipped_dir("configs")  # the configs shipped with the package (the repository's configs/)
CONFIG_PATH_ENV = "S4VISION_CONFIG_PATH"  # user config directories, os.pathsep-separated


@dataclass
class ModelConfig:
    # a timm / s4vision model, or (video tasks) a temporal head (s4vision.models.heads)
    name: str = "s4nd_iso_micro"
    pretrained: bool = False
    checkpoint: Optional[str] = None  # initial weights (.safetensors), e.g. to fine-tune
    kwargs: Dict[str, Any] = field(default_factory=dict)  # extra timm.create_model (or head) arguments
    # video_clips with a temporal head: the timm image model that encodes every frame
    encoder: Optional[str] = None
    encoder_pretrained: bool = False  # its pretrained weights (timm's, or a model-zoo name.tag)
    encoder_checkpoint: Optional[str] = None  # or a local weights file
    encoder_kwargs: Dict[str, Any] = field(default_factory=dict)
    freeze_encoder: bool = True  # train the head only (the encoder runs without autograd)
    # frames per encoder forward pass; null: all frames of a batch at once
    frame_batch: Optional[int] = field(default=None, metadata=_POSITIVE_INT)


@dataclass
class AugmentConfig:
    random_resized_crop: bool = True
    # area fraction and aspect ratio ranges of the random resized crop
    scale: Tuple[float, float] = field(default=(0.8, 1.0), metadata=_schema(Range(0, 1, low_open=True, ordered=True)))
    ratio: Tuple[float, float] = field(default=(0.9, 1.1), metadata=_schema(Range(0, low_open=True, ordered=True)))
    hflip: float = field(default=0.0, metadata=_PROBABILITY)
    # else the training resize is not antialiased (sharper digits)
    antialias_prob: float = field(default=1.0, metadata=_PROBABILITY)
    # Gaussian blur at the training resolution, sigma from blur_sigma
    blur_prob: float = field(default=0.0, metadata=_PROBABILITY)
    blur_sigma: Tuple[float, float] = field(default=(0.1, 1.0), metadata=_schema(Range(0, low_open=True, ordered=True)))


@dataclass
class DataConfig:
    dataset: str = "mnist5k"
    root: Optional[str] = None
    download: bool = False
    train_split: str = "train"
    eval_split: str = "test"
    # training resolution (unless train.progressive says otherwise)
    resolution: int = field(default=14, metadata=_POSITIVE_INT)
    interpolation: str = field(default="bilinear", metadata=_schema(OneOf(INTERPOLATIONS)))
    batch_size: int = field(default=64, metadata=_POSITIVE_INT)  # per process
    eval_batch_size: int = field(default=250, metadata=_POSITIVE_INT)
    # evaluate on this many held-out images (spread evenly); null: all
    eval_limit: Optional[int] = field(default=None, metadata=_POSITIVE_INT)
    num_workers: int = field(default=0, metadata=_NON_NEGATIVE_INT)
    # unreadable images in an imagefolder, found by a scan at start-up: stop (list them and
    # exit before training) or skip (leave them out, with a warning listing them)
    bad_images: str = field(default="stop", metadata=_schema(OneOf(BAD_IMAGE_POLICIES)))
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class OptimConfig:
    lr: float = field(default=3e-3, metadata=_POSITIVE)
    # learning rate of SSM kernel parameters; null: same as lr
    ssm_lr: Optional[float] = field(default=1e-3, metadata=_POSITIVE)
    weight_decay: float = field(default=0.05, metadata=_NON_NEGATIVE)
    betas: Tuple[float, float] = field(default=(0.9, 0.999), metadata=_schema(Range(0, 1, high_open=True)))
    warmup_epochs: float = field(default=1.0, metadata=_NON_NEGATIVE)
    min_lr_ratio: float = field(default=0.01, metadata=_PROBABILITY)  # the cosine ends at lr * min_lr_ratio
    clip_grad: Optional[float] = field(default=1.0, metadata=_POSITIVE)  # max gradient norm; null: no clipping
    label_smoothing: float = field(default=0.0, metadata=_schema(Range(0, 1, high_open=True)))


@dataclass
class TrainConfig:
    # raising it on --resume extends the run: the schedule is re-planned (see train.py)
    epochs: int = field(default=10, metadata=_POSITIVE_INT)
    # stop (and end the schedule) after this many steps
    max_steps: Optional[int] = field(default=None, metadata=_POSITIVE_INT)
    progressive: List[List[int]] = field(default_factory=list)  # [[epoch, resolution], ...]
    amp: str = field(default="none", metadata=_schema(OneOf(AMP_MODES)))  # fp16 on CUDA only
    ema: bool = False
    ema_decay: float = field(default=0.999, metadata=_schema(Range(0, 1, low_open=True, high_open=True)))
    seed: int = field(default=0, metadata=_NON_NEGATIVE_INT)
    # epochs between held-out evaluations at the training resolution; 0: never
    eval_every: int = field(default=1, metadata=_NON_NEGATIVE_INT)
    # steps between mid-epoch checkpoints; 0: epoch ends only
    checkpoint_every: int = field(default=100, metadata=_NON_NEGATIVE_INT)
    keep_checkpoints: int = field(default=2, metadata=_POSITIVE_INT)
    output_dir: str = "runs/default"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: Optional[int] = field(default=None, metadata=_POSITIVE_INT)  # torch.set_num_threads on CPU
    progress: bool = True


@dataclass
class EvalConfig:
    # zero-shot test resolutions after training
    resolutions: List[int] = field(default_factory=list, metadata=_POSITIVE_INT)


@dataclass
class VideoConfig:
    """Where the videos (or cached features) are and how clips are cut from them (the video
    tasks; data.resolution is the frame size, data.batch_size etc. apply as for images)."""

    # video_clips: annotation files; video_features: feature caches (index.json or its folder)
    train: Optional[str] = None
    eval: Optional[str] = None
    root: Optional[str] = None  # the videos' folder (default: the annotation file's)
    format: str = field(default="auto", metadata=_schema(OneOf(ANNOTATION_FORMATS)))
    train_subset: Optional[str] = None  # a split inside the annotation file (Kinetics, COIN)
    eval_subset: Optional[str] = None
    # samples per clip; null (video_features only): whole feature sequences
    num_frames: Optional[int] = field(default=16, metadata=_POSITIVE_INT)
    # uniform: num_frames spread over the whole video; segments: one random frame per segment
    # (TSN) in training; window: num_frames consecutive samples at video.fps, at a random place
    sampler: str = field(default="uniform", metadata=_schema(OneOf(VIDEO_SAMPLERS)))
    # frames per second the window sampler takes (by time); null: the videos' own rate
    fps: Optional[float] = field(default=None, metadata=_POSITIVE)
    # a video shorter than a clip: reject (stop, naming it), loop or pad (hold the last frame)
    short: str = field(default="reject", metadata=_schema(OneOf(SHORT_POLICIES)))
    # evaluation: clips per video whose logits are averaged, placed uniformly, or sliding
    # windows every eval_stride seconds (window sampler only)
    eval_clips: int = field(default=1, metadata=_POSITIVE_INT)
    eval_windows: str = field(default="uniform", metadata=_schema(OneOf(EVAL_WINDOWS)))
    eval_stride: Optional[float] = field(default=None, metadata=_POSITIVE)
    # unreadable videos found at start-up: stop (list them) or skip (warn, leave them out)
    bad_videos: str = field(default="stop", metadata=_schema(OneOf(BAD_IMAGE_POLICIES)))
    backend: str = "auto"  # decoding backend: auto, pyav, decord, torchcodec
    # frame normalisation; null: the frame encoder's (its timm config), or ImageNet's
    mean: Optional[List[float]] = field(default=None, metadata=_schema(Range()))
    std: Optional[List[float]] = field(default=None, metadata=_POSITIVE)


@dataclass
class ExperimentConfig:
    task: str = field(default="image", metadata=_schema(OneOf(TASKS)))
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    video: VideoConfig = field(default_factory=VideoConfig)


def config_dirs(extra: Sequence[str | Path] = ()) -> list[Path]:
    """Where configs are found by name, first match first: ``extra`` (the command line's
    ``--config-dir``), the directories in ``$S4VISION_CONFIG_PATH``, then the package's own."""
    from_env = [p for p in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if p]
    return [Path(p).expanduser() for p in (*extra, *from_env)] + [CONFIG_DIR]


def list_configs(extra: Sequence[str | Path] = ()) -> list[str]:
    """Names of the YAML files in every config directory (:func:`config_dirs`)."""
    return sorted({p.stem for d in config_dirs(extra) if d.is_dir() for p in d.glob("*.yaml")})


def resolve_config_path(name: str | Path, extra: Sequence[str | Path] = ()) -> Path:
    """A path to a YAML file, or the name of one in a config directory (``mnist5k_s4nd_iso_micro``,
    looked up in :func:`config_dirs`: ``extra``, ``$S4VISION_CONFIG_PATH``, the package's)."""
    path = Path(name)
    if path.is_file():
        return path
    dirs = config_dirs(extra)
    for directory in dirs:
        for candidate in (directory / path, directory / f"{name}.yaml"):
            if candidate.is_file():
                return candidate
    searched = "; ".join(_describe_dir(d, d == CONFIG_DIR) for d in dirs)
    raise MissingFileError(f"config file not found: {name} (not a file; config directories: {searched})")


def _describe_dir(directory: Path, shipped: bool) -> str:
    owner = "s4vision's configs" if shipped else "user configs"
    if not directory.is_dir():
        return f"{owner} {directory} (no such directory)"
    names = sorted(p.stem for p in directory.glob("*.yaml"))
    return f"{owner} {directory} has {', '.join(names) or 'nothing'}"


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Defaults <- YAML file at ``path`` <- ``overrides`` (``"train.epochs=3"``), validated.

    ``path`` may also name a config without its directory and suffix (:func:`resolve_config_path`).
    """
    layers = [OmegaConf.structured(ExperimentConfig)]
    if path is not None:
        path = resolve_config_path(path)
        try:
            layers.append(OmegaConf.load(path))
        except Exception as err:  # YAML syntax errors come in several types
            raise InvalidValueError(f"cannot parse config {path}: {str(err).splitlines()[0]}") from None
    bad = [item for item in overrides if "=" not in item]
    if bad:
        raise InvalidValueError(f"override {bad[0]!r} is not of the form key=value (e.g. train.epochs=3)")
    layers.append(OmegaConf.from_dotlist(list(overrides)))
    try:
        merged = OmegaConf.merge(*layers)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise InvalidValueError(_describe(err)) from None
    validate_config(cfg)
    return cfg


def validate_config(cfg: ExperimentConfig) -> None:
    """Check every value against the ranges and choices declared on its field, then the
    cross-field rules (``train.progressive``, the video settings); raises ``ValueError``
    naming the key and value."""
    _check_schema(cfg, "")
    progressive_schedule(cfg)  # validates train.progressive
    if cfg.task != "image":
        _check_video(cfg)


def _check_video(cfg: ExperimentConfig) -> None:
    video = cfg.video
    for key in ("train", "eval"):
        if not getattr(video, key):
            what = "an annotation file" if cfg.task == "video_clips" else "a feature cache (index.json or its folder)"
            raise InvalidValueError(f"task={cfg.task} needs video.{key}: {what}")
    if cfg.train.progressive:
        raise InvalidValueError(f"train.progressive is for images; task={cfg.task} trains at one frame size")
    if cfg.eval.resolutions:
        raise InvalidValueError(f"eval.resolutions is for images; task={cfg.task} evaluates with the multi-clip "
                                "protocol (video.eval_clips, video.eval_windows)")
    if video.num_frames is None and cfg.task == "video_clips":
        raise InvalidValueError("video.num_frames=null (whole sequences) is for task=video_features; "
                                "clips need a length")
    if video.eval_windows == "sliding" and video.sampler != "window":
        raise InvalidValueError(f"video.eval_windows=sliding needs video.sampler=window, got {video.sampler!r}")
    if video.fps is not None and video.sampler != "window":
        raise InvalidValueError(f"video.fps sets the window sampler's rate; with video.sampler={video.sampler!r} the "
                                "clip spreads video.num_frames frames over the whole video (drop video.fps, or "
                                "use video.sampler=window)")
    for key in ("mean", "std"):
        values = getattr(video, key)
        if values is not None and len(values) not in (1, 3):
            raise InvalidValueError(f"video.{key}={list(values)} must have 1 (grey) or 3 values")


def _check_schema(node: Any, prefix: str) -> None:
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            _check_schema(value, f"{prefix}{f.name}.")
        elif "schema" in f.metadata and value is not None:
            f.metadata["schema"].check(prefix + f.name, value)


def progressive_schedule(cfg: ExperimentConfig) -> list[tuple[int, int]]:
    """``train.progressive`` as sorted ``(first_epoch, resolution)`` pairs starting at epoch 0."""
    if not cfg.train.progressive:
        return [(0, cfg.data.resolution)]
    steps = []
    for item in cfg.train.progressive:
        if len(item) != 2 or item[0] < 0 or item[1] < 1:
            raise InvalidValueError(f"train.progressive entries must be [epoch >= 0, resolution >= 1], got {list(item)}")
        steps.append((int(item[0]), int(item[1])))
    steps.sort()
    if steps[0][0] != 0:
        raise InvalidValueError(f"train.progressive must start at epoch 0, got {cfg.train.progressive}")
    return steps


def resolution_at_epoch(cfg: ExperimentConfig, epoch: int) -> int:
    """Training resolution of ``epoch`` under the progressive resizing schedule."""
    return [res for start, res in progressive_schedule(cfg) if start <= epoch][-1]


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ExperimentConfig), data))
    except OmegaConfBaseException as err:
        raise InvalidValueError(_describe(err)) from None


def _describe(err: OmegaConfBaseException) -> str:
    """One line for an OmegaConf error: the key, what is wrong, the valid keys."""
    full_key = getattr(err, "full_key", None) or getattr(err, "key", None)
    if isinstance(err, ConfigKeyError):
        owner = getattr(err, "object_type", None)
        section = full_key.rsplit(".", 1)[0] if "." in str(full_key) else None
        valid = [f.name for f in dataclasses.fields(owner)] if dataclasses.is_dataclass(owner) else []
        where = f" in section {section!r}" if section else ""
        choices = f"; valid keys{where}: {', '.join(valid)}" if valid else ""
        return f"unknown config key {full_key!r}{choices}"
    message = str(err).splitlines()[0]
    return f"bad value for config key {full_key!r}: {message}" if full_key else message
