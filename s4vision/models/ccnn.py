"""CCNN: the continuous convolutional neural network, for sequences, images and video.

Paper: `Modelling Long Range Dependencies in ND: From Task-Specific to a General Purpose CNN`
- https://arxiv.org/abs/2301.10540 (Knigge, Romero et al., ICLR 2023)

A separable FlexConv stem, then ``depth`` residual blocks
``x + GELU(pointwise(dropout(GELU(SepFlexConv(norm(x))))))``, a final norm, global mean pooling
and a linear classifier. Every FlexConv kernel is a MAGNet over relative positions, times a
learnable Gaussian mask. The named configurations ``ccnn_{blocks}_{hidden}`` are the paper's
(``ccnn_4_140`` and ``ccnn_6_380`` on CIFAR-10), with its mask: kernels cropped where the mask
is below 0.1, starting small and growing as the mask learns. ``ndim`` selects 1D
(``(B, C, L)``), 2D (``(B, C, H, W)``) or 3D (``(B, C, T, H, W)``) data with the same code.

The official implementation fixes the kernel grid at the training length, so it cannot change
resolution at inference; here the kernels are sampled at the offsets between samples of whatever
input arrives (in units of its extent), so a model trained at one resolution runs at another.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from timm.layers import DropPath
from timm.models import generate_default_cfgs, register_model

from .._checks import check_choice, check_ndim, check_positive_int, check_sizes
from ..data.constants import CIFAR10_MEAN, CIFAR10_STD, MNIST_MEAN, MNIST_STD
from ..layers import ClassifierHeadNd, FlexConv, LayerNormNd, PointwiseConv
from ..layers.flexconv import NEGLIGIBLE_MASK
from ..sampling import GridView, ReferenceGrid
from .zoo import zoo_file
from ._builder import backbone_cfg, build_backbone, init_weights_outside, stochastic_depth_rates
from ._interface import IsotropicBackboneMixin
from ..errors import InvalidValueError

__all__ = ["CCNN", "CCNNBlock"]

# The paper's FlexConv mask (``mask.init_value=0.075``, ``mask.threshold=0.1`` and dynamic
# cropping in the published commands; one of them, CIFAR-10 CCNN-4,140, says 0.75): sigma 0.075
# in its kernel coordinates, which span [-1, 1] over the image (half the image per unit), is
# 0.0375 in ours (one unit per image); taps where the mask is below 0.1 are cropped. The kernels
# start small (~8% of the image each side) and learn their extent, so inference costs FFTs of
# ~1.1x the input, not ~2x.
PAPER_MASK = dict(kernel_mask_sigma=0.0375, kernel_mask_threshold=0.1)

_BATCH_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _norm_layer(norm: str, ndim: int, eps: float, device=None, dtype=None) -> Callable[..., nn.Module]:
    check_choice("norm_layer", norm, ("batchnorm", "layernorm"))
    layer = _BATCH_NORM[ndim] if norm == "batchnorm" else LayerNormNd
    return partial(layer, eps=eps, device=device, dtype=dtype)


class CCNNBlock(nn.Module):
    """CCNN residual block on ``(B, dim, *S)``:
    ``x + drop_path(GELU(pointwise(dropout(GELU(SepFlexConv(norm(x)))))))``."""

    def __init__(
        self,
        dim: int,
        conv_layer: Callable[..., nn.Module],
        norm_layer: Callable[..., nn.Module],
        grid: GridView,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.norm = norm_layer(dim)
        self.conv = conv_layer(dim, l_max=grid)
        self.act1 = nn.GELU()
        self.drop = nn.Dropout(proj_drop)
        self.proj = PointwiseConv(dim, dim, device=device, dtype=dtype)
        self.act2 = nn.GELU()
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            y = self.drop(self.act1(self.conv(self.norm(x))))
            return x + self.drop_path(self.act2(self.proj(y)))
        # Inference: the activations and the residual sum overwrite the new tensors they act on.
        # A full-resolution activation is large (56 MB for 2 x 140 x 224 x 224), and a new one
        # costs more in page faults than the GELU itself.
        y = self.drop(torch.ops.aten.gelu_(self.conv(self.norm(x))))
        return self.drop_path(torch.ops.aten.gelu_(self.proj(y))).add_(x)


class CCNNStem(nn.Module):
    """Separable FlexConv ``in_chans -> dim`` over the whole input, then norm and GELU."""

    def __init__(self, in_chans: int, dim: int, conv_layer, norm_layer, grid: GridView) -> None:
        super().__init__()
        self.conv = conv_layer(in_chans, out_dim=dim, l_max=grid)
        self.norm = norm_layer(dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class CCNN(IsotropicBackboneMixin, nn.Module):
    """Continuous CNN for 1D, 2D or 3D inputs (no downsampling: every block sees the full grid).

    Args:
        in_chans, num_classes, global_pool: as in timm (``global_pool``: ``"avg"``, ``"max"``,
            ``"avgmax"`` or ``""``).
        ndim: 1 (sequences ``(B, C, L)``), 2 (images) or 3 (clips ``(B, C, T, H, W)``).
        img_size: training image size ``(H, W)`` (2D and 3D); ``num_frames``: training clip length
            (3D); ``seq_len``: training sequence length (1D). They set the FlexConv reference grids
            and the kernels' initial bandwidth; any size is accepted at run time.
        depth, hidden: number of blocks and channels (the ``4`` and ``140`` of ``ccnn_4_140``).
        kernel_net, kernel_hidden, kernel_depth: the FlexConv kernel network (MAGNet by default).
        kernel_mask: multiply the kernels by FlexConv's learnable Gaussian mask;
            ``kernel_mask_sigma``: its initial width and ``kernel_mask_threshold``: where it crops
            the kernel (both as in :class:`~s4vision.layers.FlexConv`). The defaults keep every
            tap (the kernel spans the whole input); the named paper configurations use the
            paper's small initial mask and its cropping threshold (see ``PAPER_MASK``).
        norm_layer: ``"batchnorm"`` (the paper's) or ``"layernorm"`` (channels at each position).
        drop_rate, proj_drop_rate, drop_path_rate: head dropout, block dropout, stochastic depth.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 10,
        global_pool: str = "avg",
        ndim: int = 2,
        img_size: Optional[Union[int, Sequence[int]]] = None,
        num_frames: Optional[int] = None,
        seq_len: Optional[int] = None,
        depth: int = 4,
        hidden: int = 140,
        kernel_net: str = "magnet",
        kernel_hidden: int = 32,
        kernel_depth: int = 3,
        kernel_mask: bool = True,
        kernel_mask_sigma: float = 0.25,
        kernel_mask_threshold: float = NEGLIGIBLE_MASK,
        norm_layer: str = "batchnorm",
        norm_eps: float = 1e-5,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.ndim = check_ndim(ndim)
        check_positive_int("depth", depth)
        check_positive_int("in_chans", in_chans)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grid = ReferenceGrid(ndim, self._grid(ndim, img_size, num_frames, seq_len), device=device)

        conv_layer = partial(
            FlexConv, ndim=ndim, kernel_net=kernel_net, out_proj="linear", kernel_hidden=kernel_hidden,
            kernel_depth=kernel_depth, mask=kernel_mask, mask_sigma=kernel_mask_sigma,
            mask_threshold=kernel_mask_threshold, **dd,
        )
        norm = _norm_layer(norm_layer, ndim, norm_eps, **dd)
        grid = self.grid.view(1)
        self.stem = CCNNStem(in_chans, hidden, conv_layer, norm, grid)
        (rates,) = stochastic_depth_rates(drop_path_rate, [depth])
        self.blocks = nn.Sequential(*[
            CCNNBlock(hidden, conv_layer, norm, grid, proj_drop=proj_drop_rate, drop_path=rates[i], **dd)
            for i in range(depth)
        ])
        self.norm = norm(hidden)
        self.num_features = self.head_hidden_size = hidden
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=hidden, reduction=1) for i in range(depth)]
        self.head = ClassifierHeadNd(hidden, num_classes, global_pool, drop_rate=drop_rate, **dd)
        self.grad_checkpointing = False
        init_weights_outside(self, skip=(FlexConv,))

    @staticmethod
    def _grid(ndim: int, img_size, num_frames, seq_len) -> Tuple[int, ...]:
        if ndim == 1:
            if img_size is not None or num_frames is not None:
                raise InvalidValueError("a 1D CCNN takes seq_len, not img_size / num_frames")
            if seq_len is None:
                raise InvalidValueError("a 1D CCNN needs seq_len (the training sequence length)")
            return (int(seq_len),)
        if seq_len is not None:
            raise InvalidValueError(f"seq_len is only for ndim=1, got seq_len={seq_len!r} with ndim={ndim}")
        if img_size is None:
            raise InvalidValueError(f"a {ndim}D CCNN needs img_size (the training image size)")
        spatial = check_sizes("img_size", img_size, 2)
        if ndim == 2:
            if num_frames is not None:
                raise InvalidValueError(f"num_frames is only for ndim=3, got num_frames={num_frames!r} with ndim=2")
            return spatial
        if ndim == 3:
            if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
                raise InvalidValueError(f"a 3D CCNN needs num_frames, the training clip length, got {num_frames!r}")
            return (int(num_frames),) + spatial
        raise InvalidValueError(f"ndim must be 1, 2 or 3, got {ndim!r}")


