import csv
import importlib
import os

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from safetensors.torch import load_file

import _helpers
from s4vision.engine.checkpoint import CheckpointManager, read_model_metadata, verify_checkpoint
from s4vision.engine.config import load_config
from s4vision.engine.train import train

# digits at 8x8: 1,437 training images, 45 batches of 32 per epoch
BASE = [f"model.name={_helpers.TINY}", "data.dataset=digits", "data.resolution=8", "data.batch_size=32",
        "optim.lr=1e-2", "optim.warmup_epochs=0.5", "train.progress=false", "train.threads=1"]


def _cfg(tmp_path, *extra, name="run"):
    return load_config(None, [*BASE, f"train.output_dir={tmp_path / name}", *extra])


def _weights(path):
    return load_file(str(path))


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
    _helpers.assert_same_weights(w[0], w[1])
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
    _helpers.assert_same_weights(exported, ema)
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

def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(OmegaConf.to_container(OmegaConf.from_dotlist(BASE))))
    run, reference = tmp_path / "killed", tmp_path / "reference"
    _helpers.kill_and_resume([str(config), "train.epochs=3", "train.checkpoint_every=10", "train.keep_checkpoints=50"],
                             reference, run, timeout=120)
    _helpers.assert_same_weights(_weights(run / "model.safetensors"), _weights(reference / "model.safetensors"))
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


# -- reliability: resume, locks, paths, schedules ------------------------------------------------


def _log(run):
    with open(run / "log.csv") as f:
        return list(csv.DictReader(f))


def test_a_damaged_newest_checkpoint_falls_back_to_an_intact_one(tmp_path):
    result = train(_cfg(tmp_path, "train.epochs=1", "train.checkpoint_every=10", "train.keep_checkpoints=10"))
    final = _weights(result.model_file)
    manager = CheckpointManager(tmp_path / "run" / "checkpoints")
    newest = manager.latest()  # the end of the epoch, step 45
    data = (newest / "trainer_state.pt").read_bytes()
    (newest / "trainer_state.pt").write_bytes(data[: len(data) // 3])
    with pytest.warns(RuntimeWarning, match=f"{newest}.*damaged.*trainer_state.pt"):
        again = train(_cfg(tmp_path, "train.epochs=1", "train.checkpoint_every=10", "train.keep_checkpoints=10"),
                      resume=True)
    assert again.global_step == 45
    _helpers.assert_same_weights(_weights(again.model_file), final)  # steps 41-45 replayed exactly
    assert manager.latest().name == "step_00000045"  # rewritten, intact
    assert (manager.directory / ".damaged-step_00000045").is_dir()


def test_resume_with_another_model_names_both(tmp_path):
    train(_cfg(tmp_path, "train.epochs=1", "train.max_steps=3"))
    with pytest.raises(ValueError, match=f"holds a '{_helpers.TINY}' model, not 'resnet10t'"):
        train(_cfg(tmp_path, "train.epochs=1", "train.max_steps=3", "model.name=resnet10t"), resume=True)
    with pytest.raises(ValueError, match="does not fit.*mis-shaped"):  # same name, other width
        train(_cfg(tmp_path, "train.epochs=1", "train.max_steps=3", "model.kwargs.width=8"), resume=True)


def test_extending_a_finished_run_replans_the_schedule(tmp_path, capsys):
    """Raising train.epochs on resume: from the step reached, the learning rate is the one a run
    planned for the new length has there (not the old schedule's final value)."""
    train(_cfg(tmp_path, "train.epochs=1", name="short"))
    capsys.readouterr()
    extended = train(_cfg(tmp_path, "train.epochs=3", name="short"), resume=True)
    assert "re-planned" in capsys.readouterr().out
    planned = train(_cfg(tmp_path, "train.epochs=3", name="planned"))
    assert extended.global_step == planned.global_step == 135
    rows, reference = _log(tmp_path / "short"), _log(tmp_path / "planned")
    assert [r["lr"] for r in rows[1:]] == [r["lr"] for r in reference[1:]]  # at steps 90 and 135
    assert float(rows[1]["lr"]) > 10 * float(rows[2]["lr"])  # mid-cosine at step 90, not the old floor


def test_nothing_left_to_train_keeps_the_held_out_accuracy(tmp_path, capsys):
    first = train(_cfg(tmp_path, "train.epochs=1", "train.max_steps=6"))
    held_out = yaml.safe_load(first.model_file.with_suffix(".yaml").read_text())["held_out_top1"]
    capsys.readouterr()
    again = train(_cfg(tmp_path, "train.epochs=1", "train.max_steps=6"), resume=True)
    assert "nothing left to train" in capsys.readouterr().out and again.global_step == 6
    sidecar = yaml.safe_load(again.model_file.with_suffix(".yaml").read_text())
    assert sidecar["held_out_top1"] == pytest.approx(held_out, abs=1e-3)


def test_a_second_trainer_on_a_held_folder_refuses_before_writing(tmp_path):
    from s4vision.engine.runlock import RunFolderLockedError, RunLock

    folder = tmp_path / "run"
    with RunLock(folder):
        with pytest.raises(RunFolderLockedError, match=f"{folder} is in use.*PID {os.getpid()}"):
            train(_cfg(tmp_path, "train.epochs=1", "train.max_steps=3"))
    assert sorted(p.name for p in folder.iterdir()) == [".s4vision.lock"]  # nothing written
    train(_cfg(tmp_path, "train.epochs=1", "train.max_steps=3"))  # released: the folder is free


def test_paths_are_checked_before_the_work(tmp_path, monkeypatch):
    train_module = importlib.import_module("s4vision.engine.train")  # not the re-exported function

    monkeypatch.setattr(train_module.Trainer, "_datasets", lambda self: pytest.fail("datasets were built"))
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ValueError, match="train.output_dir .*file is a file, not a folder"):
        train(_cfg(tmp_path, name="file"))
    with pytest.raises(ValueError, match="cannot be created: .*file is a file"):
        train(_cfg(tmp_path, name="file/run"))
    with pytest.raises(FileNotFoundError, match="model.checkpoint file not found: .*nope.safetensors"):
        train(_cfg(tmp_path, f"model.checkpoint={tmp_path / 'nope.safetensors'}"))


def test_a_full_disk_stops_the_run_with_one_error_and_intact_checkpoints(tmp_path, monkeypatch):
    import errno

    from s4vision.engine.train import StorageFullError

    real_save = CheckpointManager.save
    calls = []

    def fill_up(self, step, *args, **kwargs):
        calls.append(step)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(CheckpointManager, "save", fill_up)
    with pytest.raises(StorageFullError, match="no space left.*--resume") as info:
        train(_cfg(tmp_path, "train.epochs=1", "train.checkpoint_every=5", "train.keep_checkpoints=5"))
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    checkpoints = CheckpointManager(tmp_path / "run" / "checkpoints").checkpoints()
    assert [p.name for p in checkpoints] == ["step_00000005", "step_00000010"]
    for checkpoint in checkpoints:
        assert verify_checkpoint(checkpoint)


def test_metadata_records_the_classes_and_dataset_root(tmp_path):
    result = train(_cfg(tmp_path, "train.epochs=1", "train.max_steps=2"))
    meta = read_model_metadata(result.model_file)
    assert meta["classes"] == [str(i) for i in range(10)] and meta["data_root"] is None
