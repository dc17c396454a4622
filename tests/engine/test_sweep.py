import json

import _helpers
from s4vision.engine.evaluate import evaluate_checkpoint
from s4vision.engine.sweep import run_sweep, sweep_tables


def test_sweep_trains_each_resolution_and_tabulates(tmp_path):
    overrides = ["data.dataset=digits", "data.batch_size=64", "optim.lr=0.01", "train.epochs=1", "train.max_steps=6",
                 "train.progress=false", "train.threads=1", "train.eval_every=0"]
    summary = run_sweep([_helpers.TINY], [6, 8], [6, 8, 12], overrides=overrides, output_dir=tmp_path)
    table = summary["results"][_helpers.TINY]
    assert set(table) == {6, 8} and all(set(row) == {6, 8, 12} for row in table.values())
    # each cell is the held-out accuracy of the model trained at that resolution
    check = evaluate_checkpoint(tmp_path / f"{_helpers.TINY}_6px", [12], progress=False)
    assert check["train_resolution"] == 6 and check["results"][12]["top1"] == table[6][12]
    assert json.loads((tmp_path / "sweep.json").read_text())["results"][_helpers.TINY]["8"]["6"] == table[8][6]
    text = sweep_tables(summary)
    assert "train 6px" in text and "test 12px" in text
    # resuming re-evaluates finished runs instead of retraining them
    again = run_sweep([_helpers.TINY], [6, 8], [6, 8, 12], overrides=overrides, output_dir=tmp_path, resume=True)
    assert again["results"] == summary["results"]