# -- configs and entrypoints -------------------------------------------------------------------


def _create_ccnn(variant: str, pretrained: bool = False, **kwargs: Any) -> CCNN:
    ndim = kwargs.get("ndim", 2)
    if ndim == 1:  # a sequence model: its length is seq_len, not an image size
        size_arg = None
    else:
        size_arg = "img_size"
    return build_backbone(
        CCNN, variant, pretrained, size_arg=size_arg,
        feature_cfg=dict(out_indices=3, feature_cls="getter"),
        **kwargs,
    )


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    family = dict(
        num_classes=10, input_size=(3, 32, 32), pool_size=(32, 32), crop_pct=1.0, interpolation="bilinear",
        mean=CIFAR10_MEAN, std=CIFAR10_STD, first_conv="stem.conv.out_proj",
        paper_ids=("arXiv:2301.10540",),
        paper_name="Modelling Long Range Dependencies in ND: From Task-Specific to a General Purpose CNN",
        origin_url="https://github.com/david-knigge/ccnn",
    )
    return backbone_cfg(family, kwargs)


default_cfgs = generate_default_cfgs({
    "ccnn_4_140": _cfg(),
    "ccnn_6_380": _cfg(),
    "ccnn_micro.mnist5k": _cfg(
        input_size=(1, 14, 14), pool_size=(14, 14), mean=MNIST_MEAN, std=MNIST_STD,
        description="ccnn_micro: tiny CCNN for 1-channel digits, trained in minutes on a CPU",
        file=zoo_file("ccnn_micro.mnist5k.safetensors"),
        notes=("trained by s4vision on 4,000 MNIST digits at 14x14 (model zoo, see model_zoo/manifest.yaml)",),
    ),
})


