"""tools/update_zoo.py: demo runs -> model_zoo/ files and manifest entries (on a copy of the zoo)."""
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

import s4vision.models.zoo as zoo

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tool(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("update_zoo", ROOT / "tools" / "update_zoo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    zoo_dir = tmp_path / "model_zoo"
    zoo_dir.mkdir()
    other = {"model": "other", "tag": "x", "file": "other.x.safetensors", "sha256": "0" * 64}
    (zoo_dir / "manifest.yaml").write_text(yaml.safe_dump({"checkpoints": [other]}))
    for target in (zoo, module):
        monkeypatch.setattr(target, "ZOO_DIR", zoo_dir)
        monkeypatch.setattr(target, "MANIFEST", zoo_dir / "manifest.yaml")
    return module


def _demo_dir(path, quick=False):
    results = {"quick": quick, "train_resolution": 14, "machine": "m", "torch": "t", "models": {}}
    for i, name in enumerate(("net_a", "net_b")):
        (path / name).mkdir(parents=True)
        (path / name / "model.safetensors").write_bytes(bytes([i]) * 10)
        results["models"][name] = {"top1": {"7": 50.0, "14": 90.5}, "params": 100 + i, "config": None,
                                   "weights": f"elsewhere/{name}/model.safetensors"}
    (path / "results.json").write_text(json.dumps(results))
    return path


def test_from_a_demo_directory(tool, tmp_path, capsys):
    demo = _demo_dir(tmp_path / "demo")
    assert tool.main(["--from", str(demo), "--command", "python -m s4vision.demo --out demo"]) == 0
    text = tool.MANIFEST.read_text()
    assert text.startswith("# Checkpoints we trained ourselves (see README.md#model-zoo).")
    entries = {e["file"]: e for e in yaml.safe_load(text)["checkpoints"]}
    assert set(entries) == {"other.x.safetensors", "net_a.mnist5k.safetensors", "net_b.mnist5k.safetensors"}
    entry = entries["net_b.mnist5k.safetensors"]
    copied = tool.ZOO_DIR / "net_b.mnist5k.safetensors"
    assert copied.read_bytes() == bytes([1]) * 10
    assert entry["sha256"] == zoo.sha256sum(copied) and entry["bytes"] == 10 and entry["params"] == 101
    assert entry["accuracy"] == {7: 50.0, 14: 90.5} and entry["train_resolution"] == 14
    assert entry["command"] == "python -m s4vision.demo --out demo"
    assert "net_a, net_b updated" in capsys.readouterr().out


def test_training_records_its_own_command(tool, tmp_path, monkeypatch):
    demo = _demo_dir(tmp_path / "runs")
    seen = {}

    def run_demo(models, out, **kwargs):
        seen.update(models=models, out=out, **kwargs)
        return tool.load_demo_results(demo)

    monkeypatch.setattr(tool, "run_demo", run_demo)
    assert tool.main(["--models", "net_a", "net_b", "--out", str(demo), "train.epochs=2"]) == 0
    assert seen["models"] == ["net_a", "net_b"] and seen["overrides"] == ["train.epochs=2"]
    entries = yaml.safe_load(tool.MANIFEST.read_text())["checkpoints"]
    assert entries[-1]["command"] == f"python tools/update_zoo.py --models net_a net_b --out {demo} train.epochs=2"


def test_refusals(tool, tmp_path, capsys):
    demo = _demo_dir(tmp_path / "quick", quick=True)
    assert tool.main(["--from", str(demo), "--command", "c"]) == 2
    assert capsys.readouterr().err.strip() == "error: refusing to put --quick runs into the model zoo"
    assert tool.main(["--from", str(tmp_path / "nowhere"), "--command", "c"]) == 2
    assert "no demo results" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main(["--from", str(demo)])  # the command that produced it must be given
    assert "--from needs --command" in capsys.readouterr().err
