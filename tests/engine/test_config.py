import dataclasses

import pytest

from s4vision.engine import config as config_module
from s4vision.engine.config import CONFIG_DIR, list_configs, load_config, resolution_at_epoch


def test_yaml_then_overrides_take_precedence(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("model:\n  name: resnet10t\n  kwargs: {drop_rate: 0.2}\ntrain:\n  epochs: 7\n  seed: 3\n")
    cfg = load_config(path, ["train.epochs=2", "optim.lr=0.5", "model.kwargs.width=8"])
    assert cfg.model.name == "resnet10t" and cfg.train.seed == 3  # from the file
    assert cfg.train.epochs == 2 and cfg.optim.lr == 0.5  # overrides win
    assert cfg.model.kwargs == {"drop_rate": 0.2, "width": 8}  # free-form dict merged
    assert cfg.data.dataset == "mnist5k"  # untouched default


def test_unknown_key_names_the_key_and_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config key 'train\.epoch'; valid keys in section 'train': epochs,"):
        load_config(None, ["train.epoch=3"])
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"'optim\.learning_rate'.*lr, ssm_lr"):
        load_config(path)
    with pytest.raises(ValueError, match="unknown config key 'trainer'.*model, data, optim, train, eval"):
        load_config(None, ["trainer.epochs=3"])


def test_bad_values_are_rejected():
    with pytest.raises(ValueError, match="train.epochs"):
        load_config(None, ["train.epochs=many"])
    with pytest.raises(ValueError, match="train.amp='fp8'"):
        load_config(None, ["train.amp=fp8"])
    with pytest.raises(ValueError, match="start at epoch 0"):
        load_config(None, ["train.progressive=[[1,10]]"])
    with pytest.raises(ValueError, match="key=value"):
        load_config(None, ["train.epochs"])
    with pytest.raises(FileNotFoundError, match="no_such_config"):
        load_config("no_such_config")


def test_progressive_schedule():
    cfg = load_config(None, ["train.progressive=[[3,14],[0,10],[5,20]]"])
    assert [resolution_at_epoch(cfg, e) for e in range(7)] == [10, 10, 10, 14, 14, 20, 20]
    plain = load_config(None, ["data.resolution=12"])
    assert resolution_at_epoch(plain, 4) == 12


def test_shipped_configs_load():
    names = list_configs()
    assert names, f"no configs in {CONFIG_DIR}"
    for name in names:
        cfg = load_config(name)
        assert cfg.model.name and (cfg.data.dataset if cfg.task == "image" else cfg.video.train and cfg.video.eval)


# -- the schema: every numeric range checked up front ------------------------------------------


@pytest.mark.parametrize("override, match", [
    ("data.augment.scale=[1.5,0.2]", r"data\.augment\.scale=\[1\.5, 0\.2\] is out of range: must be a pair"),
    ("data.augment.scale=[0.5,0.2]", r"data\.augment\.scale=\[0\.5, 0\.2\].*a <= b"),
    ("data.augment.scale=[0.0,1.0]", r"data\.augment\.scale.*\(0, 1\]"),
    ("data.augment.ratio=[-1.0,1.0]", r"data\.augment\.ratio.*> 0"),
    ("data.augment.hflip=1.5", r"data\.augment\.hflip=1\.5.*\[0, 1\]"),
    ("data.augment.blur_sigma=[0.0,1.0]", r"data\.augment\.blur_sigma"),
    ("data.batch_size=0", r"data\.batch_size=0.*integer >= 1"),
    ("data.num_workers=-1", r"data\.num_workers=-1.*integer >= 0"),
    ("data.interpolation=area", r"data\.interpolation='area' is not one of bilinear"),
    ("data.bad_images=ignore", r"data\.bad_images='ignore' is not one of stop, skip"),
    ("optim.lr=0", r"optim\.lr=0\.0.*> 0"),
    ("optim.lr=nan", r"optim\.lr=nan"),
    ("optim.betas=[0.9,1.0]", r"optim\.betas=\[0\.9, 1\.0\].*each value must be a number in \[0, 1\)"),
    ("optim.min_lr_ratio=2", r"optim\.min_lr_ratio"),
    ("optim.label_smoothing=1", r"optim\.label_smoothing"),
    ("optim.clip_grad=0", r"optim\.clip_grad"),
    ("optim.warmup_epochs=-1", r"optim\.warmup_epochs"),
    ("train.ema_decay=1", r"train\.ema_decay=1\.0.*\(0, 1\)"),
    ("train.keep_checkpoints=0", r"train\.keep_checkpoints"),
    ("train.threads=0", r"train\.threads"),
    ("eval.resolutions=[14,0]", r"eval\.resolutions=\[14, 0\].*each value must be an integer >= 1"),
])
def test_out_of_range_values_are_refused_at_load_time(override, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, [override])


def _leaves(cls, prefix=""):
    for f in dataclasses.fields(cls):
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if kind.endswith("Config"):
            yield from _leaves(getattr(config_module, kind), f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", kind, f.metadata


def test_every_numeric_field_declares_its_range():
    """A new int / float field without a declared range fails here, so no range goes unchecked."""
    numeric = [(key, kind, meta) for key, kind, meta in _leaves(config_module.ExperimentConfig)
               if any(t in kind for t in ("int", "float")) and key != "train.progressive"]
    assert len(numeric) > 20
    undeclared = [key for key, _, meta in numeric if "schema" not in meta]
    assert undeclared == []


def test_validate_config_checks_objects_built_without_load_config():
    cfg = load_config(None)
    cfg.data.augment.scale = (1.5, 0.2)
    with pytest.raises(ValueError, match="data.augment.scale"):
        config_module.validate_config(cfg)


def test_video_settings_are_checked_together():
    video = ["task=video_clips", "model.name=vis4mer", "model.encoder=test_convnext", "video.train=a.csv",
             "video.eval=b.csv"]
    assert load_config(None, video).video.num_frames == 16
    with pytest.raises(ValueError, match="task=video_features needs video.eval: a feature cache"):
        load_config(None, ["task=video_features", "video.train=f"])
    with pytest.raises(ValueError, match="video.eval_windows=sliding needs video.sampler=window"):
        load_config(None, [*video, "video.eval_windows=sliding"])
    with pytest.raises(ValueError, match="video.fps sets the window sampler's rate"):
        load_config(None, [*video, "video.fps=4"])
    with pytest.raises(ValueError, match="video.num_frames=null .* is for task=video_features"):
        load_config(None, [*video, "video.num_frames=null"])
    with pytest.raises(ValueError, match="train.progressive is for images"):
        load_config(None, [*video, "train.progressive=[[0,8]]"])
    with pytest.raises(ValueError, match="video.short='stretch' is not one of reject, loop, pad"):
        load_config(None, [*video, "video.short=stretch"])
    with pytest.raises(ValueError, match="task='videos' is not one of image, video_features, video_clips"):
        load_config(None, ["task=videos"])
