"""Pieces shared by the s4vision backbones: N-d norms and pointwise layers, weight init,
weight-decay exclusions, the training-resolution record and the timm build helper.

Everything here works for any number of spatial axes, so a 1D, 2D or 3D model is the same code
with a different ``ndim``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from torch import nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import trunc_normal_
from timm.models import build_model_with_cfg
from timm.models._builder import resolve_pretrained_cfg

from .zoo import verify_checkpoint

__all__ = [
    "to_ntuple",
    "conv_nd",
    "LayerNormNd",
    "PointwiseGLU",
    "ClassifierHeadNd",
    "init_weights_outside",
    "no_weight_decay_names",
    "TrainResolutionMixin",
    "build_backbone",
    "backbone_cfg",
    "S4ND_PAPER",
    "stochastic_depth_rates",
]

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def _check_ndim(ndim: int) -> int:
    if ndim not in _CONV:
        raise ValueError(f"ndim must be 1, 2 or 3, got {ndim!r}")
    return ndim


def to_ntuple(value: Union[int, Sequence[int]], n: int, name: str = "value") -> Tuple[int, ...]:
    """``value`` repeated ``n`` times if it is an int, else checked to have ``n`` entries."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a sequence of {n} ints, got {value!r}")
    if isinstance(value, int):
        return (value,) * n
    value = tuple(value)
    if len(value) != n or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{name} must be an int or a sequence of {n} ints, got {value!r}")
    return value


def conv_nd(ndim: int) -> Type[nn.Module]:
    """``nn.Conv1d``, ``nn.Conv2d`` or ``nn.Conv3d``."""
    return _CONV[_check_ndim(ndim)]


class LayerNormNd(nn.LayerNorm):
    """LayerNorm over the channels of a channels-first tensor ``(B, C, *S)``, any number of axes.

    Each position is normalised on its own, so the result does not depend on the input's size.
    The output is contiguous channels-first, the layout the S4ND and FlexConv layers are fastest on.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, **kwargs: Any) -> None:
        super().__init__(num_channels, eps=eps, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.movedim(1, -1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.movedim(-1, 1).contiguous()


class PointwiseGLU(nn.Module):
    """Pointwise (1x1) projection to ``2 * out_chs`` followed by a GLU over channels.

    ``(B, in_chs, *S) -> (B, out_chs, *S)``; the output projection S4ND uses after its pooling.
    """

    def __init__(self, in_chs: int, out_chs: int, ndim: int = 2, device=None, dtype=None) -> None:
        super().__init__()
        self.proj = conv_nd(ndim)(in_chs, 2 * out_chs, kernel_size=1, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(self.proj(x), dim=1)


_POOL_TYPES = ("avg", "max", "avgmax", "")


def global_pool_nd(x: torch.Tensor, pool_type: str) -> torch.Tensor:
    """Pool ``(B, C, *S)`` over all spatial axes to ``(B, C)``; ``pool_type=""`` returns ``x``."""
    if not pool_type:
        return x
    dims = tuple(range(2, x.ndim))
    if pool_type == "avg":
        return x.mean(dims)
    if pool_type == "max":
        return x.amax(dims)
    return 0.5 * (x.mean(dims) + x.amax(dims))


class ClassifierHeadNd(nn.Module):
    """Global pool over every spatial axis, optional norm, dropout, linear classifier.

    ``(B, C, *S) -> (B, num_classes)``. With ``pool_type=""`` nothing is pooled and the norm and
    classifier act on the channels of every position: ``(B, C, *S) -> (B, num_classes, *S)``.
    ``norm_layer`` is applied after pooling, as in ConvNeXt's head.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        pool_type: str = "avg",
        norm_layer: Optional[Callable[..., nn.Module]] = None,
        drop_rate: float = 0.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self._check_pool(pool_type)
        self.in_features = self.num_features = in_features
        self.pool_type = pool_type
        self.norm = norm_layer(in_features, device=device, dtype=dtype) if norm_layer else nn.Identity()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes, device=device, dtype=dtype) if num_classes > 0 else nn.Identity()

    @staticmethod
    def _check_pool(pool_type: str) -> None:
        if pool_type not in _POOL_TYPES:
            raise ValueError(f"global_pool must be one of {_POOL_TYPES}, got {pool_type!r}")

    def reset(self, num_classes: int, pool_type: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0``: none) and optionally the pooling."""
        if pool_type is not None:
            self._check_pool(pool_type)
            self.pool_type = pool_type
        p = next(self.parameters(), None)
        dd = dict(device=p.device, dtype=p.dtype) if p is not None else {}
        self.fc = nn.Linear(self.in_features, num_classes, **dd) if num_classes > 0 else nn.Identity()

    def _channelwise(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2 or isinstance(layer, nn.Identity):
            return layer(x)
        return layer(x.movedim(1, -1)).movedim(-1, 1)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = global_pool_nd(x, self.pool_type)
        x = self.norm(x)  # a channels-first norm (LayerNormNd): fine on (B, C) and (B, C, *S)
        x = self.drop(x)
        return x if pre_logits else self._channelwise(self.fc, x)


def init_weights_outside(
    module: nn.Module,
    skip: Tuple[Type[nn.Module], ...],
    head_init_scale: float = 1.0,
    std: float = 0.02,
    prefix: str = "",
) -> None:
    """timm's init (truncated normal ``std`` weights, zero biases) for every conv and linear
    layer of ``module`` except those inside a module of a ``skip`` type (S4ND, FlexConv, ...),
    whose layers keep their own initialisation. Layers under ``head`` are scaled by
    ``head_init_scale``."""
    for name, child in module.named_children():
        full = f"{prefix}.{name}" if prefix else name
        if isinstance(child, skip):
            continue
        if isinstance(child, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            trunc_normal_(child.weight, std=std)
            if child.bias is not None:
                nn.init.zeros_(child.bias)
            if full.startswith("head.") and head_init_scale != 1.0:
                with torch.no_grad():
                    child.weight.mul_(head_init_scale)
        init_weights_outside(child, skip, head_init_scale, std, full)


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Full names of the parameters that must not be weight-decayed.

    These are the state-space kernel parameters (``log_dt``, ``A``, ``B``, ``C``, ``P`` of
    every SSM kernel generator, or any parameter carrying an ``_optim`` hint with
    ``weight_decay=0``), plus, as timm does, every norm scale, bias and other 1-d parameter.
    """
    from ..kernels.ssm import SSMKernelBase

    ssm = set()
    for prefix, module in model.named_modules():
        if isinstance(module, SSMKernelBase):
            ssm.update(f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters(recurse=False))
    names = set()
    for name, param in model.named_parameters():
        hint = getattr(param, "_optim", None)
        if name in ssm or param.ndim <= 1 or (isinstance(hint, dict) and hint.get("weight_decay", 1) == 0):
            names.add(name)
    return names


