"""The timm model interface shared by the s4vision backbones.

:class:`TimmBackboneMixin` holds what every backbone does the same way (classifier access, head,
weight-decay exclusions, ``forward_intermediates``); a model says where its pieces are through
a few hooks. :class:`IsotropicBackboneMixin` completes it for a stem, one ``nn.Sequential`` of
``blocks`` at a single resolution and a final ``norm`` (CCNN, the isotropic S4ND models).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from timm.models import checkpoint_seq, register_notrace_module
from timm.models._features import feature_take_indices

from .._checks import check_channels_first
from ..layers import S4ND, AntiAliasBlur, ClassifierHeadNd, FlexConv, LayerNormNd, PointwiseConv
from ._builder import no_weight_decay_names
from ..errors import InvalidValueError

__all__ = ["TimmBackboneMixin", "IsotropicBackboneMixin", "check_output_fmt", "FX_LEAF_MODULES"]

Indices = Optional[Union[int, List[int]]]

# Layers whose forward depends on the input's sizes (kernels are generated for them, the rank
# picks a code path): torch.fx keeps them whole, as timm's own dynamic modules, under timm's
# tracer settings (``features_only=True, feature_cls="fx"``; ``tracer_kwargs`` for torchvision's
# ``create_feature_extractor``: ``leaf_modules=timm.models.get_notrace_modules()``).
FX_LEAF_MODULES = (S4ND, FlexConv, LayerNormNd, PointwiseConv, AntiAliasBlur, ClassifierHeadNd)
for _module in FX_LEAF_MODULES:
    register_notrace_module(_module)


def check_output_fmt(output_fmt: str, allowed: Sequence[str]) -> None:
    """Raise ``ValueError`` unless ``output_fmt`` is one of ``allowed``."""
    if output_fmt in allowed:
        return
    if tuple(allowed) == ("NCHW",):
        valid = "'NCHW' (channels-first)"
    else:
        valid = " or ".join(repr(f) for f in allowed)
    raise InvalidValueError(f"output_fmt must be {valid}, got {output_fmt!r}")


class TimmBackboneMixin:
    """timm methods common to every s4vision backbone (mix in before ``nn.Module``).

    The model provides ``in_chans``, ``ndim`` (spatial axes of its input), ``num_classes``,
    ``grid`` (a :class:`~s4vision.sampling.ReferenceGrid` holding the training resolution, the
    one its layers' grids are views of), ``stem``, ``head`` (a
    :class:`~s4vision.layers.ClassifierHeadNd`) and
    ``forward_features``, and implements the hooks :meth:`_trunk` (the ``nn.Sequential`` whose
    outputs are the intermediates), :meth:`_intermediate` and :meth:`_final_norm`.
    ``output_fmts`` lists the formats ``forward_intermediates`` accepts.
    """

    output_fmts: Tuple[str, ...] = ("NCHW",)

    # -- hooks ---------------------------------------------------------------------------------

    def _trunk(self) -> nn.Sequential:
        raise NotImplementedError

    def _intermediate(self, index: int, x: torch.Tensor, norm: bool, output_fmt: str) -> torch.Tensor:
        """The intermediate reported for the output ``x`` of trunk layer ``index``."""
        raise NotImplementedError

    def _final_norm(self, x: torch.Tensor, complete: bool) -> torch.Tensor:
        """The final features from the last trunk output run (``complete``: the trunk's last)."""
        raise NotImplementedError

    def _prune(self, max_index: int, prune_norm: bool, prune_head: bool) -> None:
        """Drop the trunk layers after ``max_index`` (and the norm / head, as asked)."""
        raise NotImplementedError

    # -- timm interface ------------------------------------------------------------------------

    @property
    def train_resolution(self) -> Tuple[int, ...]:
        """The input size ``(H, W)`` (or ``(T, H, W)``, ``(L,)``) the model is trained at: its
        reference grid, saved in checkpoints as ``grid.size``."""
        return self.grid.sizes

    def _check_input(self, x: torch.Tensor) -> None:
        check_channels_first(x, self.in_chans, self.ndim, "input")

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return no_weight_decay_names(self)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new classifier for ``num_classes`` (0: none), on the model's device and dtype and in
        its training mode; ``global_pool`` (``None``: keep the current pooling)."""
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)
        reference = next(self.parameters())  # the head alone may hold no parameter to copy them from
        self.head.fc.to(device=reference.device, dtype=reference.dtype).train(self.training)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Indices = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Outputs of the blocks (isotropic models) or stages (ConvNeXt) for ``x (B, in_chans, *S)``.

        Intermediates are channels-first ``(B, C_i, *S_i)`` for every ``ndim``; ``output_fmt="NLC"``
        (isotropic S4ND only) gives ``(B, prod(S_i), C_i)``.

        Args:
            indices: last ``n`` layers if an int, these layers if a list, all if ``None``.
            norm: apply the final norm to the intermediates (ConvNeXt: ``norm_pre``, an identity,
                to the last stage's output only).
            stop_early: stop after the last requested layer.
            output_fmt: one of ``output_fmts``.
            intermediates_only: return only the list of intermediates.
        """
        check_output_fmt(output_fmt, self.output_fmts)
        self._check_input(x)
        trunk = self._trunk()
        take_indices, max_index = feature_take_indices(len(trunk), indices)
        layers = trunk if torch.jit.is_scripting() or not stop_early else trunk[: max_index + 1]
        x = self.stem(x)
        intermediates = []
        for i, layer in enumerate(layers):
            x = layer(x)
            if i in take_indices:
                intermediates.append(self._intermediate(i, x, norm, output_fmt))
        if intermediates_only:
            return intermediates
        return self._final_norm(x, complete=len(layers) == len(trunk)), intermediates

    def prune_intermediate_layers(
        self,
        indices: Union[int, List[int]] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> List[int]:
        """Drop the layers after the last of ``indices`` (and the norm / head); returns the kept indices."""
        take_indices, max_index = feature_take_indices(len(self._trunk()), indices)
        self._prune(max_index, prune_norm, prune_head)
        return take_indices

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class IsotropicBackboneMixin(TimmBackboneMixin):
    """The timm interface of a backbone ``stem -> blocks -> norm -> head`` at one resolution.

    The model also sets ``grad_checkpointing``; ``blocks`` is an ``nn.Sequential``.
    """

    def _trunk(self) -> nn.Sequential:
        return self.blocks

    def _intermediate(self, index: int, x: torch.Tensor, norm: bool, output_fmt: str) -> torch.Tensor:
        y = self.norm(x) if norm else x
        return y.flatten(2).transpose(1, 2) if output_fmt == "NLC" else y

    def _final_norm(self, x: torch.Tensor, complete: bool) -> torch.Tensor:
        return self.norm(x)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r"^stem", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def _prune(self, max_index: int, prune_norm: bool, prune_head: bool) -> None:
        self.blocks = self.blocks[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, *S) -> (B, num_features, *S')`` (``S' = S`` unless the stem patchifies)."""
        self._check_input(x)
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)
