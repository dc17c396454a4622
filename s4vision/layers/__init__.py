"""nn.Modules built on the kernels: channels-first like torch's convolutions."""
from .s4 import S4, check_channels_first
from .s4nd import S4ND, PointwiseConv
from .flexconv import FlexConv, GaussianMask
from .resolution import ReferenceGrid

__all__ = ["S4", "check_channels_first"]
__all__ += ["S4ND", "PointwiseConv", "FlexConv", "GaussianMask", "ReferenceGrid"]
