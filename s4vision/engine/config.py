"""Experiment configuration: dataclasses merged with YAML files and ``key=value`` overrides.

The dataclasses are the schema: OmegaConf builds a structured config from them, merges the
YAML file and then the command-line overrides on top, and rejects a key that does not exist
or a value of the wrong type. :func:`load_config` turns those rejections into a one-line
``ValueError`` naming the key and the valid ones.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from .._checks import check_non_negative_int, check_optional, check_positive_int
from ..errors import InvalidValueError, MissingFileError

__all__ = [
    "ModelConfig",
    "AugmentConfig",
    "DataConfig",
    "OptimConfig",
    "TrainConfig",
    "EvalConfig",
    "ExperimentConfig",
    "CONFIG_DIR",
    "list_configs",
    "resolve_config_path",
    "load_config",
    "config_to_dict",
    "config_from_dict",
]

AMP_MODES = ("none", "bf16", "fp16")
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"  # the repository's configs/


@dataclass
class ModelConfig:
    name: str = "s4nd_iso_micro"
    pretrained: bool = False
    checkpoint: Optional[str] = None  # initial weights (.safetensors), e.g. to fine-tune
    kwargs: Dict[str, Any] = field(default_factory=dict)  # extra timm.create_model arguments


@dataclass
class AugmentConfig:
    random_resized_crop: bool = True
    scale: Tuple[float, float] = (0.8, 1.0)
    ratio: Tuple[float, float] = (0.9, 1.1)
    hflip: float = 0.0
    antialias_prob: float = 1.0  # else the training resize is not antialiased (sharper digits)
    blur_prob: float = 0.0  # Gaussian blur at the training resolution, sigma from blur_sigma
    blur_sigma: Tuple[float, float] = (0.1, 1.0)


@dataclass
class DataConfig:
    dataset: str = "mnist5k"
    root: Optional[str] = None
    download: bool = False
    train_split: str = "train"
    eval_split: str = "test"
    resolution: int = 14  # training resolution (unless train.progressive says otherwise)
    interpolation: str = "bilinear"
    batch_size: int = 64  # per process
    eval_batch_size: int = 250
    eval_limit: Optional[int] = None  # evaluate on this many held-out images (spread evenly); null: all
    num_workers: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class OptimConfig:
    lr: float = 3e-3
    ssm_lr: Optional[float] = 1e-3  # learning rate of SSM kernel parameters; null: same as lr
    weight_decay: float = 0.05
    betas: Tuple[float, float] = (0.9, 0.999)
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01  # the cosine ends at lr * min_lr_ratio
    clip_grad: Optional[float] = 1.0
    label_smoothing: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 10
    max_steps: Optional[int] = None  # stop (and end the schedule) after this many steps
    progressive: List[List[int]] = field(default_factory=list)  # [[epoch, resolution], ...]
    amp: str = "none"  # none | bf16 | fp16 (fp16 on CUDA only)
    ema: bool = False
    ema_decay: float = 0.999
    seed: int = 0
    eval_every: int = 1  # epochs between held-out evaluations at the training resolution; 0: never
    checkpoint_every: int = 100  # steps between mid-epoch checkpoints; 0: epoch ends only
    keep_checkpoints: int = 2
    output_dir: str = "runs/default"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: Optional[int] = None  # torch.set_num_threads on CPU
    progress: bool = True


@dataclass
class EvalConfig:
    resolutions: List[int] = field(default_factory=list)  # zero-shot test resolutions after training


@dataclass
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def list_configs() -> list[str]:
    """Names of the YAML files in the repository's ``configs/`` directory."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.is_dir() else []


def resolve_config_path(name: str | Path) -> Path:
    """A path to a YAML file, or the name of one in ``configs/`` (``mnist5k_s4nd_iso_micro``)."""
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (CONFIG_DIR / path, CONFIG_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    raise MissingFileError(f"config file not found: {name} (configs/ has: {', '.join(list_configs()) or 'nothing'})")


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Defaults <- YAML file at ``path`` <- ``overrides`` (``"train.epochs=3"``), validated.

    ``path`` may also name a file in ``configs/`` without its directory and suffix.
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
    """Checks OmegaConf's typing cannot express; raises ``ValueError`` naming the value."""
    if cfg.train.amp not in AMP_MODES:
        raise InvalidValueError(f"train.amp={cfg.train.amp!r} is not one of {', '.join(AMP_MODES)}")
    for key, value in (("train.epochs", cfg.train.epochs), ("data.batch_size", cfg.data.batch_size),
                       ("data.eval_batch_size", cfg.data.eval_batch_size), ("data.resolution", cfg.data.resolution)):
        check_positive_int(key, value)
    check_optional(check_positive_int, "data.eval_limit", cfg.data.eval_limit)
    check_optional(check_positive_int, "train.max_steps", cfg.train.max_steps)
    check_non_negative_int("train.eval_every", cfg.train.eval_every)
    check_non_negative_int("train.checkpoint_every", cfg.train.checkpoint_every)
    if not 0 < cfg.train.ema_decay < 1:
        raise InvalidValueError(f"train.ema_decay must be in (0, 1), got {cfg.train.ema_decay}")
    progressive_schedule(cfg)  # validates train.progressive


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