class TrainResolutionMixin:
    """Records the input size a backbone is trained at in a buffer ``train_size``.

    The buffer travels with ``state_dict`` (so a checkpoint says what resolution it was trained
    at); ``train_resolution`` reads it as a tuple. Call :meth:`_init_train_resolution` in
    ``__init__``.
    """

    def _init_train_resolution(self, size: Sequence[int], device=None) -> None:
        self.register_buffer("train_size", torch.tensor(list(size), dtype=torch.long, device=device))
        self._built_size = tuple(int(s) for s in size)

    @property
    def train_resolution(self) -> Tuple[int, ...]:
        """The input size ``(H, W)`` (or ``(T, H, W)``, ``(L,)``) the model is trained at.

        Read from the ``train_size`` buffer, so a loaded checkpoint's value wins (a model on the
        meta device reports the size it was built for)."""
        if self.train_size.is_meta:
            return self._built_size
        return tuple(int(s) for s in self.train_size.tolist())


def build_backbone(
    model_cls: Callable[..., nn.Module],
    variant: str,
    pretrained: bool = False,
    *,
    feature_cfg: Optional[dict] = None,
    size_arg: str = "img_size",
    **kwargs: Any,
) -> nn.Module:
    """``timm.models.build_model_with_cfg`` with two additions.

    * The model's training resolution defaults to its pretrained config's ``input_size`` (passed
      as ``size_arg``), so ``pretrained_cfg_overlay=dict(input_size=...)`` or a tagged config
      builds the model for that resolution.
    * With ``pretrained=True`` and a local ``file``, the file is checked against the model-zoo
      manifest first (:func:`~s4vision.models.zoo.verify_checkpoint`): a missing or corrupted
      checkpoint fails with its path and expected sha256 instead of a bare load error.
    """
    cfg = resolve_pretrained_cfg(
        variant,
        pretrained_cfg=kwargs.get("pretrained_cfg"),
        pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"),
    )
    if size_arg and kwargs.get(size_arg) is None:
        kwargs[size_arg] = tuple(cfg.input_size[1:])
    if pretrained and cfg.file and not cfg.state_dict:
        verify_checkpoint(cfg.file)
    return build_model_with_cfg(model_cls, variant, pretrained, feature_cfg=feature_cfg or {}, **kwargs)


_CFG_DEFAULTS: Dict[str, Any] = {
    "num_classes": 1000, "input_size": (3, 224, 224), "interpolation": "bicubic",
    "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
    "classifier": "head.fc", "license": "apache-2.0",
}

# Pretrained-config metadata of the S4ND families (ConvNeXt-S4ND and the isotropic models).
S4ND_PAPER: Dict[str, Any] = {
    "paper_name": "S4ND: Modeling Images and Videos as Multidimensional Signals Using State Spaces",
    "origin_url": "https://github.com/state-spaces/s4",
}


def backbone_cfg(*parts: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
    """A timm pretrained-config dict: the entries every s4vision backbone shares (ImageNet
    classes, size and normalisation, ``head.fc``, license), updated by ``parts`` then ``kwargs``."""
    cfg = dict(_CFG_DEFAULTS)
    for part in parts:
        cfg.update(part)
    cfg.update(kwargs)
    return cfg


def stochastic_depth_rates(drop_path_rate: float, depths: Sequence[int]) -> list[list[float]]:
    """Stochastic-depth rates rising linearly from 0 to ``drop_path_rate`` over all blocks,
    split into one list per stage of ``depths`` blocks."""
    total = sum(depths)
    rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    out, start = [], 0
    for d in depths:
        out.append(rates[start:start + d])
        start += d
    return out
