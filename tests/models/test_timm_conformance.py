"""timm citizenship checked without a download: the parts of timm's own ``tests/test_models.py``
(run in full by ``tools/timm_conformance.py``) that failed before, on small inputs.

* ``torch.fx``: tracing with timm's tracer settings, forward equal to eager, backward reaching
  every parameter, ``features_only=True, feature_cls="fx"``; eager input checks unchanged.
* the ``meta`` device: every registered model builds there, takes ``device``/``dtype``, runs
  ``forward_features`` to its config's ``pool_size``, and keeps device, dtype and mode through
  ``reset_classifier``.
* configs: ``input_size`` is ``(C, *training resolution)`` (``(C, T, H, W)`` for clips) and
  ``timm.data.resolve_data_config`` / ``create_transform`` work from every model's config.
* sharing weights the timm way (``save_for_hf``, loaded back from the folder), offline.
"""
import json

import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config
from timm.models import get_notrace_functions, get_notrace_modules, save_for_hf
from torchvision.models.feature_extraction import NodePathTracer, create_feature_extractor, get_graph_node_names

import s4vision  # noqa: F401  (registers the models)
from s4vision.engine.factory import list_s4vision_models
from s4vision.errors import InvalidValueError

ALL = list_s4vision_models()
# Small instances of every family (and the clip model): constructor arguments, input shape.
SMALL = {
    "s4nd_iso_micro": ({}, (1, 14, 14)),
    "conv2d_iso_micro": ({}, (1, 14, 14)),
    "ccnn_micro": ({}, (1, 14, 14)),
    "s4nd_vit_tiny_patch16": (dict(img_size=32, depth=3), (3, 32, 32)),
    "s4nd_convnext_atto": (dict(img_size=32), (3, 32, 32)),
    "s4nd_convnext3d_atto": (dict(img_size=32, num_frames=2), (3, 2, 32, 32)),
}
TRACER_KWARGS = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())


def _small(name, **kwargs):
    args, shape = SMALL[name]
    return timm.create_model(name, **{**args, **kwargs}), torch.randn(2, *shape)


def test_every_registered_model_is_covered():
    assert len(ALL) == 17 and set(SMALL) <= set(ALL)


