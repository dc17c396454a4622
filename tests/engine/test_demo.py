import json

import pytest

from s4vision.demo import main, results_table


def test_quick_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["train.threads=1", "train.progress=false", "--quick", "--out", str(out),
                 "--resolutions", "7", "14", "28"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["models"]) == {"s4nd_iso_micro", "conv2d_iso_micro"}
    for run in results["models"].values():
        assert set(run["top1"]) == {"7", "14", "28"} and all(0 <= a <= 100 for a in run["top1"].values())
    assert (out / "zero_shot_resolution.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "s4nd_iso_micro" in printed and "drop 14->28" in printed
    # a second run replaces the first (make demo twice)
    assert main(["train.threads=1", "train.progress=false", "--quick", "--out", str(out), "--resolutions", "14"]) == 0


def test_demo_refuses_to_clear_a_foreign_directory(tmp_path, capsys):
    (tmp_path / "s4nd_iso_micro").mkdir()
    (tmp_path / "s4nd_iso_micro" / "thesis.tex").write_text("precious")
    assert main(["--quick", "--out", str(tmp_path)]) == 2
    assert "is not a training run" in capsys.readouterr().err
    assert (tmp_path / "s4nd_iso_micro" / "thesis.tex").exists()


def test_results_table_reports_the_drop():
    results = {"test_resolutions": [14, 28], "train_resolution": 14,
               "models": {"a": {"top1": {14: 90.0, 28: 89.0}}, "b": {"top1": {14: 90.0, 28: 40.0}}}}
    table = results_table(results, markdown=True)
    assert "| a " in table and "1.00 |" in table and "50.00 |" in table
    with pytest.raises(KeyError):
        results_table({"test_resolutions": [14]})
