"""Fault injection: real tiny training runs killed at random points, damaged checkpoints, and two
trainers on one folder.

Each run is the command line (``s4vision train``) in a child process forked from the test
process (so no interpreter start-up per run), trained on ``digits`` with the tiny test model:
90 steps, a checkpoint every 4 steps. A child is killed with SIGKILL at a random point chosen
from a seeded RNG: while a chosen checkpoint is being written, or a random few milliseconds
after it appeared (in a training step, an evaluation, the final export). After every kill the
folder must hold only intact checkpoints and a readable log; after damaging the newest
checkpoint, resume must fall back to the newest intact one (saying which it skipped); and the
run finished by resuming must end with exactly the weights of an uninterrupted run.
"""
import csv
import multiprocessing
import os
import random
import signal
import sys
import time

import pytest
import yaml

import _helpers
from s4vision.cli import main
from s4vision.engine.checkpoint import CheckpointManager, verify_checkpoint
from s4vision.engine.config import load_config
from s4vision.engine.train import train

STEPS = 90  # 2 epochs of 45 batches
EVERY = 4
CONFIG = {
    "model": {"name": _helpers.TINY},
    "data": {"dataset": "digits", "resolution": 8, "batch_size": 32},
    "optim": {"lr": 0.01, "warmup_epochs": 0.5},
    "train": {"epochs": 2, "checkpoint_every": EVERY, "keep_checkpoints": 3, "progress": False, "threads": 1},
}
# what a finished run folder holds (tensorboard/ when it is installed), and nothing else
FINISHED = {"config.yaml", "log.csv", "model.safetensors", "model.yaml", "checkpoints", ".s4vision.lock"}


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "tiny.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


@pytest.fixture(scope="module")
def reference(config, tmp_path_factory):
    """The weights file of an uninterrupted run (trained in this process)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    return train(load_config(config, [f"train.output_dir={out}"])).model_file


# -- running the command line in a forked child ----------------------------------------------------


def _child(argv, log):
    with open(log, "w", buffering=1) as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        sys.stdout = sys.stderr = f
        code = main(argv)
        f.flush()
    os._exit(code)


def _start(config, run, *extra, log):
    process = multiprocessing.get_context("fork").Process(
        target=_child, args=(["train", str(config), f"train.output_dir={run}", *extra], str(log)))
    process.start()
    return process


def _kill_at(process, run, rng, after, last=STEPS):
    """SIGKILL ``process`` at a random point: while checkpoint ``step_<s>`` (``after < s <= last``)
    is being written, or a random 0-50 ms after it appeared. Returns True if the kill landed
    before the run ended."""
    targets = [s for s in (*range(EVERY, STEPS + 1, EVERY), 45, 90) if after < s <= last]
    if not targets:
        process.join()
        return False
    target = rng.choice(targets)
    while_writing = rng.random() < 0.5
    delay = rng.uniform(0, 0.05)
    checkpoints = run / "checkpoints"
    deadline = time.monotonic() + 600
    while process.is_alive() and time.monotonic() < deadline:
        if while_writing and (checkpoints / f".tmp-step_{target:08d}").exists():
            break
        if (checkpoints / f"step_{target:08d}").exists():
            time.sleep(delay)
            break
        time.sleep(0.001)
    os.kill(process.pid, signal.SIGKILL)  # harmless if it already exited
    process.join()
    return process.exitcode == -signal.SIGKILL


def _log_epochs(run):
    with open(run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(None not in row.values() for row in rows), "a torn log row"
    return [int(row["epoch"]) for row in rows]


def _assert_consistent(run):
    """What a kill may leave: intact checkpoints (a torn one is never listed) and a readable log."""
    for checkpoint in CheckpointManager(run / "checkpoints").checkpoints():
        verify_checkpoint(checkpoint)
    if (run / "log.csv").exists():
        epochs = _log_epochs(run)
        assert epochs == list(range(len(epochs)))


def _damage(path, rng):
    data = bytearray(path.read_bytes())
    if rng.random() < 0.5:
        path.write_bytes(bytes(data[: rng.randrange(len(data))]))  # truncated
    else:
        data[rng.randrange(len(data))] ^= 0xFF  # one byte altered
        path.write_bytes(bytes(data))


# -- the tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_kills_and_a_damaged_checkpoint_end_like_an_uninterrupted_run(config, reference, tmp_path, seed):
    rng = random.Random(seed)
    run = tmp_path / "run"
    landed = _kill_at(_start(config, run, log=tmp_path / "first.log"), run, rng, after=8, last=STEPS - 1)
    _assert_consistent(run)

    # damage the newest checkpoint: resume must skip it, say so, and take the one before
    manager = CheckpointManager(run / "checkpoints")
    found = manager.checkpoints()
    assert len(found) >= 2, "killed before two checkpoints were written"
    newest, intact = found[-1], found[-2]
    _damage(newest / rng.choice(["model.safetensors", "trainer_state.pt"]), rng)
    log = tmp_path / "second.log"
    process = _start(config, run, "--resume", log=log)
    landed += _kill_at(process, run, rng, after=int(newest.name.split("_")[1]))
    text = log.read_text()
    assert f"warning: checkpoint {newest} is damaged" in text and f"resuming from {intact} " in text, text
    _assert_consistent(run)

    log = tmp_path / "last.log"
    process = _start(config, run, "--resume", log=log)
    process.join()
    assert process.exitcode == 0, log.read_text()
    assert landed, "no kill landed before its run ended"
    _helpers.assert_same_weights(run / "model.safetensors", reference)
    assert _log_epochs(run) == [0, 1]
    assert {p.name for p in run.iterdir()} - {"tensorboard"} == FINISHED  # no temporary file left
    assert all(p.name.startswith(("step_", ".damaged-step_")) for p in (run / "checkpoints").iterdir())


def test_a_second_run_into_a_busy_folder_refuses_and_mixes_nothing(config, reference, tmp_path, capsys):
    run = tmp_path / "run"
    first = _start(config, run, log=tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 600
        while CheckpointManager(run / "checkpoints").latest() is None and first.is_alive():
            assert time.monotonic() < deadline
            time.sleep(0.001)
        os.kill(first.pid, signal.SIGSTOP)  # a run that is slow, or stuck: it still holds the folder
        before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
        for extra in ([], ["--resume"]):
            assert main(["train", str(config), f"train.output_dir={run}", *extra]) == 2
            err = capsys.readouterr().err.strip()
            assert err == (f"error: train.output_dir {run} is in use by another s4vision run (PID {first.pid}); "
                           "wait for it to finish, or choose another train.output_dir")
        assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # the second run wrote nothing
    finally:
        os.kill(first.pid, signal.SIGCONT)
    first.join()
    assert first.exitcode == 0
    _helpers.assert_same_weights(run / "model.safetensors", reference)
    assert _log_epochs(run) == [0, 1]
    assert main(["train", str(config), f"train.output_dir={run}", "--resume"]) == 0  # free once it ended
    assert "nothing left to train" in capsys.readouterr().out