# -- torch.fx -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SMALL))
def test_fx_forward_matches_eager(name):
    """timm's test_model_forward_fx: torchvision's feature extractor with timm's tracer settings."""
    model, x = _small(name)
    model.eval()
    _, eval_nodes = get_graph_node_names(model, tracer_kwargs=TRACER_KWARGS)
    traced = create_feature_extractor(model, return_nodes=[eval_nodes[-1]], tracer_kwargs=TRACER_KWARGS)
    with torch.no_grad():
        expected = model(x)
        (out,) = traced(x).values()
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(SMALL))
def test_fx_backward_reaches_every_parameter(name):
    """timm's test_model_backward_fx."""
    model, x = _small(name, num_classes=7)
    model.train()
    graph = NodePathTracer(**TRACER_KWARGS).trace(model)
    output_node = next(n for n in graph.nodes if n.op == "output")
    train_nodes, _ = get_graph_node_names(model, tracer_kwargs=TRACER_KWARGS)
    names = [n.name for n in graph.nodes]
    returns = [train_nodes[names.index(n.name)] for n in output_node.all_input_nodes]
    traced = create_feature_extractor(model, train_return_nodes=returns, eval_return_nodes=returns,
                                      tracer_kwargs=TRACER_KWARGS)
    (out,) = traced(x).values()
    assert out.shape == (2, 7)
    out.mean().backward()
    missing = [n for n, p in traced.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"


@pytest.mark.parametrize("name", list(SMALL))
def test_fx_features_only_matches_getter(name):
    """``features_only=True, feature_cls="fx"`` (a traced graph) gives the getter's features."""
    args, shape = SMALL[name]
    torch.manual_seed(0)
    fx = timm.create_model(name, features_only=True, feature_cls="fx", **args).eval()
    torch.manual_seed(0)
    getter = timm.create_model(name, features_only=True, **args).eval()
    x = torch.randn(1, *shape)
    with torch.no_grad():
        got, expected = fx(x), getter(x)
    assert len(got) == len(expected) == len(fx.feature_info.channels())
    for a, b, chs in zip(got, expected, fx.feature_info.channels()):
        assert a.shape[1] == chs
        torch.testing.assert_close(a, b)


def test_input_checks_still_apply_in_eager_mode():
    model, x = _small("s4nd_iso_micro")
    create_feature_extractor(model.eval(), return_nodes=["head"], tracer_kwargs=TRACER_KWARGS)  # a trace
    with pytest.raises(InvalidValueError, match="rank 4"):
        model(x[0])
    with pytest.raises(InvalidValueError, match="channels"):
        model(torch.randn(2, 3, 14, 14))


# -- the meta device, device / dtype, reset_classifier ------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_builds_and_runs_on_meta(name):
    """timm's test_model_default_cfgs runs every model on the meta device."""
    with torch.device("meta"):
        model = timm.create_model(name, device="meta", dtype=torch.float32).eval()
    tensors = [*model.parameters(), *model.buffers()]
    assert tensors and all(t.device.type == "meta" for t in tensors)
    cfg = model.pretrained_cfg
    x = torch.randn(1, *cfg["input_size"], device="meta")
    features = model.forward_features(x)
    assert tuple(features.shape[2:]) == tuple(cfg["pool_size"]) and features.shape[1] == model.num_features
    model.to(torch.bfloat16)
    assert model(x.to(torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.parametrize("name", ["s4nd_iso_micro", "ccnn_micro", "s4nd_convnext_atto"])
def test_reset_classifier_keeps_device_dtype_and_mode(name):
    model, x = _small(name)
    model.to(torch.float64).eval()
    for num_classes in (0, 5):
        model.reset_classifier(num_classes)
    fc = model.get_classifier()
    assert fc.weight.dtype == torch.float64 and not fc.training
    assert model(x.double()).shape == (2, 5)


# -- configs: honest input sizes, data configs, transforms --------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_input_size_is_the_training_resolution_and_transforms_work(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    cfg = model.pretrained_cfg
    assert tuple(cfg["input_size"][1:]) == model.train_resolution  # (C, T, H, W) for clips
    assert len(cfg.get("min_input_size") or cfg["input_size"]) == len(cfg["input_size"])
    data_cfg = resolve_data_config(model=model)
    assert tuple(data_cfg["input_size"]) == tuple(cfg["input_size"])
    transform = create_transform(**data_cfg)
    channels, height, width = cfg["input_size"][0], *cfg["input_size"][-2:]
    frame = transform(Image.new("L" if channels == 1 else "RGB", (2 * width, 2 * height)))
    assert tuple(frame.shape) == (channels, height, width)  # a clip is a stack of such frames


# -- sharing weights the timm way ---------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    import timm.models._builder as builder
    import timm.models._hub as hub
    for module in (builder, hub):
        for fn in ("load_state_dict_from_url", "download_cached_file", "load_state_dict_from_hf", "hf_hub_download"):
            if hasattr(module, fn):
                monkeypatch.setattr(module, fn, refuse)


@pytest.mark.parametrize("name, args", [
    ("s4nd_iso_micro", dict(img_size=21)),
    ("ccnn_micro", dict(img_size=18)),
    ("s4nd_convnext3d_atto", dict(img_size=32, num_frames=4)),
])
def test_save_for_hf_folder_loads_back_with_its_training_resolution(tmp_path, no_network, name, args):
    source = timm.create_model(name, **args)  # trained at a resolution other than its config's
    save_for_hf(source, tmp_path, safe_serialization=True)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors"}
    assert json.loads((tmp_path / "config.json").read_text())["architecture"] == name
    expected = source.state_dict()
    for model in (
        timm.create_model(f"local-dir:{tmp_path}", pretrained=True),
        timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "model.safetensors"))),
    ):
        assert model.train_resolution == source.train_resolution
        state = model.state_dict()
        assert state.keys() == expected.keys()
        for key, value in expected.items():
            assert torch.equal(state[key], value), key
