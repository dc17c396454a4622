"""Finding configs by name: the package's own (shipped as package data), user directories from
``$S4VISION_CONFIG_PATH`` and the command line's ``--config-dir``, and the error that lists them."""
import importlib
from pathlib import Path

import pytest

from s4vision.cli import main
from s4vision.engine import config as config_module
from s4vision.engine.config import CONFIG_DIR, CONFIG_PATH_ENV, list_configs, load_config, resolve_config_path

SHIPPED = "mnist5k_s4nd_iso_micro"


class _Stop(Exception):
    pass


def _write(directory: Path, name: str, epochs: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(f"model:\n  name: ccnn_micro\ntrain:\n  epochs: {epochs}\n")
    return path


def test_shipped_configs_are_package_data():
    assert CONFIG_DIR.parts[-3:] == ("s4vision", "_data", "configs")
    assert SHIPPED in list_configs()
    assert resolve_config_path(SHIPPED) == CONFIG_DIR / f"{SHIPPED}.yaml"
    assert resolve_config_path(f"{SHIPPED}.yaml") == CONFIG_DIR / f"{SHIPPED}.yaml"


def test_user_directories_from_the_environment(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    _write(first, "mine", 3)
    _write(second, "mine", 4)  # shadowed by the first directory
    _write(second, SHIPPED, 5)  # a user's config shadows the package's of the same name
    monkeypatch.setenv(CONFIG_PATH_ENV, f"{first}:{second}")
    assert resolve_config_path("mine") == first / "mine.yaml"
    assert load_config("mine").train.epochs == 3
    assert load_config(SHIPPED).train.epochs == 5
    assert {"mine", SHIPPED} <= set(list_configs())


def test_extra_directories_come_first(tmp_path, monkeypatch):
    _write(tmp_path / "env", "mine", 3)
    _write(tmp_path / "cli", "mine", 7)
    monkeypatch.setenv(CONFIG_PATH_ENV, str(tmp_path / "env"))
    assert resolve_config_path("mine", [tmp_path / "cli"]) == tmp_path / "cli" / "mine.yaml"


def test_an_unknown_name_lists_every_directory(tmp_path, monkeypatch):
    _write(tmp_path / "user", "mine", 3)
    monkeypatch.setenv(CONFIG_PATH_ENV, f"{tmp_path / 'user'}:{tmp_path / 'gone'}")
    with pytest.raises(FileNotFoundError) as err:
        resolve_config_path("nope")
    message = str(err.value)
    assert message.startswith("config file not found: nope")
    assert f"user configs {tmp_path / 'user'} has mine" in message
    assert f"user configs {tmp_path / 'gone'} (no such directory)" in message
    assert f"s4vision's configs {CONFIG_DIR} has " in message and SHIPPED in message


def test_missing_shipped_directory_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(config_module, "CONFIG_DIR", tmp_path / "absent")
    monkeypatch.delenv(CONFIG_PATH_ENV, raising=False)
    assert list_configs() == []
    with pytest.raises(FileNotFoundError, match=r"s4vision's configs .*absent \(no such directory\)"):
        resolve_config_path(SHIPPED)


def test_cli_config_dir_option(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(CONFIG_PATH_ENV, raising=False)
    _write(tmp_path / "cfgs", "mine", 1)
    seen = {}

    def train(cfg, resume=False):
        seen["cfg"] = cfg
        raise _Stop  # the config was found and loaded: no need to train

    monkeypatch.setattr(importlib.import_module("s4vision.engine.train"), "train", train)
    with pytest.raises(_Stop):
        main(["train", "mine", "--config-dir", str(tmp_path / "cfgs"), "train.epochs=2"])
    assert seen["cfg"].model.name == "ccnn_micro" and seen["cfg"].train.epochs == 2
    assert main(["train", "mine"]) == 2
    assert "config file not found: mine" in capsys.readouterr().err
