"""Creating models by name through timm, with errors that list the valid choices."""
from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from .._checks import check_positive_int
from ..errors import InvalidTypeError, InvalidValueError

__all__ = ["is_s4vision_model", "list_s4vision_models", "create_classifier", "count_parameters", "min_resolution", "check_resolution"]


def _register_models() -> None:
    # Importing the package registers its timm entrypoints.
    import s4vision.models  # noqa: F401


def is_s4vision_model(name: str) -> bool:
    """Whether ``name`` (optionally ``name.tag``) is a model registered by s4vision."""
    _register_models()
    arch = name.split(".")[0]
    return timm.is_model(arch) and timm.models.model_entrypoint(arch).__module__.startswith("s4vision.")


def list_s4vision_models(pretrained: bool = False) -> list[str]:
    """Names of the timm models registered by s4vision (with ``pretrained=True``: the
    ``model.tag`` names that have weights)."""
    _register_models()
    names = [n for n in timm.list_models() if timm.models.model_entrypoint(n).__module__.startswith("s4vision.")]
    if not pretrained:
        return names
    ours = set(names)
    return [n for n in timm.list_pretrained() if n.split(".")[0] in ours]


def create_classifier(name: str, *, in_chans: int | None = None, num_classes: int | None = None,
                      pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, ...)`` for any timm or s4vision model name.

    ``in_chans`` / ``num_classes`` are passed only when given. Unknown names raise
    ``ValueError`` listing the s4vision models.
    """
    _register_models()
    arch = name.split(".")[0]
    if not timm.is_model(arch):
        raise InvalidValueError(f"unknown model {name!r}; s4vision models: {', '.join(list_s4vision_models())} "
                                "(or any timm model name)")
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as err:  # an unknown constructor argument
        raise InvalidTypeError(f"cannot create {name!r} with arguments {sorted(kwargs)}: {err}") from None


def count_parameters(name: str, **kwargs: Any) -> int:
    """Number of parameters of model ``name`` built with ``kwargs``.

    The model is built on the ``meta`` device (no memory, no compute) when its constructor
    allows, and on the CPU otherwise.
    """
    try:
        with torch.device("meta"):
            model = create_classifier(name, **kwargs)
    except (NotImplementedError, RuntimeError):
        model = create_classifier(name, **kwargs)
    return sum(p.numel() for p in model.parameters())


def min_resolution(model: nn.Module) -> int | None:
    """Smallest input side the model supports, from its ``pretrained_cfg['min_input_size']``."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("min_input_size")
    return int(min(size[1:])) if size else None


def check_resolution(model: nn.Module, resolution: int, name: str | None = None) -> None:
    """Raise ``ValueError`` when ``resolution`` is below what ``model`` supports."""
    check_positive_int("resolution", resolution)
    minimum = min_resolution(model)
    if minimum is not None and resolution < minimum:
        label = name or getattr(model, "pretrained_cfg", {}).get("architecture") or type(model).__name__
        raise InvalidValueError(f"resolution {resolution} is below the minimum {minimum} of model {label!r}")
