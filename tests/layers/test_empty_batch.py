"""An empty batch (B = 0) gives an empty output of the right shape and dtype, everywhere.

A data loader's last batch can be empty after filtering, and a sharded evaluation can leave a
rank with nothing: the FFT convolutions used to raise an MKL error on zero-sized transforms.
"""
import pytest
import timm
import torch

import _helpers
from s4vision.engine.factory import list_s4vision_models
from s4vision.layers import S4, S4ND, FlexConv
from s4vision.models import ViS4mer
from s4vision.ops import fft_conv, fft_conv_nd


@pytest.mark.parametrize("causal", [True, False])
def test_fft_conv(causal):
    y = fft_conv(torch.randn(0, 3, 10), torch.randn(3, 7), causal=causal)
    assert y.shape == (0, 3, 10) and y.dtype == torch.float32
    y = fft_conv(torch.randn(0, 3, 10, dtype=torch.float64), torch.randn(3, 7))
    assert y.dtype == torch.float64


@pytest.mark.parametrize("sizes", [(9,), (6, 7), (3, 4, 5)])
def test_fft_conv_nd(sizes):
    kernel = torch.randn(3, *(2 * s - 1 for s in sizes))
    assert fft_conv_nd(torch.randn(0, 3, *sizes), kernel).shape == (0, 3, *sizes)


LAYERS = [
    pytest.param(lambda: S4(6, d_state=8), (6, 12), (6, 12), id="S4 causal"),
    pytest.param(lambda: S4(6, d_state=8, bidirectional=True), (6, 12), (6, 12), id="S4 bidirectional"),
    pytest.param(lambda: S4ND(4, 2, d_state=8, out_dim=5), (4, 6, 7), (5, 6, 7), id="S4ND"),
    pytest.param(lambda: S4ND(4, 2, d_state=8, stride=2), (4, 6, 6), (4, 3, 3), id="S4ND strided"),
    pytest.param(lambda: FlexConv(4, 1, out_dim=2), (4, 9), (2, 9), id="FlexConv 1d"),
    pytest.param(lambda: FlexConv(4, 2), (4, 6, 7), (4, 6, 7), id="FlexConv 2d"),
    pytest.param(lambda: FlexConv(4, 3), (4, 3, 4, 5), (4, 3, 4, 5), id="FlexConv 3d"),
    pytest.param(lambda: ViS4mer(8, 3, embed_dim=16, depth=2, d_state=8), (8, 8), (3,), id="ViS4mer"),
]


@pytest.mark.parametrize("build, shape, out_shape", LAYERS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_layers(build, shape, out_shape, mode):
    layer = getattr(build(), mode)()
    layer(torch.randn(2, *shape))  # a real batch first: sets reference grids, fills eval caches
    y = layer(torch.randn(0, *shape))
    assert y.shape == (0, *out_shape) and y.dtype == torch.float32


def test_s4_stream_and_step():
    layer = S4(6, d_state=8)
    y, state = layer.stream(torch.randn(0, 6, 5))
    assert y.shape == (0, 6, 5) and state.shape == (0, 6, 4, 2)
    y, state = layer.step(torch.randn(0, 6), state)
    assert y.shape == (0, 6) and state.shape == (0, 6, 4, 2)


@pytest.mark.parametrize("name", list_s4vision_models())
def test_models(name):
    kwargs, shape = _helpers.small_model(name)
    model = timm.create_model(name, **kwargs).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, *shape))
        empty = model(torch.randn(0, *shape))
    assert empty.shape == (0, logits.shape[1]) and empty.dtype == logits.dtype
