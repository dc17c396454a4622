"""The package as a user gets it: ``python -m build`` makes an sdist and a wheel without warnings,
both carry the configs and the model zoo, and the wheel installed outside the repository works
from another directory with the repository not importable (models, zoo weights, training from a
config name, the demo's smoke run).

Slow (about a minute): it builds, installs and starts Python several times.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# what the distributions are built from (the rest of the checkout is not part of them)
SOURCES = ("pyproject.toml", "README.md", "s4vision", "configs", "model_zoo")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
MANIFEST = yaml.safe_load((ROOT / "model_zoo" / "manifest.yaml").read_text())["checkpoints"]
ZOO_FILES = {"manifest.yaml", *(entry["file"] for entry in MANIFEST)}
CONFIGS = {p.name for p in (ROOT / "configs").glob("*.yaml")}


def _run(command, cwd, env=None, timeout=600):
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """``python -m build`` on a copy of the source tree (the repository stays untouched)."""
    pytest.importorskip("build", reason="the dev extra's `build` package builds the distributions")
    source = tmp_path_factory.mktemp("source") / "s4vision"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=SKIP)  # keeps s4vision/_data's links
        else:
            shutil.copy2(ROOT / name, source / name)
    out = source.parent / "dist"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # else "byte-compiling disabled"
    result = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)], source, env)
    return out, result.stdout + result.stderr


def test_build_prints_no_warning(dist):
    _, log = dist
    noisy = [line for line in log.splitlines() if "warn" in line.lower() or "deprecat" in line.lower()]
    assert not noisy, "\n".join(noisy)


def test_sdist_and_wheel_carry_configs_and_zoo(dist):
    out, _ = dist
    (wheel,) = out.glob("s4vision-*.whl")
    (sdist,) = out.glob("s4vision-*.tar.gz")
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = {name: archive.getinfo(name).file_size for name in archive.namelist()}
    with tarfile.open(sdist) as archive:
        in_sdist = {m.name.split("/", 1)[1]: m.size for m in archive.getmembers() if m.isfile()}
    for files in (in_wheel, in_sdist):
        for name in CONFIGS:
            assert files[f"s4vision/_data/configs/{name}"] == (ROOT / "configs" / name).stat().st_size
        for name in ZOO_FILES:
            assert files[f"s4vision/_data/model_zoo/{name}"] == (ROOT / "model_zoo" / name).stat().st_size
    assert not [name for name in in_wheel if "__pycache__" in name or name.startswith("tests/")]


@pytest.fixture(scope="module")
def installed(dist, tmp_path_factory):
    """The wheel installed into a fresh target directory, and how to run Python on it."""
    out, _ = dist
    (wheel,) = out.glob("s4vision-*.whl")
    target = tmp_path_factory.mktemp("site")
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(target),
          str(wheel)], target)
    elsewhere = tmp_path_factory.mktemp("elsewhere")  # the working directory: not the repository
    # the target first on the path; dependencies come from this interpreter's site-packages, and
    # no user site. The venv's editable finder maps `s4vision` to the repository, but a path
    # entry is found first: each run checks where s4vision came from.
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONNOUSERSITE": "1", "S4VISION_TEST_THREADS": "1",
           "OMP_NUM_THREADS": "1"}
    env.pop("S4VISION_CONFIG_PATH", None)

    def python(*args, timeout=600):
        return _run([sys.executable, "-s", *args], elsewhere, env, timeout)

    def cli(*args):
        return _run([str(target / "bin" / "s4vision"), *args], elsewhere, env)

    located = python("-c", "import json, os, s4vision, sys; print(s4vision.__file__); "
                           "print(json.dumps([os.path.abspath(p) for p in sys.path]))").stdout
    module_file, path = located.splitlines()
    assert module_file.startswith(str(target / "s4vision")), located
    assert not [p for p in json.loads(path) if Path(p).resolve() == ROOT], path
    return target, python, cli, elsewhere


def test_zoo_models_load_from_the_installation(installed):
    target, python, _, _ = installed
    names = [f"{e['model']}.{e['tag']}" for e in MANIFEST]
    script = f"""
import timm, torch, s4vision
from safetensors.torch import load_file
from s4vision.models.zoo import ZOO_DIR
from s4vision.engine.config import CONFIG_DIR, list_configs
assert str(ZOO_DIR).startswith({str(target)!r}) and str(CONFIG_DIR).startswith({str(target)!r}), (ZOO_DIR, CONFIG_DIR)
assert set({sorted(p[:-5] for p in CONFIGS)!r}) <= set(list_configs())
for name in {names!r}:
    model = timm.create_model(name, pretrained=True).eval()
    file = model.pretrained_cfg["file"]
    assert file.startswith({str(target)!r}), file
    saved = load_file(file)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items()), name
    with torch.no_grad():
        print(name, tuple(model(torch.randn(1, *model.pretrained_cfg["input_size"])).shape))
"""
    out = python("-c", script).stdout
    for name in names:
        assert f"{name} (1, 10)" in out


def test_cli_models(installed):
    _, _, cli, _ = installed
    out = cli("models").stdout
    for entry in MANIFEST:
        assert any(line.startswith(entry["model"]) and entry["tag"] in line for line in out.splitlines())
    assert "s4nd_convnext3d_tiny" in out


def test_cli_trains_from_a_config_name(installed):
    _, _, cli, elsewhere = installed
    run = elsewhere / "run"
    out = cli("train", "mnist5k_s4nd_iso_micro", "train.epochs=1", "train.max_steps=2",
              "data.eval_limit=20", "eval.resolutions=[14]", "train.eval_every=0", "train.progress=false",
              "train.threads=1", f"train.output_dir={run}").stdout
    assert (run / "model.safetensors").is_file() and "14px" in out


def test_unknown_config_names_both_places(installed, tmp_path):
    target, _, _, elsewhere = installed
    user = tmp_path / "my_configs"
    user.mkdir()
    (user / "mine.yaml").write_text("model:\n  name: s4nd_iso_micro\n")
    env = {**os.environ, "PYTHONPATH": str(target), "S4VISION_CONFIG_PATH": str(user)}
    result = subprocess.run([str(target / "bin" / "s4vision"), "train", "nope"], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert f"user configs {user} has mine" in result.stderr
    assert f"s4vision's configs {target / 's4vision' / '_data' / 'configs'} has " in result.stderr


def test_demo_smoke_run(installed):
    _, python, _, elsewhere = installed
    out = python("-m", "s4vision.demo", "--quick", "--jobs", "1", "--out", str(elsewhere / "demo"),
                 "train.threads=1", "train.progress=false").stdout
    assert "SMOKE RUN" in out
    assert (elsewhere / "demo" / "results.json").is_file() and (elsewhere / "demo" / "zero_shot_resolution.png").is_file()
