import pytest

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
        assert cfg.model.name and cfg.data.dataset
