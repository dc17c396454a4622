"""nn.Modules built on the kernels, channels-first like torch's convolutions.

One signature convention for every layer and head, so that a model can swap one for another:

* ``dim`` (first positional argument): the width (features / channels) of the input, as in
  timm's blocks (``Block(dim, ...)``). It is the only positional-by-design argument besides
  ``ndim`` and the kernel family; the rest are keyword-only.
* ``ndim``: the number of spatial axes (1 sequences ``(B, C, L)``, 2 images ``(B, C, H, W)``,
  3 video ``(B, C, T, H, W)``); one code path serves all three. :class:`S4` is ``ndim=1``.
* ``d_state``, ``kernel`` (``"s4d"`` / ``"s4"``), ``kernel_net`` (FlexConv): the kernel family,
  named as in the S4 papers and the CCNN.
* ``bidirectional``: SSM kernels extend both ways from the origin (``False``: causal).
* ``channels``: kernels per feature; their ``channels * dim`` outputs are mixed back by the
  output projection (the S4 papers' meaning, the same in :class:`S4` and :class:`S4ND`).
  ``rank``: outer products summed in a separable N-d kernel (:class:`S4ND`); the low rank of
  a DPLR state matrix is the generator's ``dplr_rank``.
* ``l_max``: the reference grid (an int, one per axis, or a view of a model's grid); ``rate``
  (``forward(x, rate=None)``) overrides the sampling rate derived from it
  (:mod:`s4vision.sampling`). ``bandlimit``: SSM modes kept, per reference sample.
* ``activation`` (``"gelu"``, ``"silu"``, ``"relu"``, ``"tanh"`` or ``None``), ``dropout``
  (after the activation, PyTorch's name in ``nn.Transformer``), then ``out_proj`` (``"glu"``,
  ``"linear"`` or ``None``) to ``out_dim`` (default ``dim``): ``y = out_proj(dropout(act(conv(x))))``
  for every layer. SSM layers default to the S4 papers' GELU + GLU, FlexConv to the CCNN's
  linear pointwise mix.
* ``device``, ``dtype``: factory arguments, as in every ``torch.nn`` module.

Models use timm's names for the same ideas (``embed_dim``, ``drop_rate``, ``proj_drop_rate``,
``drop_path_rate``) and pass ``device``/``dtype`` down to every layer.
"""
from .blur import AntiAliasBlur
from .classifier import ClassifierHeadNd, global_pool_nd
from .conv import DepthwiseConvMixer, conv_nd
from .flexconv import FlexConv, GaussianMask
from .norm import LayerNormNd
from .pointwise import ACTIVATIONS, OUT_PROJS, PointwiseConv, PointwiseMlp, create_activation, create_out_proj, pointwise_conv
from .s4 import S4
from .s4nd import S4ND
from .tokens import frame_tokens

__all__ = [
    "S4", "S4ND", "FlexConv", "GaussianMask",
    "PointwiseConv", "pointwise_conv", "PointwiseMlp", "create_activation", "create_out_proj", "ACTIVATIONS", "OUT_PROJS",
    "LayerNormNd", "AntiAliasBlur", "DepthwiseConvMixer", "conv_nd", "ClassifierHeadNd", "global_pool_nd",
    "frame_tokens",
]
