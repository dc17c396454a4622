"""s4vision: state-space and continuous-kernel layers and timm backbones for images and video."""
from . import ops, kernels, layers
from . import models  # registers the timm backbones

__version__ = "0.1.0"
__all__ = ["ops", "kernels", "layers", "models", "__version__"]
