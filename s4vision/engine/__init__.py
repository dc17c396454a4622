"""Training, evaluation, prediction, checkpoints and feature extraction: one engine for every
model kind (images, cached frame features, decoded clips)."""
from .features import FrameEncoder, extract_features
from .config import ExperimentConfig, load_config
from .checkpoint import CheckpointManager, load_model_weights, read_model_metadata, save_model_file
from .evaluate import EvalResult, evaluate, evaluate_checkpoint, evaluate_resolutions, load_checkpoint_model
from .factory import check_resolution, create_classifier, list_s4vision_models
from .optim import WarmupCosine, create_optimizer, create_scheduler, param_groups
from .sampler import ResumableSampler
from .train import TrainResult, Trainer, train
from .tasks import ClipSpec, Task, create_task
from .video_eval import evaluate_video_checkpoint, video_metrics
from .predict import Prediction, Predictor, predict

__all__ = [
    "extract_features", "FrameEncoder", "ExperimentConfig", "load_config",
    "CheckpointManager", "load_model_weights", "read_model_metadata", "save_model_file",
    "EvalResult", "evaluate", "evaluate_checkpoint", "evaluate_resolutions", "load_checkpoint_model",
    "check_resolution", "create_classifier", "list_s4vision_models",
    "WarmupCosine", "create_optimizer", "create_scheduler", "param_groups",
    "ResumableSampler", "TrainResult", "Trainer", "train",
    "ClipSpec", "Task", "create_task", "evaluate_video_checkpoint", "video_metrics",
    "Prediction", "Predictor", "predict",
]
