"""The isotropic S4ND models: the micro models and their conv baseline twin."""
import pytest
import torch
import timm

import s4vision  # noqa: F401
from s4vision.layers import AntiAliasBlur, DepthwiseConvMixer


def test_micro_models_share_everything_but_the_spatial_kernel():
    s4nd = timm.create_model("s4nd_iso_micro")
    conv = timm.create_model("conv2d_iso_micro")
    assert isinstance(conv.blocks[0].mixer, DepthwiseConvMixer)
    assert conv.blocks[0].mixer.conv.kernel_size == (5, 5)
    strip = lambda names: {n for n in names if ".mixer." not in n}  # noqa: E731
    shapes = lambda m: {n: p.shape for n, p in m.named_parameters() if ".mixer." not in n}  # noqa: E731
    assert strip(n for n, _ in s4nd.named_parameters()) == strip(n for n, _ in conv.named_parameters())
    assert shapes(s4nd) == shapes(conv)
    assert isinstance(s4nd.stem.blur, torch.nn.Identity)  # the input filter is opt-in
    blurred = timm.create_model("conv2d_iso_micro", input_blur=1.0)
    assert isinstance(blurred.stem.blur, AntiAliasBlur) and blurred.stem.blur.grid.sizes == (14, 14)
