import csv
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from safetensors.torch import load_file

import _helpers
from s4vision.engine.checkpoint import CheckpointManager, read_model_metadata
from s4vision.engine.config import load_config
from s4vision.engine.train import train

# digits at 8x8: 1,437 training images, 45 batches of 32 per epoch
BASE = [f"model.name={_helpers.TINY}", "data.dataset=digits", "data.resolution=8", "data.batch_size=32",
        "optim.lr=1e-2", "optim.warmup_epochs=0.5", "train.progress=false", "train.threads=1"]


def _cfg(tmp_path, *extra, name="run"):
    return load_config(None, [*BASE, f"train.output_dir={tmp_path / name}", *extra])


def _weights(path):
    return load_file(str(path))


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_training_learns_logs_and_exports(tmp_path):
    result = train(_cfg(tmp_path, "train.epochs=3", "eval.resolutions=[6,8,16]"))
    with open(tmp_path / "run" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2] and int(rows[-1]["step"]) == 3 * 45
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert float(rows[-1]["eval_top1"]) > 60  # chance is 10%
    assert set(result.zero_shot) == {6, 8, 16}
    assert result.zero_shot[8].top1 == pytest.approx(float(rows[-1]["eval_top1"]))
    meta = read_model_metadata(result.model_file)
    assert meta["arch"] == _helpers.TINY and meta["train_resolution"] == 8 and meta["dataset"] == "digits"
    assert (meta["in_chans"], meta["num_classes"]) == (1, 10)
    sidecar = yaml.safe_load(result.model_file.with_suffix(".yaml").read_text())
    assert set(sidecar["zero_shot_top1"]) == {6, 8, 16} and sidecar["config"]["model"]["name"] == _helpers.TINY


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    runs = [train(_cfg(tmp_path, "train.epochs=1", "train.max_steps=12", f"train.seed={seed}", name=f"r{i}"))
            for i, seed in enumerate((0, 0, 1))]
    w = [_weights(r.model_file) for r in runs]
    _assert_same_weights(w[0], w[1])
    assert not torch.equal(w[0]["head.weight"], w[2]["head.weight"])


def test_progressive_resizing_follows_the_schedule(tmp_path):
    result = train(_cfg(tmp_path, "train.epochs=3", "train.max_steps=100", "train.progressive=[[0,6],[2,8]]",
                        "train.eval_every=0"))
    assert [row["resolution"] for row in result.history] == [6, 6, 8]
    assert result.global_step == 100 and result.train_resolution == 8
    assert read_model_metadata(result.model_file)["train_resolution"] == 8


def test_ema_weights_are_exported(tmp_path):
    result = train(_cfg(tmp_path, "train.epochs=1", "train.max_steps=10", "train.ema=true", "train.ema_decay=0.9"))
    last = CheckpointManager(tmp_path / "run" / "checkpoints").latest()
    exported, raw, ema = _weights(result.model_file), _weights(last / "model.safetensors"), _weights(last / "ema.safetensors")
    _assert_same_weights(exported, ema)
    assert not torch.equal(raw["head.weight"], ema["head.weight"])


def test_resolution_below_the_model_minimum_is_refused(tmp_path):
    with pytest.raises(ValueError, match=f"resolution 4 is below the minimum {_helpers.MIN_SIZE}"):
        train(_cfg(tmp_path, "train.progressive=[[0,4],[1,8]]"))
    with pytest.raises(ValueError, match="resolution 3 is below"):
        train(_cfg(tmp_path, "eval.resolutions=[3,8]"))


def test_existing_run_needs_resume(tmp_path):
    train(_cfg(tmp_path, "train.epochs=1", "train.max_steps=3"))
    with pytest.raises(ValueError, match="already holds checkpoints.*--resume"):
        train(_cfg(tmp_path, "train.epochs=1", "train.max_steps=3"))


def test_unknown_model_lists_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'resnet_nope'; s4vision models:"):
        train(load_config(None, ["model.name=resnet_nope", f"train.output_dir={tmp_path}"]))


# -- kill -9 mid-epoch, resume, and end with the weights of an uninterrupted run -------------------

_CLI = "import sys, _helpers; from s4vision.cli import main; raise SystemExit(main(sys.argv[1:]))"


def _cli(*args):
    return [sys.executable, "-c", _CLI, *args]


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(OmegaConf.to_container(OmegaConf.from_dotlist(BASE))))
    common = [str(config), "train.epochs=3", "train.checkpoint_every=10", "train.keep_checkpoints=50"]
    env = _helpers.subprocess_env(OMP_NUM_THREADS="1")

    reference = tmp_path / "reference"
    subprocess.run(_cli("train", *common, f"train.output_dir={reference}"), check=True, env=env, capture_output=True)

    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli("train", *common, f"train.output_dir={run}"),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manager = CheckpointManager(run / "checkpoints")
    deadline = time.monotonic() + 120
    while manager.latest() is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "model.safetensors").exists(), "the run finished before it could be killed"
    _, _, state = CheckpointManager.load(manager.latest())
    assert state["batch"] > 0, "expected to resume mid-epoch"

    subprocess.run(_cli("train", *common, f"train.output_dir={run}", "--resume"),
                   check=True, env=env, capture_output=True)
    _assert_same_weights(_weights(run / "model.safetensors"), _weights(reference / "model.safetensors"))
    with open(run / "log.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2]


def test_bf16_autocast_on_cpu_and_fp16_refused(tmp_path):
    result = train(_cfg(tmp_path, "train.epochs=1", "train.max_steps=5", "train.amp=bf16"))
    weights = _weights(result.model_file)
    assert all(torch.isfinite(w).all() and w.dtype == torch.float32 for w in weights.values())
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        train(_cfg(tmp_path, "train.amp=fp16", name="fp16"))


def test_divergence_is_reported_as_a_package_error(tmp_path):
    from s4vision.errors import S4VisionError, TrainingDivergedError

    with pytest.raises(TrainingDivergedError, match="training loss became (nan|inf) at step") as info:
        train(_cfg(tmp_path, "train.epochs=1", "train.max_steps=20", "optim.lr=1e30", "optim.clip_grad=null",
                   "optim.warmup_epochs=0"))
    assert isinstance(info.value, S4VisionError) and isinstance(info.value, FloatingPointError)
