"""timm citizenship of every s4vision backbone, mirroring the checks of timm's own model tests.

Models run at small sizes; the big variants are only constructed (on the meta device) and
checked for their configuration and parameter counts.
"""
import fnmatch

import pytest
import torch
import timm
from safetensors.torch import save_file
from timm.models import group_parameters
from timm.optim import param_groups_weight_decay

import s4vision  # noqa: F401  (registers the models)
from s4vision.kernels.ssm import SSMKernelBase

ALL = [
    "s4nd_convnext_atto", "s4nd_convnext_femto", "s4nd_convnext_pico", "s4nd_convnext_nano",
    "s4nd_convnext_tiny", "s4nd_convnext_small", "s4nd_convnext_base",
    "s4nd_convnext3d_atto", "s4nd_convnext3d_tiny",
    "s4nd_vit_tiny_patch16", "s4nd_vit_small_patch16", "s4nd_vit_base_patch16",
    "s4nd_iso_micro", "conv2d_iso_micro",
    "ccnn_4_140", "ccnn_6_380", "ccnn_micro",
]
# Models run in the functional tests, with the (small) input used for them and the size
# arguments that make that input the training resolution.
RUN = {
    "s4nd_convnext_atto": dict(shape=(3, 64, 64), args=dict(img_size=64)),
    "s4nd_convnext3d_atto": dict(shape=(3, 4, 64, 64), args=dict(img_size=64, num_frames=4)),
    "s4nd_vit_tiny_patch16": dict(shape=(3, 64, 64), args=dict(img_size=64, depth=3)),
    "s4nd_iso_micro": dict(shape=(1, 14, 14), args={}),
    "conv2d_iso_micro": dict(shape=(1, 14, 14), args={}),
    "ccnn_micro": dict(shape=(1, 14, 14), args={}),
}
PAPER_IDS = {"s4nd_convnext": ("2210.06583", "2201.03545"), "s4nd_vit": ("2210.06583",),
             "s4nd_iso": ("2210.06583",), "conv2d_iso": ("2210.06583",), "ccnn": ("2301.10540",)}


def _create(name, **kwargs):
    return timm.create_model(name, **{**RUN[name]["args"], **kwargs})


def _input(name, batch=2, scale=1):
    c, *sizes = RUN[name]["shape"]
    if len(sizes) == 3:  # clips: only space is rescaled
        sizes = [sizes[0]] + [s * scale for s in sizes[1:]]
    else:
        sizes = [s * scale for s in sizes]
    return torch.randn(batch, c, *sizes)


@pytest.fixture(scope="module")
def built():
    """One eval-mode instance of every model in ``RUN``."""
    return {name: _create(name).eval() for name in RUN}


def _meta_model(name, **kwargs):
    if name.startswith("ccnn"):  # MAGNet normalises its output at construction: needs real tensors
        return timm.create_model(name, **kwargs)
    with torch.device("meta"):
        return timm.create_model(name, **kwargs)


def _count(model):
    return sum(p.numel() for p in model.parameters())


# -- registry and configs ----------------------------------------------------------------------


def test_all_models_registered():
    names = set(timm.list_models())
    assert set(ALL) <= names
    for name in ALL:
        assert timm.models.model_entrypoint(name).__module__.startswith("s4vision.models.")


@pytest.mark.parametrize("name", ALL)
def test_default_cfg_is_honest(name):
    model = _meta_model(name)
    cfg = model.pretrained_cfg
    for key in ("input_size", "pool_size", "crop_pct", "interpolation", "mean", "std",
                "first_conv", "classifier", "num_classes", "license", "paper_ids"):
        assert cfg.get(key) is not None, f"{name}: pretrained_cfg lacks {key}"
    in_chans = cfg["input_size"][0]
    assert model.in_chans == in_chans and len(cfg["mean"]) == len(cfg["std"]) == in_chans
    assert model.num_classes == cfg["num_classes"]
    family = next(k for k in PAPER_IDS if name.startswith(k))
    ids = cfg["paper_ids"] if isinstance(cfg["paper_ids"], (tuple, list)) else (cfg["paper_ids"],)
    for arxiv in PAPER_IDS[family]:
        assert any(arxiv in i for i in ids), f"{name}: paper_ids {ids} should cite arXiv:{arxiv}"
    state = model.state_dict()
    assert cfg["first_conv"] + ".weight" in state
    assert cfg["classifier"] + ".weight" in state
    # the training resolution is the config's input size ((C, T, H, W) for clips) and is stored in the checkpoint
    expected = tuple(cfg["input_size"][1:])
    assert len(expected) == (3 if "3d" in name else 2)
    assert model.train_resolution == expected
    assert tuple(state["grid.size"].shape) == (len(expected),)
    assert not [k for k in state if k.endswith(".grid.size")]  # layers' grids are views of the model's


