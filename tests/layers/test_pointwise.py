"""The small layers every model is built from: pointwise projections, channel norm, classifier
head and the fixed-size conv baseline, each against a plain torch reference."""
import pytest
import torch
import torch.nn.functional as F

from s4vision.layers import (
    ClassifierHeadNd,
    DepthwiseConvMixer,
    LayerNormNd,
    PointwiseConv,
    PointwiseMlp,
    create_activation,
    create_out_proj,
    pointwise_conv,
)


@pytest.mark.parametrize("spatial", [(7,), (4, 5), (2, 3, 4)])
def test_pointwise_conv_is_a_channel_matmul_at_every_position(spatial):
    layer = PointwiseConv(3, 5).double()
    x = torch.randn(2, 3, *spatial, dtype=torch.float64)
    ref = torch.einsum("oc,bc...->bo...", layer.weight[..., 0], x) + layer.bias.view(-1, *(1,) * len(spatial))
    torch.testing.assert_close(layer(x), ref)


@pytest.mark.parametrize("spatial", [(7,), (4, 5), (2, 3, 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_conv_function_matches_torch_conv(spatial, bias):
    """The functional form takes a ``conv*d`` weight ``(O, I, 1, ..., 1)`` as stored and gives
    that convolution (values and gradients)."""
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(spatial)]
    x = torch.randn(3, 4, *spatial, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4, *(1,) * len(spatial), dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True) if bias else None
    got, ref = pointwise_conv(x, w, b), conv(x, w, b)
    torch.testing.assert_close(got, ref)
    g = torch.randn_like(ref)
    inputs = [x, w] + ([b] if bias else [])
    for a, e in zip(torch.autograd.grad(got, inputs, g), torch.autograd.grad(ref, inputs, g)):
        torch.testing.assert_close(a, e)


def test_out_proj_kinds():
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    glu = create_out_proj("glu", 4, 6).double()
    h = torch.einsum("oc,bchw->bohw", glu.proj.weight[..., 0], x) + glu.proj.bias.view(-1, 1, 1)
    torch.testing.assert_close(glu(x), h[:, :6] * torch.sigmoid(h[:, 6:]))
    assert create_out_proj("linear", 4, 6)(x.float()).shape == (2, 6, 3, 3)
    assert create_out_proj(None, 4, 4)(x) is x
    with pytest.raises(ValueError, match="out_dim"):
        create_out_proj(None, 4, 6)
    with pytest.raises(ValueError, match="out_proj"):
        create_out_proj("mlp", 4, 4)
    with pytest.raises(ValueError, match="activation"):
        create_activation("swish")


def test_pointwise_mlp_matches_linear_layers_on_channels_last():
    mlp = PointwiseMlp(4, 8).double()
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    h = F.gelu(F.linear(x.movedim(1, -1), mlp.fc1.weight[..., 0], mlp.fc1.bias))
    ref = F.linear(h, mlp.fc2.weight[..., 0], mlp.fc2.bias).movedim(-1, 1)
    torch.testing.assert_close(mlp(x), ref)


@pytest.mark.parametrize("grad", [True, False], ids=["autograd", "no_grad"])  # layer_norm / along dim 1
@pytest.mark.parametrize("shape", [(2, 5), (2, 5, 7), (2, 5, 3, 4), (2, 5, 2, 3, 4)])
def test_layer_norm_nd_normalises_channels_at_each_position(shape, grad):
    norm = LayerNormNd(5).double()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = 3 + 2 * torch.randn(shape, dtype=torch.float64)
    ref = F.layer_norm(x.movedim(1, -1), (5,), norm.weight, norm.bias, 1e-6).movedim(-1, 1)
    with torch.set_grad_enabled(grad):
        out = norm(x)
    torch.testing.assert_close(out, ref)
    assert out.is_contiguous() and out.requires_grad == grad


@pytest.mark.parametrize("affine", [dict(elementwise_affine=False), dict(bias=False)], ids=["no_affine", "no_bias"])
def test_layer_norm_nd_without_affine_parameters(affine):
    norm = LayerNormNd(6, **affine)
    if norm.weight is not None:
        with torch.no_grad():
            norm.weight.normal_()
    x = torch.randn(3, 6, 4, 5)
    ref = F.layer_norm(x.movedim(1, -1), (6,), norm.weight, norm.bias, 1e-6).movedim(-1, 1)
    with torch.no_grad():
        torch.testing.assert_close(norm(x), ref)
    torch.testing.assert_close(norm(x), ref)


@pytest.mark.parametrize("pool", ["avg", "max", "avgmax"])
def test_classifier_head_pools_every_axis(pool):
    head = ClassifierHeadNd(4, 3, pool).double()
    x = torch.randn(2, 4, 3, 5, 6, dtype=torch.float64)
    flat = x.flatten(2)
    pooled = {"avg": flat.mean(-1), "max": flat.amax(-1), "avgmax": 0.5 * (flat.mean(-1) + flat.amax(-1))}[pool]
    torch.testing.assert_close(head(x, pre_logits=True), pooled)
    torch.testing.assert_close(head(x), F.linear(pooled, head.fc.weight, head.fc.bias))
    # no pooling: the classifier acts on every position
    per_position = ClassifierHeadNd(4, 3, "").double()
    y = per_position(x)
    assert y.shape == (2, 3, 3, 5, 6)
    torch.testing.assert_close(y[:, :, 1, 2, 3], per_position.fc(x[:, :, 1, 2, 3]))


def test_classifier_reset_keeps_device_and_dtype():
    head = ClassifierHeadNd(4, 3, "avg", dtype=torch.float64)
    head.reset(7, "max")
    assert head.fc.weight.dtype == torch.float64 and head.fc.out_features == 7 and head.pool_type == "max"
    head.reset(0)
    assert isinstance(head.fc, torch.nn.Identity)
    with pytest.raises(ValueError, match="global_pool"):
        head.reset(3, "median")


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_depthwise_conv_mixer_matches_torch_conv(ndim):
    mixer = DepthwiseConvMixer(3, ndim, kernel_size=3, out_proj="linear").double()
    x = torch.randn(2, 3, *(6,) * ndim, dtype=torch.float64)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[ndim]
    depthwise = conv(x, mixer.conv.weight, mixer.conv.bias, padding=1, groups=3)
    torch.testing.assert_close(mixer(x), mixer.out_proj(F.gelu(depthwise)))
