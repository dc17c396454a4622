"""Isotropic S4ND backbones: ViT-S4ND and the small MNIST models.

Papers:
* `S4ND: Modeling Images and Videos as Multidimensional Signals Using State Spaces`
  - https://arxiv.org/abs/2210.06583
* `An Image is Worth 16x16 Words` - https://arxiv.org/abs/2010.11929 (the ViT widths and depths)

An isotropic model keeps one grid size and width from its stem to its head: a patchify (or, for
the ``micro`` models, pointwise) stem, ``depth`` pre-norm residual blocks whose token mixer is a
2D S4ND layer over the grid of patches, a final channel norm, global average pooling and a linear
classifier. There is no attention, class token or position embedding: S4ND's kernels carry the
positional information, which is what lets the model run at other resolutions. Tensors stay
channels-first ``(B, C, H, W)`` throughout.

``s4nd_vit_*_patch16`` follow the S4ND paper's ViT-S4ND (attention replaced by S4ND with a GLU
output and a rank-2 kernel, followed by the ViT MLP).

``s4nd_iso_micro`` is the paper's isotropic S4ND model of its resolution-change experiments
shrunk for 1-channel 14x14 digits, so that it can be evaluated zero-shot at 7 to 56 pixels. Every
part is defined in units of the image rather than of pixels: a pointwise stem (no patchify), S4ND
mixers with the paper's step range (``dt`` 0.1-1) and a band limit (``bandlimit=1.0``: no mode
above the reference grid's Nyquist frequency; 0.4 scores better on the validation split at a
10-epoch budget, see docs/benchmarks.md), LayerNorms
over channels, a global mean pool; nothing depends on position. ``conv2d_iso_micro`` is the same
network with a 5x5 depthwise convolution in place of each S4ND kernel (the paper's Conv2D
baseline).

A digit at 28x28 is sharper than any antialiased 14x14 one, and a model trained only on the
latter reads the sharpness as a feature: the zoo checkpoints are trained with sharpness
augmentation (``configs/mnist5k_s4nd_iso_micro.yaml``) and keep their accuracy from 14 to 56
pixels. ``input_blur`` offers the architectural alternative, an anti-aliasing input filter one
training pixel wide at every resolution (measured in docs/benchmarks.md; off by default).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Dict, Optional, Sequence, Union

import torch
from torch import nn
from timm.layers import DropPath
from timm.models import generate_default_cfgs, register_model

from .._checks import check_choice, check_positive_int, check_sizes
from ..data.constants import MNIST_MEAN, MNIST_STD
from ..layers import S4ND, AntiAliasBlur, ClassifierHeadNd, DepthwiseConvMixer, LayerNormNd, PointwiseMlp
from ..sampling import GridView, ReferenceGrid
from .zoo import zoo_file
from ._builder import S4ND_PAPER, backbone_cfg, build_backbone, init_weights_outside, stochastic_depth_rates
from ._interface import IsotropicBackboneMixin

__all__ = ["S4NDIsotropic", "S4NDIsoBlock"]


class S4NDIsoBlock(nn.Module):
    """Pre-norm residual block: ``x + mixer(norm1(x))`` then, if ``mlp_ratio > 0``, ``x + mlp(norm2(x))``.

    ``(B, C, H, W) -> (B, C, H, W)``; both norms normalise channels at each position.
    """

    def __init__(
        self,
        dim: int,
        mixer_layer: Callable[..., nn.Module],
        grid: GridView,
        mlp_ratio: float = 4.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.norm1 = LayerNormNd(dim, eps=norm_eps, **dd)
        self.mixer = mixer_layer(dim, l_max=grid)
        self.drop1 = nn.Dropout(proj_drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        if mlp_ratio > 0:
            self.norm2 = LayerNormNd(dim, eps=norm_eps, **dd)
            self.mlp = PointwiseMlp(dim, int(dim * mlp_ratio), dropout=proj_drop, **dd)
            self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        else:
            self.norm2 = self.mlp = self.drop_path2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.drop1(self.mixer(self.norm1(x))))
        if self.mlp is not None:
            x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x


class PatchStem(nn.Module):
    """Optional anti-aliasing blur, non-overlapping ``patch_size`` convolution (pointwise when
    ``patch_size=1``), optional norm."""

    def __init__(self, in_chans: int, dim: int, patch_size: Sequence[int], norm: bool, norm_eps: float,
                 blur: float, grid: GridView, device=None, dtype=None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.blur = AntiAliasBlur(blur, grid) if blur > 0 else nn.Identity()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size, **dd)
        self.norm = LayerNormNd(dim, eps=norm_eps, **dd) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(self.blur(x)))


class S4NDIsotropic(IsotropicBackboneMixin, nn.Module):
    """Isotropic (single-resolution) backbone with S4ND token mixers, for images ``(B, C, H, W)``.

    Args:
        in_chans, num_classes, global_pool: as in timm (``global_pool``: ``"avg"``, ``"max"``,
            ``"avgmax"`` or ``""``).
        img_size: training image size (int or ``(H, W)``): sets the S4ND reference grid.
        patch_size: stem stride; 1 makes the stem pointwise (fully resolution-agnostic).
        embed_dim, depth: width and number of blocks.
        mlp_ratio: hidden width of each block's MLP relative to ``embed_dim``; 0: no MLP.
        mixer: ``"s4nd"`` or ``"conv"`` (a ``conv_kernel_size`` depthwise convolution baseline).
        d_state, kernel, rank, out_proj: the S4ND mixer (``out_proj``: ``"glu"`` or
            ``"linear"`` output projection after a GELU; also the conv mixer's).
        bandlimit: S4ND drops the SSM modes at or above ``bandlimit / 2`` cycles per reference
            sample; the default 1.0 is the Nyquist frequency of the reference grid (the modes
            dropped alias at the training resolution); 0 keeps every mode.
        dt_min, dt_max: initial range of the S4ND steps (``None``: S4ND's defaults).
        conv_kernel_size: kernel size of the ``"conv"`` mixer.
        stem_norm: channel LayerNorm after the stem.
        input_blur: if positive, the stem first low-passes the input with a Gaussian of this
            width in pixels of ``img_size`` (:class:`AntiAliasBlur`), the same width in units of
            the image at every resolution.
        s4nd_kwargs: further keyword arguments for every S4ND layer (e.g. ``init``, ``lr``); they
            take precedence over the arguments above.
        drop_rate, proj_drop_rate, drop_path_rate: head dropout, dropout inside blocks, stochastic depth.
    """

    ndim = 2  # images only
    output_fmts = ("NCHW", "NLC")

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        img_size: Union[int, Sequence[int]] = 224,
        patch_size: Union[int, Sequence[int]] = 16,
        embed_dim: int = 384,
        depth: int = 12,
        mlp_ratio: float = 4.0,
        mixer: str = "s4nd",
        d_state: int = 64,
        kernel: str = "s4d",
        rank: int = 2,
        bandlimit: Optional[float] = 1.0,
        out_proj: str = "glu",
        dt_min: Optional[float] = None,
        dt_max: Optional[float] = None,
        conv_kernel_size: int = 5,
        stem_norm: bool = False,
        input_blur: float = 0.0,
        s4nd_kwargs: Optional[Dict[str, Any]] = None,
        norm_eps: float = 1e-6,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        check_choice("mixer", mixer, ("s4nd", "conv"))
        check_positive_int("depth", depth)
        img_size = check_sizes("img_size", img_size, 2)
        patch_size = check_sizes("patch_size", patch_size, 2)
        self.in_chans = check_positive_int("in_chans", in_chans)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.patch_size = patch_size
        self.grid = ReferenceGrid(2, img_size, device=device)

        if mixer == "s4nd":
            steps = {k: v for k, v in dict(dt_min=dt_min, dt_max=dt_max).items() if v is not None}
            mixer_layer = partial(S4ND, **{
                **dict(ndim=2, d_state=d_state, kernel=kernel, bidirectional=True, rank=rank,
                       bandlimit=bandlimit or None, out_proj=out_proj, activation="gelu", **steps),
                **(s4nd_kwargs or {}), **dd,
            })
        else:
            mixer_layer = partial(DepthwiseConvMixer, ndim=2, kernel_size=conv_kernel_size, out_proj=out_proj, **dd)
        grid = self.grid.view(patch_size)
        self.stem = PatchStem(in_chans, embed_dim, patch_size, stem_norm, norm_eps, blur=input_blur,
                              grid=self.grid.view(1), **dd)
        (rates,) = stochastic_depth_rates(drop_path_rate, [depth])
        self.blocks = nn.Sequential(*[
            S4NDIsoBlock(embed_dim, mixer_layer, grid, mlp_ratio=mlp_ratio, proj_drop=proj_drop_rate,
                         drop_path=rates[i], norm_eps=norm_eps, **dd)
            for i in range(depth)
        ])
        self.norm = LayerNormNd(embed_dim, eps=norm_eps, **dd)
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        reduction = max(patch_size)
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=embed_dim, reduction=reduction) for i in range(depth)]
        self.head = ClassifierHeadNd(embed_dim, num_classes, global_pool, drop_rate=drop_rate, **dd)
        self.grad_checkpointing = False
        init_weights_outside(self, skip=(S4ND, DepthwiseConvMixer))


# -- configs and entrypoints -------------------------------------------------------------------


def _create_s4nd_isotropic(variant: str, pretrained: bool = False, **kwargs: Any) -> S4NDIsotropic:
    return build_backbone(
        S4NDIsotropic, variant, pretrained,
        feature_cfg=dict(out_indices=3, feature_cls="getter"),
        **kwargs,
    )


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    family = dict(
        pool_size=(14, 14), min_input_size=(3, 16, 16), crop_pct=0.9, first_conv="stem.proj",
        paper_ids=("arXiv:2210.06583", "arXiv:2010.11929"),
    )
    return backbone_cfg(S4ND_PAPER, family, kwargs)


def _micro_cfg(model: str, **kwargs: Any) -> Dict[str, Any]:
    return _cfg(
        num_classes=10, input_size=(1, 14, 14), pool_size=(14, 14), min_input_size=None,
        crop_pct=1.0, interpolation="bilinear", mean=MNIST_MEAN, std=MNIST_STD,
        paper_ids=("arXiv:2210.06583",),
        description=f"{model}: tiny isotropic model for 1-channel digits, trained in minutes on a CPU",
        **kwargs,
    )


def _mnist_weights(model: str) -> Dict[str, Any]:
    return dict(
        file=zoo_file(f"{model}.mnist5k.safetensors"),
        notes=("trained by s4vision on 4,000 MNIST digits at 14x14 (model zoo, see model_zoo/manifest.yaml)",),
    )


default_cfgs = generate_default_cfgs({
    "s4nd_vit_tiny_patch16": _cfg(),
    "s4nd_vit_small_patch16": _cfg(),
    "s4nd_vit_base_patch16": _cfg(),
    "s4nd_iso_micro.mnist5k": _micro_cfg("s4nd_iso_micro", **_mnist_weights("s4nd_iso_micro")),
    "conv2d_iso_micro.mnist5k": _micro_cfg("conv2d_iso_micro", **_mnist_weights("conv2d_iso_micro")),
})


@register_model
def s4nd_vit_tiny_patch16(pretrained: bool = False, **kwargs: Any) -> S4NDIsotropic:
    model_args = dict(patch_size=16, embed_dim=192, depth=12)
    return _create_s4nd_isotropic("s4nd_vit_tiny_patch16", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def s4nd_vit_small_patch16(pretrained: bool = False, **kwargs: Any) -> S4NDIsotropic:
    model_args = dict(patch_size=16, embed_dim=384, depth=12)
    return _create_s4nd_isotropic("s4nd_vit_small_patch16", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def s4nd_vit_base_patch16(pretrained: bool = False, **kwargs: Any) -> S4NDIsotropic:
    model_args = dict(patch_size=16, embed_dim=768, depth=12)
    return _create_s4nd_isotropic("s4nd_vit_base_patch16", pretrained=pretrained, **dict(model_args, **kwargs))


# The model zoo's mnist5k checkpoints were trained with exactly these arguments: keep them in sync.
_MICRO_ARGS = dict(
    patch_size=1, embed_dim=64, depth=4, mlp_ratio=0.0, d_state=32, rank=1, bandlimit=0.2,
    dt_min=0.1, dt_max=1.0, out_proj="glu", stem_norm=True, proj_drop_rate=0.1,
)


@register_model
def s4nd_iso_micro(pretrained: bool = False, **kwargs: Any) -> S4NDIsotropic:
    """Isotropic S4ND for 1-channel digits (default 14x14), resolution-agnostic end to end."""
    model_args = dict(_MICRO_ARGS, mixer="s4nd")
    return _create_s4nd_isotropic("s4nd_iso_micro", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def conv2d_iso_micro(pretrained: bool = False, **kwargs: Any) -> S4NDIsotropic:
    """``s4nd_iso_micro`` with a 5x5 depthwise convolution in place of each S4ND kernel."""
    model_args = dict(_MICRO_ARGS, mixer="conv", conv_kernel_size=5)
    return _create_s4nd_isotropic("conv2d_iso_micro", pretrained=pretrained, **dict(model_args, **kwargs))
