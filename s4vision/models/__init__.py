"""timm backbones. Importing this package registers them with timm (``timm.create_model``)."""
from . import zoo
from .ccnn import CCNN, CCNNBlock
from .convnext_s4nd import S4NDConvNeXt, S4NDConvNeXtBlock, S4NDConvNeXtStage, inflate_convnext_2d_to_3d
from .s4nd_isotropic import S4NDIsoBlock, S4NDIsotropic
from .vis4mer import VideoClassifier, ViS4mer
from . import heads
from .heads import create_temporal_head, list_temporal_heads, register_temporal_head
from .temporal_baselines import MeanPoolHead, TransformerHead

__all__ = [
    "zoo",
    "CCNN",
    "CCNNBlock",
    "S4NDConvNeXt",
    "S4NDConvNeXtBlock",
    "S4NDConvNeXtStage",
    "inflate_convnext_2d_to_3d",
    "S4NDIsotropic",
    "S4NDIsoBlock",
    "ViS4mer",
    "VideoClassifier",
    "heads",
    "create_temporal_head",
    "list_temporal_heads",
    "register_temporal_head",
    "MeanPoolHead",
    "TransformerHead",
]
