"""CCNN specifics: the paper's FlexConv mask in the named configurations, and the in-place
inference path of its blocks against the recorded (autograd) one."""
import math

import pytest
import timm
import torch

import s4vision  # noqa: F401  (registers the models)
from s4vision.layers.flexconv import NEGLIGIBLE_MASK


def _flexconvs(model):
    return [model.stem.conv] + [block.conv for block in model.blocks]


@pytest.mark.parametrize("name", ["ccnn_4_140", "ccnn_6_380"])
def test_named_configurations_use_the_papers_mask(name):
    model = timm.create_model(name)
    for conv in _flexconvs(model):
        # the paper: sigma 0.075 on kernel coordinates spanning [-1, 1] over the image, threshold 0.1
        torch.testing.assert_close(conv.mask.log_sigma.exp(), torch.full((2,), 0.075 / 2))
        assert conv.mask_threshold == 0.1
        # the mask drops below 0.1 at 0.0375 * sqrt(2 ln 10) = 8% of the image from the centre
        assert conv.crop((224, 224)) == (math.floor(0.0375 * math.sqrt(2 * math.log(10)) * 224),) * 2


def test_other_configurations_keep_every_tap():
    model = timm.create_model("ccnn_micro")
    for conv in _flexconvs(model):
        assert conv.mask_threshold == NEGLIGIBLE_MASK and conv.crop((14, 14)) == (13, 13)


@pytest.mark.parametrize("drop_path_rate", [0.0, 0.3])
def test_block_inference_path_matches_the_autograd_path(drop_path_rate):
    model = timm.create_model("ccnn_micro", depth=2, drop_path_rate=drop_path_rate).double().eval()
    x = torch.randn(2, 1, 10, 12, dtype=torch.float64)
    h = model.stem(x)
    h_copy = h.clone()
    for block in model.blocks:
        with torch.no_grad():
            fast = block(h)
        torch.testing.assert_close(h, h_copy)  # the block's input is left alone
        torch.testing.assert_close(fast, block(h).detach())
        h = h_copy = fast
