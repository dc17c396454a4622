import csv
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file

import _helpers
from s4vision.engine.checkpoint import CheckpointManager

SCRIPT = textwrap.dedent("""
    import sys

    import _helpers  # the tiny test model; tests/ is on PYTHONPATH
    from safetensors.torch import save_file
    from s4vision.engine.config import load_config
    from s4vision.engine.distributed import cleanup, init_distributed
    from s4vision.engine.train import Trainer

    out = sys.argv[1]
    cfg = load_config(None, [*sys.argv[2:], f"train.output_dir={out}/run"])
    ctx = init_distributed(cfg.train.device)
    trainer = Trainer(cfg, ctx)
    trainer.fit()
    state = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(state, f"{out}/rank{ctx.rank}.safetensors")
    cleanup(ctx)
""")


def test_two_process_ddp_on_cpu_ends_with_identical_weights(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    overrides = [f"model.name={_helpers.TINY}", "data.dataset=digits", "data.resolution=8", "data.batch_size=32",
                 "train.epochs=2", "train.device=cpu", "train.progress=false", "train.threads=1",
                 "train.checkpoint_every=10"]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
         str(tmp_path), *overrides],
        capture_output=True, text=True, timeout=300, env=_helpers.subprocess_env())
    assert proc.returncode == 0, proc.stderr[-3000:]

    rank0, rank1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    exported = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert all(torch.equal(exported[k], rank0[k]) for k in rank0)

    # each rank saw half of the 1,437 images per epoch: ceil(719 / 32) = 23 steps per epoch
    with open(tmp_path / "run" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [23, 46]
    _, _, state = CheckpointManager.load(CheckpointManager(tmp_path / "run" / "checkpoints").latest())
    assert state["world_size"] == 2

