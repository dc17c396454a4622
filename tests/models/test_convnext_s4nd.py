"""S4ND-ConvNeXt specifics: 2D -> 3D inflation, zero-shot resolution
change against timm's ConvNeXt, and torch.compile."""
import math
import warnings
from functools import partial

import pytest
import torch
import torch.nn.functional as F
import timm

import s4vision  # noqa: F401
import _helpers
from _helpers import assert_same_values_and_grads
from s4vision.layers import S4ND
from s4vision.models import S4NDConvNeXt, inflate_convnext_2d_to_3d

_AVG_POOL = {2: F.avg_pool2d, 3: F.avg_pool3d}


# -- 2D -> 3D inflation ------------------------------------------------------------------------


def _randomise(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("stem_type, downsample_type", [("s4nd", "s4nd"), ("patch", "conv")])
def test_inflation_carries_spatial_kernels(stem_type, downsample_type):
    kw = dict(stem_type=stem_type, downsample_type=downsample_type, img_size=32)
    model_2d = _randomise(timm.create_model("s4nd_convnext_atto", **kw)).eval()
    model_3d = timm.create_model("s4nd_convnext3d_atto", num_frames=4, **kw).eval()
    fresh = {k: v.clone() for k, v in model_3d.state_dict().items()}
    model_3d.load_state_dict(inflate_convnext_2d_to_3d(model_2d.state_dict(), model_3d))

    layers_2d = {n: m for n, m in model_2d.named_modules() if isinstance(m, S4ND)}
    layers_3d = {n: m for n, m in model_3d.named_modules() if isinstance(m, S4ND)}
    assert layers_2d.keys() == layers_3d.keys() and layers_2d
    with torch.no_grad():
        for name, layer_3d in layers_3d.items():
            layer_2d = layers_2d[name]
            hw = layer_2d.grid.sizes
            t = layer_3d.grid.sizes[0]
            assert layer_3d.grid.sizes == (t,) + hw  # the 3D model keeps its grids
            k3 = layer_3d.kernel_factors((t,) + hw)
            k2 = layer_2d.kernel_factors(hw)
            torch.testing.assert_close(k3[1], k2[0])  # H
            torch.testing.assert_close(k3[2], k2[1])  # W
            torch.testing.assert_close(layer_3d.D, layer_2d.D)
            for pname, p in layer_3d.ssm[0].named_parameters():  # time: the 3D model's own init
                torch.testing.assert_close(p, fresh[f"{name}.ssm.0.{pname}"])
    # pointwise / norm / MLP / head tensors are copied as they are
    state_2d, state_3d = model_2d.state_dict(), model_3d.state_dict()
    for key in ("stages.2.blocks.1.mlp.fc1.weight", "stages.3.blocks.0.gamma", "head.fc.weight", "head.norm.bias"):
        torch.testing.assert_close(state_3d[key], state_2d[key])


def test_inflated_patch_stem_sees_a_still_clip_as_the_image():
    """I3D inflation: for a clip of identical frames, the 3D stem returns the 2D stem's output
    at every time step."""
    kw = dict(stem_type="patch", downsample_type="conv", img_size=32)
    model_2d = _randomise(timm.create_model("s4nd_convnext_atto", **kw)).eval()
    model_3d = timm.create_model("s4nd_convnext3d_atto", num_frames=4, **kw).eval()
    model_3d.load_state_dict(inflate_convnext_2d_to_3d(model_2d.state_dict(), model_3d))
    image = torch.randn(2, 3, 32, 32)
    clip = image.unsqueeze(2).expand(-1, -1, 4, -1, -1)
    with torch.no_grad():
        y2, y3 = model_2d.stem(image), model_3d.stem(clip)
    assert y3.shape[2] == 2
    for t in range(2):
        torch.testing.assert_close(y3[:, :, t], y2, rtol=1e-4, atol=1e-5)


def test_inflation_rejects_mismatched_models():
    model_3d = timm.create_model("s4nd_convnext3d_atto", img_size=32, num_frames=4)
    other_width = timm.create_model("s4nd_convnext_femto", img_size=32).state_dict()
    with pytest.raises(ValueError, match="cannot inflate"):
        inflate_convnext_2d_to_3d(other_width, model_3d)
    missing = {k: v for k, v in timm.create_model("s4nd_convnext_atto", img_size=32).state_dict().items()
               if not k.startswith("stages.3")}
    with pytest.raises(ValueError, match="does not fit"):
        inflate_convnext_2d_to_3d(missing, model_3d)
    with pytest.raises(TypeError, match="3D"):
        inflate_convnext_2d_to_3d(missing, timm.create_model("s4nd_convnext_atto", img_size=32))
    # a different number of classes: keep the 3D head
    head_less = timm.create_model("s4nd_convnext_atto", img_size=32, num_classes=5).state_dict()
    model_3d.load_state_dict(inflate_convnext_2d_to_3d(head_less, model_3d, include_head=False))


# -- zero-shot resolution change ---------------------------------------------------------------


def smooth_images(size, channels=3, batch=2, max_freq=1, seed=0):
    """A smooth random field sampled at the cell centres of a ``size x size`` grid on [0, 1]^2:
    the same continuous image at every resolution."""
    g = torch.Generator().manual_seed(seed)
    u = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    x = torch.zeros(batch, channels, size, size, dtype=torch.float64)
    for _ in range(6):
        f = torch.randint(-max_freq, max_freq + 1, (2,), generator=g).double()
        phase = torch.rand(batch, channels, 1, 1, generator=g, dtype=torch.float64) * 2 * math.pi
        amp = torch.randn(batch, channels, 1, 1, generator=g, dtype=torch.float64)
        x += amp * torch.sin(2 * math.pi * (f[0] * u[:, None] + f[1] * u[None, :]) + phase)
    return x.float()


def logit_change_at_double_resolution(model, size, channels=3):
    """Relative L2 distance between the logits at ``size`` and at ``2 * size``."""
    model.eval()
    with torch.no_grad():
        a = model(smooth_images(size, channels))
        b = model(smooth_images(2 * size, channels))
    return ((b - a).norm() / a.norm()).item()


RESOLUTION_THRESHOLD = 0.15


def test_s4nd_convnext_is_consistent_across_resolution_where_convnext_is_not():
    """Both models at initialisation with layer scale 1 (so every block contributes), trained size
    128, evaluated at 128 and 256 on the same smooth images. Measured over 3 seeds:
    S4ND-ConvNeXt 0.05-0.07, timm's ConvNeXt 0.36-0.39."""
    torch.manual_seed(0)
    s4nd = timm.create_model("s4nd_convnext_atto", img_size=128, ls_init_value=1.0)
    convnext = timm.create_model("convnext_atto", ls_init_value=1.0)
    assert logit_change_at_double_resolution(s4nd, 128) < RESOLUTION_THRESHOLD
    assert logit_change_at_double_resolution(convnext, 128) > RESOLUTION_THRESHOLD


@pytest.mark.parametrize("name", ["s4nd_iso_micro", "ccnn_micro"])
def test_micro_models_across_resolution(name):
    """14 -> 28 pixels. Measured against how much the logits vary between the images of the
    batch, so a model whose logits ignore the input cannot pass. Measured: ~0.07 (S4ND), ~0.01
    (CCNN). (At initialisation and on smooth images the 5x5-conv baseline is not far off either,
    ~0.1-0.17: the gap between them shows after training on digits, see the demo.)"""
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    with torch.no_grad():
        a = model(smooth_images(14, channels=1, batch=4))
        b = model(smooth_images(28, channels=1, batch=4))
    spread = (a - a.mean(0)).norm()
    assert spread > 1e-3 * a.norm()
    assert (b - a).norm() / spread < RESOLUTION_THRESHOLD


# -- torch.compile -----------------------------------------------------------------------------


@_helpers.needs_compile
def test_torch_compile_captures_whole_model():
    """Dynamo traces s4nd_convnext_atto as a single graph (``fullgraph=True``: no graph breaks),
    without warnings (e.g. about a memoised function it cannot see through), and the compiled
    model matches eager; the inductor backend is exercised in test_compile.py."""
    torch._dynamo.reset()
    model = timm.create_model("s4nd_convnext_atto", img_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = compiled(x)
        torch.testing.assert_close(out, expected)
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("size", [32, 30])  # 30: a trailing partial window dropped
def test_stem_pools_the_skip_before_projecting(size):
    """The stem averages the image for the S4ND skip term before its pointwise projection
    (linearity); the result equals the modules applied in order (projection, then the strided
    layer pooling its own input), values and gradients."""
    torch.manual_seed(0)
    model = timm.create_model("s4nd_convnext_atto", img_size=32).double()
    stem = model.stem
    x = torch.randn(2, 3, size, size, dtype=torch.float64, requires_grad=True)
    inputs = [x, *stem.parameters()]
    assert_same_values_and_grads(stem(x), stem.norm(stem.down(stem.proj_in(x))), inputs, inputs)


@pytest.mark.parametrize("size", [(40, 36), (42, 37)])  # (42, 37): trailing partial windows dropped
def test_stem_inference_projects_in_channel_groups(size, monkeypatch):
    """In CPU inference the stem's 32-channel projection is formed a few channels of one image at a
    time (groups of 5 here: a partial last group); the output is that of its modules in order."""
    from s4vision.ops import separable

    torch.manual_seed(0)
    stem = timm.create_model("s4nd_convnext_atto", img_size=32).eval().stem
    x = torch.randn(3, 3, *size)
    monkeypatch.setattr(separable, "_GROUP_BYTES", 5 * math.prod(size) * 4)
    with torch.no_grad():
        torch.testing.assert_close(stem(x), stem.norm(stem.down(stem.proj_in(x))))


@pytest.mark.parametrize("gamma", [True, False], ids=["layer_scale", "no_layer_scale"])
def test_block_inference_in_chunks_of_positions(gamma, monkeypatch):
    """In CPU inference a block runs its norm and MLP a chunk of positions at a time (here 7: a
    partial last chunk); the output is the plain form's (autograd on), and training mode or
    autograd keep the plain form."""
    import s4vision.models.convnext_s4nd as convnext_s4nd
    from s4vision.models.convnext_s4nd import S4NDConvNeXtBlock
    from s4vision.sampling import ReferenceGrid

    torch.manual_seed(0)
    block = S4NDConvNeXtBlock(8, partial(S4ND, d_state=8, activation=None, out_proj=None), ReferenceGrid(2, (5, 6)).view(1),
                              ls_init_value=0.5 if gamma else None).eval()
    x = torch.randn(2, 8, 5, 6)
    expected = block(x)  # autograd on: the plain form
    assert expected.requires_grad
    monkeypatch.setattr(convnext_s4nd, "_MLP_CHUNK_POSITIONS", 7)
    calls = []
    monkeypatch.setattr(block.mlp, "forward", lambda h, f=block.mlp.forward: calls.append(h.shape) or f(h))
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected.detach())
    assert calls == [(7, 8)] * 8 + [(4, 8)]  # 60 positions
    calls.clear()
    with torch.no_grad():
        block.train()(x)
    assert calls == [(2, 5, 6, 8)]


def test_model_class_direct_construction_validates():
    with pytest.raises(ValueError, match="num_frames"):
        S4NDConvNeXt(ndim=3, img_size=32, depths=(1, 1, 1, 1), dims=(8, 8, 8, 8))
    with pytest.raises(ValueError, match="4 stages"):
        S4NDConvNeXt(img_size=32, depths=(1, 1, 1), dims=(8, 8, 8))
