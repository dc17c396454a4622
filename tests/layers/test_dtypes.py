"""Every layer and every registered model in every floating dtype it can be cast to.

``model.to(dtype)`` must give a model that runs and computes the same function as its float64
copy (same weights) to within that dtype's precision; in training, gradients reach every
parameter in the parameter's dtype. Tested on CPU in all four floating dtypes torch has:
float32, float64, bfloat16 and float16 (torch >= 2.1 runs every op these models use in float16
on CPU; complex dtypes are not floating dtypes a model is cast to). Kernels and FFTs still run
in float32 inside half-precision layers (see the layer docs); inputs and outputs keep the
model's dtype.
"""
import copy

import pytest
import timm
import torch

import _helpers
from s4vision.engine.factory import list_s4vision_models
from s4vision.layers import S4, S4ND, FlexConv
from s4vision.models import ViS4mer

# relative L2 error against the float64 copy: each dtype's unit roundoff times a small margin
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 5e-2, torch.float16: 1e-2}
DTYPES = list(TOLERANCE)


def _layers():
    yield "S4 causal", lambda: S4(6, d_state=8), (6, 12)
    yield "S4 bidirectional", lambda: S4(6, d_state=8, bidirectional=True), (6, 12)
    yield "S4ND 2d", lambda: S4ND(4, 2, d_state=8, channels=2, rank=2), (4, 6, 7)
    yield "S4ND 3d strided", lambda: S4ND(4, 3, d_state=8, stride=2), (4, 4, 6, 6)
    for ndim, sizes in ((1, (9,)), (2, (6, 7)), (3, (3, 4, 5))):
        yield f"FlexConv {ndim}d", lambda ndim=ndim: FlexConv(4, ndim, activation="gelu"), (4, *sizes)
    yield "ViS4mer", lambda: ViS4mer(8, 3, embed_dim=16, depth=2, d_state=8, bidirectional=False), (8, 8)


def _models():
    for name in list_s4vision_models():
        kwargs, shape = _helpers.small_model(name)
        yield name, lambda name=name, kwargs=kwargs: timm.create_model(name, **kwargs), shape


CASES = [pytest.param(build, shape, id=label) for label, build, shape in [*_layers(), *_models()]]


def _relative_error(y, reference):
    return ((y.double() - reference).norm() / reference.norm()).item()


@pytest.mark.parametrize("build, shape", CASES)
def test_a_cast_module_computes_the_same_function(build, shape):
    torch.manual_seed(0)
    reference_module = build().double().eval()
    x = torch.randn(2, *shape, dtype=torch.float64)
    with torch.no_grad():
        reference = reference_module(x)
    for dtype in DTYPES:
        module = copy.deepcopy(reference_module).to(dtype)
        with torch.no_grad():
            y = module(x.to(dtype))
        assert y.dtype == dtype and y.shape == reference.shape
        assert _relative_error(y, reference) < TOLERANCE[dtype], dtype


@pytest.mark.parametrize("build, shape", CASES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_a_half_precision_module_trains(build, shape, dtype):
    torch.manual_seed(0)
    module = build().to(dtype).train()
    y = module(torch.randn(2, *shape, dtype=dtype))
    y.float().square().mean().backward()
    for name, param in module.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, name
            assert param.grad.dtype == dtype and torch.isfinite(param.grad).all(), name
