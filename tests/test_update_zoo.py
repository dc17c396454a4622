"""tools/update_zoo.py: a multi-seed sweep -> model_zoo/ files and manifest entries (on a copy of the zoo)."""
import json
from pathlib import Path

import pytest
import yaml

import s4vision.models.zoo as zoo
from _helpers import load_tool


@pytest.fixture
def tool(tmp_path, monkeypatch):
    module = load_tool("update_zoo")
    zoo_dir = tmp_path / "model_zoo"
    zoo_dir.mkdir()
    other = {"model": "other", "tag": "x", "file": "other.x.safetensors", "sha256": "0" * 64}
    (zoo_dir / "manifest.yaml").write_text(yaml.safe_dump({"checkpoints": [other]}))
    for target in (zoo, module):
        monkeypatch.setattr(target, "ZOO_DIR", zoo_dir)
        monkeypatch.setattr(target, "MANIFEST", zoo_dir / "manifest.yaml")
    return module


def _sweep_dir(path, *, split="test", max_steps=None, seeds=(0, 1, 2), models=("net_a", "net_b")):
    """A sweep directory as run_sweep writes it: per run a folder with weights and config.yaml."""
    runs = []
    for i, name in enumerate(models):
        for seed in seeds:
            run_dir = path / name / f"14px_seed{seed}"
            run_dir.mkdir(parents=True)
            (run_dir / "model.safetensors").write_bytes(bytes([i, seed]) * 5)
            (run_dir / "config.yaml").write_text(yaml.safe_dump({"train": {"max_steps": max_steps}}))
            runs.append({"label": name, "train_resolution": 14, "seed": seed, "run_dir": str(run_dir),
                         "command": f"s4vision train mnist5k_{name} train.seed={seed}", "params": 100 + i,
                         "val_top1": 90.0 + seed, "top1": {"native": {"7": 50.0 + seed, "14": 90.0 + 2 * seed}}})
    summary = {"split": split, "seeds": list(seeds), "machine": "m", "torch": "t", "runs": runs}
    (path / "sweep.json").write_text(json.dumps(summary))
    return path


def test_from_a_sweep_directory(tool, tmp_path, capsys):
    sweep = _sweep_dir(tmp_path / "sweep")
    assert tool.main(["--from", str(sweep), "--command", "s4vision sweep --out sweep", "--models", "net_a", "net_b"]) == 0
    text = tool.MANIFEST.read_text()
    assert text.startswith("# Checkpoints we trained ourselves (see README.md#model-zoo).")
    entries = {e["file"]: e for e in yaml.safe_load(text)["checkpoints"]}
    assert set(entries) == {"other.x.safetensors", "net_a.mnist5k.safetensors", "net_b.mnist5k.safetensors"}
    entry = entries["net_b.mnist5k.safetensors"]
    copied = tool.ZOO_DIR / "net_b.mnist5k.safetensors"
    assert copied.read_bytes() == bytes([1, 0]) * 5  # seed 0's weights ship
    assert entry["sha256"] == zoo.sha256sum(copied) and entry["bytes"] == 10 and entry["params"] == 101
    assert entry["accuracy"] == {7: 50.0, 14: 90.0} and entry["seed"] == 0 and entry["seeds"] == 3
    # mean and sample std over seeds 0, 1, 2: 7 px 50, 51, 52 -> 51 +- 1; 14 px 90, 92, 94 -> 92 +- 2
    assert entry["accuracy_mean"] == {7: 51.0, 14: 92.0} and entry["accuracy_std"] == {7: 1.0, 14: 2.0}
    assert entry["val_top1"] == 90.0 and entry["train_resolution"] == 14
    assert entry["command"] == "s4vision sweep --out sweep"
    assert entry["train_command"] == "s4vision train mnist5k_net_b train.seed=0"
    assert "net_a, net_b updated" in capsys.readouterr().out


def test_training_records_its_own_command(tool, tmp_path, monkeypatch):
    sweep_dir = tmp_path / "runs"
    seen = {}

    def run_sweep(entries, train_resolutions, test_resolutions, **kwargs):
        seen.update(labels=[e.label for e in entries], train=train_resolutions, test=test_resolutions, **kwargs)
        _sweep_dir(Path(kwargs["output_dir"]))

    monkeypatch.setattr(tool, "entries_for_configs", lambda names: [type("E", (), {"label": n})() for n in names])
    monkeypatch.setattr(tool, "run_sweep", run_sweep)
    argv = ["--models", "net_a", "net_b", "--out", str(sweep_dir), "--seeds", "3", "train.epochs=2"]
    assert tool.main(argv) == 0
    assert seen["labels"] == ["mnist5k_net_a", "mnist5k_net_b"] and seen["overrides"] == ["train.epochs=2"]
    assert seen["train"] == [14] and seen["split"] == "test" and list(seen["seeds"]) == [0, 1, 2]
    entries = yaml.safe_load(tool.MANIFEST.read_text())["checkpoints"]
    assert entries[-1]["command"] == "python tools/update_zoo.py " + " ".join(argv)


def test_refusals(tool, tmp_path, capsys):
    smoke = _sweep_dir(tmp_path / "smoke", max_steps=3)
    assert tool.main(["--from", str(smoke), "--command", "c"]) == 2
    assert "refusing to put smoke-test runs into the model zoo" in capsys.readouterr().err
    val = _sweep_dir(tmp_path / "val", split="val")
    assert tool.main(["--from", str(val), "--command", "c", "--models", "net_a"]) == 2
    assert "records test-split accuracy; this sweep measured 'val'" in capsys.readouterr().err
    partial = _sweep_dir(tmp_path / "partial", seeds=(0, 2))
    json_path = partial / "sweep.json"
    summary = json.loads(json_path.read_text())
    summary["seeds"] = [0, 1, 2]
    json_path.write_text(json.dumps(summary))
    assert tool.main(["--from", str(partial), "--command", "c", "--models", "net_a"]) == 2
    assert "finish it first" in capsys.readouterr().err
    # a sweep whose second model is unfinished replaces nothing, not even the first model's file
    half = _sweep_dir(tmp_path / "half", models=("net_a",))
    before = sorted(p.name for p in tool.ZOO_DIR.iterdir())
    assert tool.main(["--from", str(half), "--command", "c", "--models", "net_a", "net_b"]) == 2
    assert "net_b runs trained at 14px for seeds []" in capsys.readouterr().err
    assert sorted(p.name for p in tool.ZOO_DIR.iterdir()) == before
    assert tool.main(["--from", str(tmp_path / "nowhere"), "--command", "c"]) == 2
    assert "no sweep results" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main(["--from", str(smoke)])  # the command that produced it must be given
    assert "--from needs --command" in capsys.readouterr().err
