"""s4vision: state-space and continuous-kernel layers and timm backbones for images and video."""
from . import errors, sampling, ops, kernels, layers
from . import models  # registers the timm backbones
from .errors import InvalidTypeError, InvalidValueError, MissingFileError, S4VisionError, TrainingDivergedError

__version__ = "0.1.0"
__all__ = [
    "errors", "sampling", "ops", "kernels", "layers", "models", "__version__",
    "S4VisionError", "InvalidValueError", "InvalidTypeError", "MissingFileError", "TrainingDivergedError",
]
