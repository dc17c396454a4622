"""Arguments a layer or model cannot work with are refused at construction (or at the call, for
call arguments), with a message naming the argument and value, never later inside forward."""
import pytest
import timm
import torch

from s4vision.errors import S4VisionError
from s4vision.layers import S4, S4ND, FlexConv


@pytest.mark.parametrize("build, match", [
    (lambda: FlexConv(4, out_dim=0), "out_dim must be a positive integer, got 0"),
    (lambda: FlexConv(0), "dim must be a positive integer, got 0"),
    (lambda: S4ND(4, out_dim=0), "out_dim must be a positive integer, got 0"),
    (lambda: S4(4, out_dim=-1), "out_dim must be a positive integer, got -1"),
    (lambda: timm.create_model("ccnn_micro", in_chans=0), "in_chans must be a positive integer, got 0"),
    (lambda: timm.create_model("s4nd_iso_micro", in_chans=0), "in_chans must be a positive integer, got 0"),
    (lambda: timm.create_model("s4nd_convnext_atto", in_chans=0), "in_chans must be a positive integer, got 0"),
    (lambda: timm.create_model("s4nd_convnext3d_atto", in_chans=-2), "in_chans must be a positive integer, got -2"),
])
def test_bad_sizes_are_refused_at_construction(build, match):
    with pytest.raises(ValueError, match=match) as info:
        build()
    assert isinstance(info.value, S4VisionError)


@pytest.mark.parametrize("layer, x", [
    (lambda: S4ND(4, 2, d_state=8), torch.randn(1, 4, 5, 5)),
    (lambda: FlexConv(4, 2), torch.randn(1, 4, 5, 5)),
    (lambda: S4(4, d_state=8), torch.randn(1, 4, 6)),
])
def test_a_rate_that_is_not_a_number_is_named(layer, x):
    with pytest.raises(TypeError, match="rate must be a positive number .*got 'fast'"):
        layer()(x, rate="fast")
