import csv

import torch

import _helpers
from s4vision.engine.checkpoint import CheckpointManager


def test_two_process_ddp_on_cpu_ends_with_identical_weights(tmp_path):
    overrides = [f"model.name={_helpers.TINY}", "data.dataset=digits", "data.resolution=8", "data.batch_size=32",
                 "train.epochs=2", "train.progress=false", "train.threads=1", "train.checkpoint_every=10"]
    rank0, rank1, exported = _helpers.torchrun_two_ranks(tmp_path, overrides, timeout=300)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    assert all(torch.equal(exported[k], rank0[k]) for k in rank0)

    # each rank saw half of the 1,437 images per epoch: ceil(719 / 32) = 23 steps per epoch
    with open(tmp_path / "run" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [23, 46]
    _, _, state = CheckpointManager.load(CheckpointManager(tmp_path / "run" / "checkpoints").latest())
    assert state["world_size"] == 2