def test_micro_defaults_and_zoo_tags():
    for name in ("s4nd_iso_micro", "conv2d_iso_micro", "ccnn_micro"):
        model = timm.create_model(name)
        cfg = model.pretrained_cfg
        assert (model.in_chans, model.num_classes, cfg["input_size"]) == (1, 10, (1, 14, 14))
        assert cfg["tag"] == "mnist5k"
        assert cfg["file"].endswith(f"model_zoo/{name}.mnist5k.safetensors")
        assert f"{name}.mnist5k" in timm.list_pretrained(f"{name}*")


@pytest.mark.parametrize("name, low, high", [
    ("s4nd_convnext_tiny", 29e6, 33e6),   # the S4ND paper's ConvNeXt-S4ND-T: ~30M
    ("ccnn_4_140", 0.15e6, 0.25e6),       # CCNN paper: ~0.2M on CIFAR-10
    ("ccnn_6_380", 1.8e6, 2.2e6),         # CCNN paper: ~2.0M on CIFAR-10
    ("s4nd_iso_micro", 50e3, 150e3),
    ("s4nd_vit_small_patch16", 18e6, 26e6),
])
def test_parameter_counts(name, low, high):
    assert low <= _count(_meta_model(name)) <= high


@pytest.mark.parametrize("name", ["s4nd_convnext_tiny", "s4nd_convnext_base", "s4nd_convnext3d_tiny",
                                  "s4nd_vit_base_patch16"])
