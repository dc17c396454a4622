"""S4ND-ConvNeXt: ConvNeXt with its depthwise convolutions replaced by S4ND, for images and video.

Papers:
* `S4ND: Modeling Images and Videos as Multidimensional Signals Using State Spaces`
  - https://arxiv.org/abs/2210.06583 (Nguyen et al., NeurIPS 2022)
* `A ConvNet for the 2020s` - https://arxiv.org/abs/2201.03545 (Liu et al., CVPR 2022)

Each ConvNeXt block's 7x7 depthwise convolution becomes a depthwise S4ND layer (a global,
separable state-space kernel plus a skip term), as in the S4ND paper. Following the paper's best
ImageNet configuration (``stem_type: new_s4nd_patch``, ``downsample_type: s4nd``,
``downsample_glu: true`` in its released configs), the stem and the downsampling layers default to
S4ND too: an S4ND layer at the input resolution, average pooling by the stride, then a pointwise
projection with a GLU. ``stem_type="patch"`` and ``downsample_type="conv"`` select ConvNeXt's
strided convolutions instead. Differences from the paper's code: the stem mixes the input
channels with a pointwise layer before a depthwise S4ND (the paper convolves every input channel
with every output kernel), and the S4ND kernels of the stem span the whole image.

The same classes build the 2D model (``ndim=2``, images ``(B, C, H, W)``) and the 3D one
(``ndim=3``, clips ``(B, C, T, H, W)``); :func:`inflate_convnext_2d_to_3d` turns a 2D checkpoint
into initial weights for the 3D model.

Every S4ND layer keeps the grid it was built for (``l_max``, derived from ``img_size`` /
``num_frames``) in its state, and samples its kernels for other input sizes so that they cover the
same extent: the models accept any input size of at least 32 (the total stride; sizes that are
not multiples of a stride are floored by the pooling, as in ConvNeXt) and give consistent outputs
across resolutions. The SSM steps start in the paper's range ``dt_min=0.1, dt_max=1.0`` (per sample
of each layer's reference grid); unlike the paper, SSM modes above the Nyquist frequency of the
reference grid are dropped by default (``bandlimit=1.0``; ``bandlimit=0`` keeps them).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from timm.layers import DropPath, Mlp
from timm.models import checkpoint_seq, generate_default_cfgs, register_model

from .._checks import check_positive_int, check_positive_number, check_sizes, is_tracing
from ..layers import S4ND, ClassifierHeadNd, LayerNormNd, conv_nd
from ..sampling import GridView, ReferenceClock, ReferenceGrid, check_timestamps, frame_rates, uniform_rate
from ._builder import (
    S4ND_PAPER,
    backbone_cfg,
    build_backbone,
    init_weights_outside,
    stochastic_depth_rates,
)
from ._interface import TimmBackboneMixin
from ..errors import InvalidTypeError, InvalidValueError

__all__ = ["S4NDConvNeXt", "S4NDConvNeXtBlock", "S4NDConvNeXtStage", "inflate_convnext_2d_to_3d"]

Size = Union[int, Sequence[int]]


# Positions whose block MLP runs at once in CPU inference (S4NDConvNeXtBlock._forward_in_chunks):
# 1,024 was the fastest of 512 / 1,024 / 2,048 (and of a fixed 1.5 MB hidden chunk) for atto and
# tiny at 224 px, batch 2, one and two threads: the whole models 7-12 % faster than unchunked.
_MLP_CHUNK_POSITIONS = 1024


class S4NDStem(nn.Module):
    """S4ND patchify stem: pointwise ``in_chans -> stem_chs``, then an S4ND layer that pools by the
    patch size and projects to ``out_chs`` with a GLU, then a channel LayerNorm.
    ``(B, in_chans, *S) -> (B, out_chs, *S // patch)``.
    """

    def __init__(
        self,
        in_chans: int,
        out_chs: int,
        stem_chs: int,
        patch_size: Tuple[int, ...],
        mixer_layer: Callable[..., nn.Module],
        grid: GridView,
        norm_layer: Callable[..., nn.Module],
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        ndim = len(patch_size)
        dd = dict(device=device, dtype=dtype)
        self.proj_in = conv_nd(ndim)(in_chans, stem_chs, kernel_size=1, **dd)
        self.down = _downsample(mixer_layer, stem_chs, out_chs, patch_size, grid)
        self.norm = norm_layer(out_chs, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not is_tracing() and (x.ndim != 2 + len(self.proj_in.kernel_size) or x.shape[1] != self.proj_in.in_channels):
            return self.norm(self.down(self.proj_in(x)))  # the convolution's own message for a wrong shape
        # The S4ND layer applies the projection itself: it pools the image for its skip term before
        # projecting, and in CPU inference never forms the projection (stem_chs channels at full
        # resolution, the network's largest tensor) whole.
        return self.norm(self.down(x, in_proj=(self.proj_in.weight, self.proj_in.bias)))


def _downsample(mixer_layer: Callable[..., nn.Module], in_chs: int, out_chs: int, stride: Tuple[int, ...],
                grid: GridView) -> nn.Module:
    """Resolution-agnostic downsampling (the paper's ``S4DownSample``): a linear S4ND layer
    pooled by ``stride`` (convolution and pooling in one product), then a pointwise GLU."""
    return mixer_layer(in_chs, l_max=grid, stride=stride, out_proj="glu", out_dim=out_chs)


class PatchStem(nn.Module):
    """ConvNeXt's stem: non-overlapping strided convolution then channel LayerNorm."""

    def __init__(self, in_chans: int, out_chs: int, patch_size: Tuple[int, ...], norm_layer, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.proj_in = conv_nd(len(patch_size))(in_chans, out_chs, kernel_size=patch_size, stride=patch_size, **dd)
        self.norm = norm_layer(out_chs, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj_in(x))


class S4NDConvNeXtBlock(nn.Module):
    """ConvNeXt block with an S4ND token mixer.

    ``x + drop_path(gamma * mlp(norm(s4nd(x))))`` on ``(B, C, *S)``; the norm and MLP run
    channels-last, as in timm's ConvNeXt.
    """

    def __init__(
        self,
        dim: int,
        mixer_layer: Callable[..., nn.Module],
        grid: GridView,
        mlp_ratio: float = 4.0,
        ls_init_value: Optional[float] = 1e-6,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.mixer = mixer_layer(dim, l_max=grid)
        self.norm = nn.LayerNorm(dim, eps=norm_eps, **dd)
        self.mlp = Mlp(dim, int(mlp_ratio * dim), act_layer=nn.GELU, **dd)
        self.gamma = nn.Parameter(ls_init_value * torch.ones(dim, **dd)) if ls_init_value is not None else None
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._in_chunks(x):
            return self._forward_in_chunks(x)
        shortcut = x
        x = self.mixer(x).movedim(1, -1)
        x = self.mlp(self.norm(x))
        if self.gamma is not None:
            x = x * self.gamma
        # shortcut first: the sum then takes its (contiguous, channels-first) layout
        return shortcut + self.drop_path(x.movedim(-1, 1))

    def _in_chunks(self, x: torch.Tensor) -> bool:
        """CPU inference (eval, no autograd) on more positions than one chunk."""
        if is_tracing() or torch.compiler.is_compiling() or self.training or torch.is_grad_enabled():
            return False
        return x.device.type == "cpu" and x.numel() // x.shape[1] > _MLP_CHUNK_POSITIONS

    def _forward_in_chunks(self, x: torch.Tensor) -> torch.Tensor:
        """The norm, MLP and scale of :meth:`forward` on ``_MLP_CHUNK_POSITIONS`` positions at a time
        (each position is computed on its own either way). The MLP's hidden activation, 4x the
        channels at every position and the block's largest tensor, then stays in cache and is never
        allocated whole, which the allocator would otherwise hand back to the system and fault in
        again on every call."""
        mixed = self.mixer(x).movedim(1, -1)
        rows = mixed.reshape(-1, mixed.shape[-1])  # channels last: the one copy the norm would make
        out = torch.empty_like(rows)
        for start in range(0, rows.shape[0], _MLP_CHUNK_POSITIONS):
            chunk = slice(start, start + _MLP_CHUNK_POSITIONS)
            h = self.mlp(self.norm(rows[chunk]))
            out[chunk] = h if self.gamma is None else h.mul_(self.gamma)
        return x + out.view(mixed.shape).movedim(-1, 1)


class S4NDConvNeXtStage(nn.Module):
    """Optional downsampling (channel norm then S4ND or strided conv) followed by ``depth`` blocks.

    ``grid`` is the view of the model's grid at the stage's input; its blocks see it divided by
    ``stride``."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: Tuple[int, ...],
        depth: int,
        mixer_layer: Callable[..., nn.Module],
        grid: GridView,
        downsample_type: str = "s4nd",
        drop_path_rates: Optional[List[float]] = None,
        ls_init_value: Optional[float] = 1e-6,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.grad_checkpointing = False
        ndim = len(stride)
        if in_chs != out_chs or max(stride) > 1:
            if downsample_type == "s4nd":
                down = _downsample(mixer_layer, in_chs, out_chs, stride, grid)
            else:
                down = conv_nd(ndim)(in_chs, out_chs, kernel_size=stride, stride=stride, **dd)
            self.downsample = nn.Sequential(LayerNormNd(in_chs, eps=norm_eps, **dd), down)
        else:
            self.downsample = nn.Identity()
        block_grid = grid.view(stride)
        rates = drop_path_rates or [0.0] * depth
        self.blocks = nn.Sequential(*[
            S4NDConvNeXtBlock(
                out_chs, mixer_layer, block_grid, mlp_ratio=mlp_ratio, ls_init_value=ls_init_value,
                drop_path=rates[i], norm_eps=norm_eps, **dd,
            )
            for i in range(depth)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class S4NDConvNeXt(TimmBackboneMixin, nn.Module):
    """S4ND-ConvNeXt for images (``ndim=2``) or video clips (``ndim=3``).

    Args:
        in_chans: input channels.
        num_classes: classifier outputs (0: no classifier).
        global_pool: ``"avg"``, ``"max"``, ``"avgmax"`` or ``""`` (no pooling).
        depths, dims: blocks and channels of the four stages.
        ndim: 2 for images ``(B, C, H, W)``, 3 for clips ``(B, C, T, H, W)``.
        img_size: training image size ``(H, W)`` (an int for square images): the reference grid
            of the S4ND layers. Other sizes are accepted at run time.
        num_frames: training clip length ``T`` (3D only).
        train_fps: frame rate of the training clips (3D only; ``None``: the first frame rate seen
            in training). With it the time axis is time, not a fixed extent: a clip given with its
            ``fps`` (or uniform ``timestamps``) is sampled at ``train_fps / fps`` along time,
            whatever its length (without, at ``num_frames / T``). Kept in checkpoints
            (``clock.fps``).
        patch_size: stem stride, an int or one per axis (3D default ``(2, 4, 4)``).
        downsample_stride: stride of stages 2-4, an int or one per axis (3D default ``(1, 2, 2)``:
            time is only downsampled by the stem).
        stem_type: ``"s4nd"`` (the paper's S4ND patch stem) or ``"patch"`` (strided conv).
        stem_chs: channels of the S4ND stem before its pooling.
        downsample_type: ``"s4nd"`` (S4ND, pool, pointwise GLU) or ``"conv"`` (strided conv).
        d_state, kernel: S4ND state size and kernel family (``"s4d"``/``"s4"``).
        bandlimit: S4ND drops the SSM modes at or above ``bandlimit / 2`` cycles per reference
            sample. The default 1.0 is the Nyquist frequency of each layer's reference grid: the
            modes dropped alias at the training resolution and would mean something else at any
            other (this halves the logit change at 2x resolution, see the tests). 0 keeps every
            mode, as the paper did.
        dt_min, dt_max: initial range of the S4ND steps (the paper's 0.1 and 1.0).
        s4nd_kwargs: further keyword arguments for every S4ND layer (e.g. ``init``, ``lr``); they
            take precedence over the arguments above.
        mlp_ratio, ls_init_value, head_init_scale, norm_eps: as in timm's ConvNeXt.
        drop_rate, drop_path_rate: head dropout and stochastic depth.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        ndim: int = 2,
        img_size: Size = 224,
        num_frames: Optional[int] = None,
        train_fps: Optional[float] = None,
        patch_size: Optional[Size] = None,
        downsample_stride: Optional[Size] = None,
        stem_type: str = "s4nd",
        stem_chs: int = 32,
        downsample_type: str = "s4nd",
        d_state: int = 64,
        kernel: str = "s4d",
        bandlimit: Optional[float] = 1.0,
        dt_min: float = 0.1,
        dt_max: float = 1.0,
        s4nd_kwargs: Optional[Dict[str, Any]] = None,
        mlp_ratio: float = 4.0,
        ls_init_value: Optional[float] = 1e-6,
        head_init_scale: float = 1.0,
        norm_eps: float = 1e-6,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if ndim not in (2, 3):
            raise InvalidValueError(f"S4NDConvNeXt supports ndim=2 (images) or ndim=3 (clips), got {ndim!r}")
        if len(depths) != 4 or len(dims) != 4:
            raise InvalidValueError(f"depths and dims need 4 stages, got depths={tuple(depths)}, dims={tuple(dims)}")
        if stem_type not in ("s4nd", "patch"):
            raise InvalidValueError(f"stem_type must be 's4nd' or 'patch', got {stem_type!r}")
        if downsample_type not in ("s4nd", "conv"):
            raise InvalidValueError(f"downsample_type must be 's4nd' or 'conv', got {downsample_type!r}")
        spatial = check_sizes("img_size", img_size, 2)
        if ndim == 3:
            if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
                raise InvalidValueError(f"a 3D S4NDConvNeXt needs num_frames, the training clip length, got {num_frames!r}")
            grid = (int(num_frames),) + spatial
        else:
            if num_frames is not None or train_fps is not None:
                raise InvalidValueError(f"num_frames and train_fps are only for ndim=3, got num_frames={num_frames!r}, "
                                        f"train_fps={train_fps!r} with ndim=2")
            grid = spatial
        patch_size = check_sizes("patch_size", patch_size if patch_size is not None else ((2, 4, 4) if ndim == 3 else 4),
                                 ndim)
        downsample_stride = check_sizes(
            "downsample_stride", downsample_stride if downsample_stride is not None else ((1, 2, 2) if ndim == 3 else 2),
            ndim,
        )
        self.ndim = ndim
        self.in_chans = check_positive_int("in_chans", in_chans)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grid = ReferenceGrid(ndim, grid, device=device)
        if ndim == 3:
            self.clock = ReferenceClock(train_fps, device=device)

        mixer_layer = partial(S4ND, **{
            **dict(ndim=ndim, d_state=d_state, kernel=kernel, bidirectional=True, rank=1,
                   bandlimit=bandlimit or None, dt_min=dt_min, dt_max=dt_max),
            **(s4nd_kwargs or {}),
            # the block's MLP follows: S4ND stands in for a depthwise conv
            "activation": None, "out_proj": None, **dd,
        })
        norm_layer = partial(LayerNormNd, eps=norm_eps)
        if stem_type == "s4nd":
            self.stem = S4NDStem(in_chans, dims[0], stem_chs, patch_size, mixer_layer, self.grid.view(1), norm_layer,
                                 **dd)
        else:
            self.stem = PatchStem(in_chans, dims[0], patch_size, norm_layer, **dd)

        grid = self.grid.view(patch_size)
        reduction = patch_size
        dp_rates = stochastic_depth_rates(drop_path_rate, depths)
        stages, self.feature_info = [], []
        prev_chs = dims[0]
        for i in range(4):
            stride = (1,) * ndim if i == 0 else downsample_stride
            stages.append(S4NDConvNeXtStage(
                prev_chs, dims[i], stride, depths[i], mixer_layer, grid, downsample_type=downsample_type,
                drop_path_rates=dp_rates[i], ls_init_value=ls_init_value, mlp_ratio=mlp_ratio,
                norm_eps=norm_eps, **dd,
            ))
            grid = grid.view(stride)
            reduction = tuple(r * s for r, s in zip(reduction, stride))
            prev_chs = dims[i]
            self.feature_info.append(dict(num_chs=prev_chs, reduction=max(reduction[-2:]), module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = prev_chs
        self.norm_pre = nn.Identity()  # ConvNeXt normalises after pooling, in the head
        self.head = ClassifierHeadNd(prev_chs, num_classes, global_pool, norm_layer=norm_layer, drop_rate=drop_rate, **dd)
        init_weights_outside(self, skip=(S4ND,), head_init_scale=head_init_scale)

    # -- timm interface ------------------------------------------------------------------------

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)" if coarse else [
                (r"^stages\.(\d+)\.downsample", (0,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                (r"^norm_pre", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def _trunk(self) -> nn.Sequential:
        return self.stages

    def _intermediate(self, index: int, x: torch.Tensor, norm: bool, output_fmt: str) -> torch.Tensor:
        return self.norm_pre(x) if norm and index == len(self.stages) - 1 else x

    def _final_norm(self, x: torch.Tensor, complete: bool) -> torch.Tensor:
        return self.norm_pre(x) if complete else x

    def _prune(self, max_index: int, prune_norm: bool, prune_head: bool) -> None:
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[: max_index + 1]
        if prune_norm or prune_end:
            self.norm_pre = nn.Identity()
        if prune_head or prune_end:
            # the head's norm is sized for the last stage: features now end earlier, so it goes too
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            self.head = ClassifierHeadNd(self.num_features, 0, "")
            self.num_classes = 0

    def forward_features(self, x: torch.Tensor, timestamps=None, fps: Optional[float] = None) -> torch.Tensor:
        """``(B, in_chans, *S) -> (B, num_features, *S / stride)``; a clip's frame rate ``fps`` or
        uniformly spaced ``timestamps`` (``(T,)`` or ``(B, T)`` seconds) set its rate along time."""
        self._check_input(x)
        rate = self._time_rate(x, timestamps, fps)
        if rate is None:
            return self.norm_pre(self.stages(self.stem(x)))
        with self.grid.fixed_rates({0: rate}):
            return self.norm_pre(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor, timestamps=None, fps: Optional[float] = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, timestamps=timestamps, fps=fps))

    def _time_rate(self, x: torch.Tensor, timestamps, fps: Optional[float]) -> Optional[float]:
        """``train_fps / fps`` along time for a clip given with its frame rate, else None."""
        if timestamps is None and fps is None:
            return None
        if is_tracing():  # torch.fx makes every argument a Proxy: a traced graph takes clips without fps
            return None
        if self.ndim != 3:
            raise InvalidValueError("timestamps and fps are for clips; this is a 2D (image) model")
        if timestamps is not None and fps is not None:
            raise InvalidValueError("give the frames' timestamps or their fps, not both")
        if timestamps is not None:
            rates = frame_rates(check_timestamps(timestamps, x.shape[2]), 1.0)  # seconds per frame
            step = uniform_rate(rates)
            if step is None:
                raise InvalidValueError(f"{type(self).__name__} needs uniformly spaced frames; got gaps from "
                                        f"{float(rates.min()):g} to {float(rates.max()):g} s")
            fps = 1.0 / step
        fps = check_positive_number("fps", fps)
        self.clock.observe(fps)
        return self.clock.rate(fps)


# -- 2D -> 3D inflation ------------------------------------------------------------------------


def inflate_convnext_2d_to_3d(
    state_dict_2d: Dict[str, torch.Tensor],
    model_3d: S4NDConvNeXt,
    include_head: bool = True,
) -> Dict[str, torch.Tensor]:
    """Initial weights for a 3D S4ND-ConvNeXt from a checkpoint of the 2D model of the same
    width and depth (e.g. ``s4nd_convnext_tiny`` -> ``s4nd_convnext3d_tiny``).

    * S4ND layers: the 3D layer's SSMs for the ``(H, W)`` axes take the 2D layer's (the names
      come from :meth:`S4ND.inflated_key`), so its kernel is the 2D kernel times a temporal
      one; the temporal SSM ``ssm.0`` keeps ``model_3d``'s own initialisation. The skip ``D``
      is copied.
    * Strided convolutions (``stem_type="patch"``, ``downsample_type="conv"``): the 2D kernel is
      repeated over time and divided by the temporal size (I3D inflation), so a clip of identical
      frames gives the 2D response.
    * Everything else (norms, MLPs, pointwise layers, layer scales and, if ``include_head``, the
      head) is copied. The reference grid (``grid.size``) and training frame rate (``clock.fps``) keep the 3D model's values.

    Returns a complete state dict for ``model_3d``: ``model_3d.load_state_dict(result)``.
    Raises ``ValueError`` when a 2D tensor has no place in the 3D model, a shape does not fit, or
    a 3D tensor other than a temporal SSM is left without a 2D source.
    """
    if not isinstance(model_3d, S4NDConvNeXt) or model_3d.ndim != 3:
        raise InvalidTypeError(f"model_3d must be a 3D S4NDConvNeXt (ndim=3), got {type(model_3d).__name__}")
    target = model_3d.state_dict()
    out = {k: v.clone() for k, v in target.items()}
    s4nd_layers = [name for name, m in model_3d.named_modules() if isinstance(m, S4ND)]
    filled = set()
    for key, value in state_dict_2d.items():
        if _is_grid_buffer(key) or (not include_head and key.startswith("head.")):
            continue
        key_3d = _inflated_key(key, s4nd_layers)
        if key_3d not in target:
            raise InvalidValueError(f"2D tensor {key!r} has no counterpart {key_3d!r} in the 3D model")
        ref = target[key_3d]
        if value.shape == ref.shape:
            out[key_3d] = value.to(ref.dtype).clone()
        elif value.ndim == 4 and ref.ndim == 5 and value.shape == ref.shape[:2] + ref.shape[3:]:
            out[key_3d] = (value.unsqueeze(2) / ref.shape[2]).expand_as(ref).to(ref.dtype).clone()
        else:
            raise InvalidValueError(f"cannot inflate {key!r} of shape {tuple(value.shape)} into {tuple(ref.shape)}")
        filled.add(key_3d)
    temporal = tuple(f"{name}.ssm.0." for name in s4nd_layers)
    unfilled = [
        k for k in target
        if k not in filled and not _is_grid_buffer(k) and not k.startswith(temporal)
        and (include_head or not k.startswith("head."))
    ]
    if unfilled:
        raise InvalidValueError(f"the 2D state dict does not fit the 3D model: nothing for {unfilled[:5]}"
                         f"{' ...' if len(unfilled) > 5 else ''}")
    return out


def _is_grid_buffer(key: str) -> bool:
    return key in ("grid.size", "clock.fps")


def _inflated_key(key: str, s4nd_layers: Sequence[str]) -> str:
    """The 3D name of a 2D tensor: S4ND layers rename their own keys (:meth:`S4ND.inflated_key`)."""
    for name in s4nd_layers:
        if key.startswith(f"{name}."):
            return f"{name}.{S4ND.inflated_key(key[len(name) + 1:])}"
    return key


# -- configs and entrypoints -------------------------------------------------------------------


def _create_s4nd_convnext(variant: str, pretrained: bool = False, **kwargs: Any) -> S4NDConvNeXt:
    return build_backbone(
        S4NDConvNeXt, variant, pretrained,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls="getter"),
        **kwargs,
    )


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    family = dict(
        pool_size=(7, 7), min_input_size=(3, 32, 32), crop_pct=0.875, first_conv="stem.proj_in",
        paper_ids=("arXiv:2210.06583", "arXiv:2201.03545"),
    )
    return backbone_cfg(S4ND_PAPER, family, kwargs)


def _cfg3d(num_frames: int, **kwargs: Any) -> Dict[str, Any]:
    """A clip model's config: ``input_size`` is ``(C, T, H, W)`` (it sets ``num_frames`` and
    ``img_size``), the smallest clip is 2 frames (the stem's temporal stride) of 32x32."""
    return _cfg(
        input_size=(3, num_frames, 224, 224), pool_size=(num_frames // 2, 7, 7), min_input_size=(3, 2, 32, 32),
        notes=("video model: input clips (B, 3, T, H, W); input_size is (C, T, H, W)",),
        **kwargs,
    )


_NUM_FRAMES_3D = 16

# The architecture of every registered variant: the only thing its entrypoint adds.
_VARIANTS: Dict[str, Dict[str, Any]] = {
    "s4nd_convnext_atto": dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320)),
    "s4nd_convnext_femto": dict(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384)),
    "s4nd_convnext_pico": dict(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512)),
    "s4nd_convnext_nano": dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640)),
    "s4nd_convnext_tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    "s4nd_convnext_small": dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    "s4nd_convnext_base": dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
    "s4nd_convnext3d_atto": dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), ndim=3),
    "s4nd_convnext3d_tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), ndim=3),
}

default_cfgs = generate_default_cfgs({
    name: _cfg3d(_NUM_FRAMES_3D) if args.get("ndim") == 3 else _cfg()
    for name, args in _VARIANTS.items()
})


def _create_variant(variant: str, pretrained: bool, kwargs: Dict[str, Any]) -> S4NDConvNeXt:
    """Build ``variant`` from its ``_VARIANTS`` entry; ``kwargs`` override the entry."""
    return _create_s4nd_convnext(variant, pretrained=pretrained, **dict(_VARIANTS[variant], **kwargs))


# timm registers entrypoints by function name, so each variant keeps its own function.


@register_model
def s4nd_convnext_atto(pretrained: bool = False, **kwargs: Any) -> S4NDConvNeXt:
    return _create_variant("s4nd_convnext_atto", pretrained, kwargs)


@register_model
def s4nd_convnext_femto(pretrained: bool = False, **kwargs: Any) -> S4NDConvNeXt:
    return _create_variant("s4nd_convnext_femto", pretrained, kwargs)


@register_model
def s4nd_convnext_pico(pretrained: bool = False, **kwargs: Any) -> S4NDConvNeXt:
    return _create_variant("s4nd_convnext_pico", pretrained, kwargs)


@register_model
def s4nd_convnext_nano(pretrained: bool = False, **kwargs: Any) -> S4NDConvNeXt:
    return _create_variant("s4nd_convnext_nano", pretrained, kwargs)


@register_model
def s4nd_convnext_tiny(pretrained: bool = False, **kwargs: Any) -> S4NDConvNeXt:
    return _create_variant("s4nd_convnext_tiny", pretrained, kwargs)


@register_model
def s4nd_convnext_small(pretrained: bool = False, **kwargs: Any) -> S4NDConvNeXt:
    return _create_variant("s4nd_convnext_small", pretrained, kwargs)


@register_model
def s4nd_convnext_base(pretrained: bool = False, **kwargs: Any) -> S4NDConvNeXt:
    return _create_variant("s4nd_convnext_base", pretrained, kwargs)


@register_model
def s4nd_convnext3d_atto(pretrained: bool = False, **kwargs: Any) -> S4NDConvNeXt:
    return _create_variant("s4nd_convnext3d_atto", pretrained, kwargs)


@register_model
def s4nd_convnext3d_tiny(pretrained: bool = False, **kwargs: Any) -> S4NDConvNeXt:
    return _create_variant("s4nd_convnext3d_tiny", pretrained, kwargs)