@register_model
def ccnn_4_140(pretrained: bool = False, **kwargs: Any) -> CCNN:
    """CCNN with 4 blocks of 140 channels, MAGNet kernels of width 32 (~0.2M parameters on CIFAR-10),
    the paper's cropped Gaussian mask (``PAPER_MASK``)."""
    model_args = dict(depth=4, hidden=140, kernel_hidden=32, **PAPER_MASK)
    return _create_ccnn("ccnn_4_140", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def ccnn_6_380(pretrained: bool = False, **kwargs: Any) -> CCNN:
    """CCNN with 6 blocks of 380 channels, MAGNet kernels of width 64 (~2M parameters on CIFAR-10),
    the paper's cropped Gaussian mask (``PAPER_MASK``)."""
    model_args = dict(depth=6, hidden=380, kernel_hidden=64, **PAPER_MASK)
    return _create_ccnn("ccnn_6_380", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def ccnn_micro(pretrained: bool = False, **kwargs: Any) -> CCNN:
    """A tiny CCNN (4 blocks of 48 channels, MAGNet width 16) for 1-channel 14x14 digits."""
    model_args = dict(depth=4, hidden=48, kernel_hidden=16)
    return _create_ccnn("ccnn_micro", pretrained=pretrained, **dict(model_args, **kwargs))