def test_big_models_construct_on_meta(name):
    """Built without memory; the config's pool size is the input size over the last reduction."""
    model = _meta_model(name)
    assert all(p.device.type == "meta" for p in model.parameters())
    cfg = model.pretrained_cfg
    reduction = model.feature_info[-1]["reduction"]
    assert tuple(cfg["pool_size"][-2:]) == tuple(s // reduction for s in cfg["input_size"][-2:])
    assert model.feature_info[-1]["num_chs"] == model.num_features == model.head_hidden_size


# -- forward / backward ------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(RUN))
def test_runs_on_another_device(name, training):
    """Every tensor follows the input's device: the model runs (and, training, backpropagates) on
    the meta device, where an operand left on the host raises. Without a GPU this is the check
    that a model works on one; kernel caches and the CPU-only shortcuts (mode dropping, kernel
    crops) are skipped off the CPU, so the paths a GPU takes are the ones run."""
    model = _create(name).to("meta").train(training)
    x = _input(name, batch=2).to("meta")
    if training:
        y = model(x)
        y.sum().backward()
        assert all(p.grad is not None and p.grad.device.type == "meta" for p in model.parameters())
    else:
        with torch.no_grad():
            y = model(x)
    assert y.device.type == "meta" and y.shape == (2, model.num_classes)


@pytest.mark.parametrize("name", list(RUN))
def test_forward_at_several_sizes(built, name):
    model = built[name]
    with torch.no_grad():
        for scale in (1, 2):
            x = _input(name, batch=2, scale=scale)
            y = model(x)
            assert y.shape == (2, model.num_classes)
            assert torch.isfinite(y).all()
        if "3d" not in name:  # a non-square input
            c, h, w = RUN[name]["shape"]
            y = model(torch.randn(1, c, h, w + w // 2))
            assert y.shape == (1, model.num_classes) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", list(RUN))
def test_backward_reaches_every_parameter(name):
    model = _create(name, num_classes=7).train()
    y = model(_input(name, batch=2))
    assert y.shape == (2, 7)
    y.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", list(RUN))
def test_cfg_consistency_pool_size_and_heads(built, name):
    """timm's test_model_default_cfgs: forward_features at the config size matches pool_size,
    reset_classifier(0) pools to num_features, reset_classifier(0, '') leaves the feature map."""
    model = _create(name).eval()
    cfg_size = tuple(model.pretrained_cfg["input_size"])
    x = _input(name, batch=1)
    if "convnext" not in name:  # full config size is cheap for these
        x = torch.randn(1, *cfg_size)
        pool = tuple(model.pretrained_cfg["pool_size"])
    else:  # pool_size scaled to the reduced test input (a total stride of 32 in space)
        pool = tuple(x.shape[-2:][i] // 32 for i in range(2))
        if "3d" in name:
            pool = (x.shape[2] // 2,) + pool
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[1] == model.num_features and tuple(feats.shape[2:]) == pool
        assert model.forward_head(feats).shape == (1, model.num_classes)
        assert model.forward_head(feats, pre_logits=True).shape == (1, model.head_hidden_size)
        model.reset_classifier(0)
        assert isinstance(model.get_classifier(), torch.nn.Identity)
        assert model(x).shape == (1, model.num_features)
        model.reset_classifier(0, "")
        out = model(x)
        assert out.shape[1] == model.num_features and tuple(out.shape[2:]) == pool
        model.reset_classifier(5, "max")
        assert model(x).shape == (1, 5) and model.get_classifier().out_features == 5
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(3, "median")


def test_real_cfg_size_pool_size_for_2d_convnext():
    model = timm.create_model("s4nd_convnext_atto").eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, *model.pretrained_cfg["input_size"]))
    assert tuple(feats.shape[2:]) == model.pretrained_cfg["pool_size"]


# -- features ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(RUN))
def test_features_only_shapes_and_reductions(name):
    full = _create(name).eval()
    n = len(full.feature_info)
    out_indices = (0, n - 1) if n > 1 else (0,)
    model = _create(name, features_only=True, out_indices=out_indices).eval()
    x = _input(name, batch=1)
    with torch.no_grad():
        feats = model(x)
    info = model.feature_info
    assert len(feats) == len(out_indices) == len(info.channels())
    for f, chs, red in zip(feats, info.channels(), info.reduction()):
        assert f.shape[:2] == (1, chs)
        assert f.shape[-1] == x.shape[-1] // red and f.shape[-2] == x.shape[-2] // red


@pytest.mark.parametrize("name", list(RUN))
def test_forward_intermediates_match_forward_features(built, name):
    model = built[name]
    x = _input(name, batch=1)
    n = len(model.feature_info)
    with torch.no_grad():
        feats = model.forward_features(x)
        final, inter = model.forward_intermediates(x)
        assert len(inter) == n
        torch.testing.assert_close(final, feats)
        for t, info in zip(inter, model.feature_info):
            assert t.shape[1] == info["num_chs"]
        last2 = model.forward_intermediates(x, indices=2, intermediates_only=True)
        for a, b in zip(last2, inter[-2:]):
            torch.testing.assert_close(a, b)
        early = model.forward_intermediates(x, indices=[0], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[0], inter[0])
        normed = model.forward_intermediates(x, indices=[n - 1], norm=True, intermediates_only=True)
        torch.testing.assert_close(normed[0], feats)  # the final norm applied to the last output
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")


def test_forward_intermediates_nlc_for_isotropic(built):
    model = built["s4nd_iso_micro"]
    x = _input("s4nd_iso_micro", batch=1)
    with torch.no_grad():
        nchw = model.forward_intermediates(x, indices=[1], intermediates_only=True)[0]
        nlc = model.forward_intermediates(x, indices=[1], output_fmt="NLC", intermediates_only=True)[0]
    torch.testing.assert_close(nlc, nchw.flatten(2).transpose(1, 2))


@pytest.mark.parametrize("name", ["s4nd_convnext_atto", "s4nd_iso_micro", "ccnn_micro"])
def test_prune_intermediate_layers(name):
    model = _create(name).eval()
    x = _input(name, batch=1)
    with torch.no_grad():
        reference = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        kept = model.prune_intermediate_layers(indices=[0, 1])
        assert kept == [0, 1]
        again = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        out = model(x)
    for a, b in zip(reference, again):
        torch.testing.assert_close(a, b)
    assert out.ndim >= 3 and out.shape[1] == model.num_features == reference[1].shape[1]


# -- training helpers --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(RUN))
def test_grad_checkpointing_changes_nothing(name):
    torch.manual_seed(0)
    model = _create(name, num_classes=3).train()
    x = _input(name, batch=2)
    torch.manual_seed(1)  # same dropout masks in both passes
    y0 = model(x)
    y0.sum().backward()
    g0 = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    torch.manual_seed(1)
    y1 = model(x)
    y1.sum().backward()
    torch.testing.assert_close(y1, y0)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, g0[n], msg=lambda m: f"{n}: {m}")


@pytest.mark.parametrize("name", ["s4nd_convnext_atto", "s4nd_vit_tiny_patch16", "ccnn_micro", "conv2d_iso_micro"])
def test_no_weight_decay_names_ssm_params_norms_and_biases(name):
    model = _create(name)
    no_wd = model.no_weight_decay()
    params = dict(model.named_parameters())
    ssm = {f"{prefix}.{n}" for prefix, m in model.named_modules() if isinstance(m, SSMKernelBase)
           for n, _ in m.named_parameters(recurse=False)}
    if "s4nd" in name:
        assert any(n.endswith(".log_dt") for n in ssm) and any(n.endswith(".C") for n in ssm)
        assert any(n.endswith(".B") for n in ssm) and any(n.endswith(".log_A_real") for n in ssm)
    # exactly: the SSM parameters plus every bias, norm scale and other 1-d parameter
    assert no_wd == ssm | {n for n, p in params.items() if p.ndim <= 1}
    decayed = set(params) - no_wd
    assert any(n.endswith("fc.weight") for n in decayed)  # the classifier is decayed
    # timm's optimiser factory puts exactly these into its no-decay group
    groups = param_groups_weight_decay(model, 0.05, no_weight_decay_list=no_wd)
    zero = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert zero == {id(params[n]) for n in no_wd}


@pytest.mark.parametrize("name", list(RUN))
def test_group_matcher_covers_every_parameter(built, name):
    model = built[name]
    for coarse in (False, True):
        groups = group_parameters(model, model.group_matcher(coarse=coarse))
        grouped = [n for names in groups.values() for n in names]
        assert sorted(grouped) == sorted(n for n, _ in model.named_parameters())
        assert len(groups) >= 2
    assert any(fnmatch.fnmatch(n, "stem*") for n in groups[min(groups)])  # the stem comes first


# -- pretrained weights from local files -------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    import timm.models._builder as builder
    for fn in ("load_state_dict_from_url", "download_cached_file", "load_state_dict_from_hf"):
        if hasattr(builder, fn):
            monkeypatch.setattr(builder, fn, refuse)


@pytest.mark.parametrize("name", ["s4nd_convnext_atto", "s4nd_iso_micro", "ccnn_micro"])
def test_pretrained_loads_local_safetensors(tmp_path, no_network, name):
    source = _create(name)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / f"{name}.safetensors"
    save_file(state, str(path))
    overlay = dict(file=str(path))
    model = _create(name, pretrained=True, pretrained_cfg_overlay=overlay)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k], msg=lambda m: f"{k}: {m}")
    # a different number of classes: everything but the classifier is loaded
    model = _create(name, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=3)
    classifier = model.pretrained_cfg["classifier"]
    for k, v in model.state_dict().items():
        if k.startswith(classifier + "."):
            assert v.shape[0] == 3
        else:
            torch.testing.assert_close(v, state[k])


