"""How the s4vision backbones are built: weight init, weight-decay exclusions, stochastic depth,
pretrained configs and the timm build helper (the layers they are made of live in
:mod:`s4vision.layers`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Type

import torch
from torch import nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import trunc_normal_
from timm.models import build_model_with_cfg
from timm.models._builder import resolve_pretrained_cfg

from ..kernels.ssm import ssm_parameter_names
from .zoo import verify_checkpoint

__all__ = [
    "init_weights_outside",
    "no_weight_decay_names",
    "build_backbone",
    "backbone_cfg",
    "S4ND_PAPER",
    "stochastic_depth_rates",
]


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

    These are the state-space kernel parameters (:func:`~s4vision.kernels.ssm_parameter_names`)
    plus, as timm does, every norm scale, bias and other 1-d parameter.
    """
    return ssm_parameter_names(model) | {name for name, param in model.named_parameters() if param.ndim <= 1}


def build_backbone(
    model_cls: Callable[..., nn.Module],
    variant: str,
    pretrained: bool = False,
    *,
    feature_cfg: Optional[dict] = None,
    size_arg: Optional[str] = "img_size",
    **kwargs: Any,
) -> nn.Module:
    """``timm.models.build_model_with_cfg`` with two additions.

    * The model's training resolution defaults to its pretrained config's ``input_size``: its
      ``(H, W)`` is passed as ``size_arg`` and, for a clip model (``(C, T, H, W)``), ``T`` as
      ``num_frames``. So ``pretrained_cfg_overlay=dict(input_size=...)`` or a tagged config
      builds the model for that resolution.
    * With ``pretrained=True`` and local weights (a ``file``, or timm's ``local-dir:`` folder),
      the file is checked first (:func:`~s4vision.models.zoo.verify_checkpoint`): a missing,
      damaged or (zoo files) altered checkpoint fails naming the file, instead of a bare load error.
    """
    cfg = resolve_pretrained_cfg(
        variant,
        pretrained_cfg=kwargs.get("pretrained_cfg"),
        pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"),
    )
    if size_arg and kwargs.get(size_arg) is None:
        kwargs[size_arg] = tuple(cfg.input_size[-2:])
        if len(cfg.input_size) == 4 and kwargs.get("num_frames") is None:
            kwargs["num_frames"] = int(cfg.input_size[1])
    if pretrained and not cfg.state_dict:
        weights = _local_weights(cfg)
        if weights is not None:
            verify_checkpoint(weights)
    clip_size = _clip_input_size(tuple(cfg.input_size), kwargs)
    if clip_size:  # timm's builder asserts a (C, H, W) input_size: build with a frame's, record the clip's
        kwargs["pretrained_cfg_overlay"] = dict(kwargs.get("pretrained_cfg_overlay") or {},
                                                input_size=(clip_size[0], *clip_size[2:]))
    model = build_model_with_cfg(model_cls, variant, pretrained, feature_cfg=feature_cfg or {}, **kwargs)
    if clip_size:
        for holder in (model, getattr(model, "model", None)):  # a features_only getter wraps the model
            if isinstance(getattr(holder, "pretrained_cfg", None), dict):
                holder.pretrained_cfg["input_size"] = clip_size
    return model


def _clip_input_size(input_size: Tuple[int, ...], kwargs: Dict[str, Any]) -> Optional[Tuple[int, ...]]:
    """``(C, T, H, W)`` for a clip model (a clip config, or ``ndim=3`` with ``num_frames`` on an
    image config: then ``T`` is ``num_frames``), ``None`` for an image or sequence model."""
    if len(input_size) == 4:
        return input_size
    if kwargs.get("ndim") == 3 and kwargs.get("num_frames"):
        return (input_size[0], int(kwargs["num_frames"]), *input_size[-2:])
    return None


# The weights file timm loads from a ``local-dir:`` folder, in timm's order of preference.
_LOCAL_DIR_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")


def _local_weights(cfg: Any) -> Optional[Path]:
    """The local weights file timm will read for ``cfg``, or ``None`` (a download, or nothing to check)."""
    if not cfg.file:
        return None
    if cfg.source != "local-dir":
        return Path(cfg.file)
    return next((Path(cfg.file) / name for name in _LOCAL_DIR_WEIGHTS if (Path(cfg.file) / name).exists()), None)


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
