"""Training, evaluation, checkpoints and feature extraction: one engine for every model kind."""
from .features import extract_features
from .config import ExperimentConfig, load_config
from .checkpoint import CheckpointManager, load_model_weights, read_model_metadata, save_model_file
from .evaluate import EvalResult, evaluate, evaluate_checkpoint, evaluate_resolutions, load_checkpoint_model
from .factory import check_resolution, create_classifier, list_s4vision_models
from .optim import WarmupCosine, create_optimizer, create_scheduler, param_groups
from .sampler import ResumableSampler
from .train import TrainResult, Trainer, train

__all__ = [
    "extract_features", "ExperimentConfig", "load_config",
    "CheckpointManager", "load_model_weights", "read_model_metadata", "save_model_file",
    "EvalResult", "evaluate", "evaluate_checkpoint", "evaluate_resolutions", "load_checkpoint_model",
    "check_resolution", "create_classifier", "list_s4vision_models",
    "WarmupCosine", "create_optimizer", "create_scheduler", "param_groups",
    "ResumableSampler", "TrainResult", "Trainer", "train",
]