def test_pretrained_missing_zoo_file_names_file(tmp_path, no_network):
    missing = tmp_path / "s4nd_iso_micro.mnist5k.safetensors"
    with pytest.raises(FileNotFoundError, match="s4nd_iso_micro.mnist5k.safetensors"):
        timm.create_model("s4nd_iso_micro", pretrained=True, pretrained_cfg_overlay=dict(file=str(missing)))


def test_pretrained_corrupted_zoo_file_names_sha(tmp_path, no_network, monkeypatch):
    import s4vision.models.zoo as zoo

    path = tmp_path / "ccnn_micro.mnist5k.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("ccnn_micro").state_dict().items()}, str(path))
    monkeypatch.setattr(zoo, "manifest_entry",
                        lambda p: {"model": "ccnn_micro", "tag": "mnist5k", "file": path.name, "sha256": "0" * 64})
    with pytest.raises(ValueError, match="0" * 64):
        timm.create_model("ccnn_micro", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


# -- resolution --------------------------------------------------------------------------------


def test_train_resolution_reaches_every_layer():
    model = timm.create_model("s4nd_convnext_atto", img_size=96)
    assert model.train_resolution == (96, 96)
    assert model.stem.down.grid.sizes == (96, 96)
    assert model.stages[0].blocks[0].mixer.grid.sizes == (24, 24)
    assert model.stages[1].downsample[1].grid.sizes == (24, 24)
    assert model.stages[3].blocks[1].mixer.grid.sizes == (3, 3)
    # one definition: loading another training resolution into the model's grid moves every layer's
    state = model.state_dict()
    state["grid.size"] = torch.tensor([64, 32])
    model.load_state_dict(state)
    assert model.train_resolution == (64, 32)
    assert model.stages[0].blocks[0].mixer.grid.sizes == (16, 8)
    assert model.stages[3].blocks[1].mixer.grid.sizes == (2, 1)
    clip = timm.create_model("s4nd_convnext3d_atto", img_size=64, num_frames=8)
    assert clip.train_resolution == (8, 64, 64)
    assert clip.stages[1].blocks[0].mixer.grid.sizes == (4, 8, 8)  # time: stem only


# -- other dimensions and argument errors ------------------------------------------------------


@pytest.mark.parametrize("ndim, shape, args", [
    (1, (2, 3, 40), dict(seq_len=40)),
    (3, (1, 3, 4, 12, 12), dict(img_size=12, num_frames=4)),
])
def test_ccnn_other_dimensions(ndim, shape, args):
    model = timm.create_model("ccnn_micro", in_chans=3, ndim=ndim, **args).eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        y = model(x)
        feats = model.forward_features(x)
    assert y.shape == (shape[0], 10) and torch.isfinite(y).all()
    assert feats.shape[2:] == x.shape[2:]
    assert model.train_resolution == tuple(x.shape[2:])


@pytest.mark.parametrize("name, kwargs, match", [
    ("s4nd_convnext_atto", dict(ndim=4), "ndim"),
    ("s4nd_convnext_atto", dict(stem_type="conv"), "stem_type"),
    ("s4nd_convnext_atto", dict(downsample_type="pool"), "downsample_type"),
    ("s4nd_convnext_atto", dict(num_frames=8), "num_frames"),
    ("s4nd_convnext3d_atto", dict(num_frames=0), "num_frames"),
    ("s4nd_convnext_atto", dict(img_size=(32, 32, 32)), "img_size"),
    ("s4nd_iso_micro", dict(mixer="attention"), "mixer"),
    ("ccnn_micro", dict(ndim=1), "seq_len"),
    ("ccnn_micro", dict(norm_layer="groupnorm"), "norm_layer"),
    ("ccnn_micro", dict(global_pool="median"), "global_pool"),
])
def test_bad_arguments_raise_value_error(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        timm.create_model(name, **kwargs)


def test_wrong_input_rank_is_a_clear_error(built):
    with pytest.raises(ValueError, match="rank"):
        built["s4nd_iso_micro"](torch.randn(2, 1, 1, 14, 14))


def test_inference_mode_forward_with_band_limited_s4nd():
    model = _create("s4nd_iso_micro").eval()
    x = _input("s4nd_iso_micro", batch=1)
    with torch.inference_mode():  # first call: the kernels are computed in inference mode
        out = model(x)
    with torch.no_grad():
        torch.testing.assert_close(out, model(x))
