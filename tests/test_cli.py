import importlib
import json
import subprocess
import sys
import warnings

import pytest

import _helpers
from s4vision.cli import main

TINY_CONFIG = f"""
model: {{name: {_helpers.TINY}}}
data: {{dataset: digits, resolution: 8, batch_size: 64}}
optim: {{lr: 0.01}}
train: {{epochs: 1, max_steps: 4, progress: false, threads: 1}}
"""


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return path


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", str(tiny_config), f"train.output_dir={out}"]) == 0
    return out / "model.safetensors"


def _error(capsys, argv):
    """Run the CLI expecting a usage error; return the single stderr line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("argv", [[], ["train"], ["eval"], ["predict"], ["sweep"], ["models"], ["video"],
                                  ["video", "extract-features"], ["video", "make-benchmark"]])
def test_help_has_examples(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "usage: s4vision" in out
    if not argv:
        for command in ("train", "eval", "predict", "sweep", "models", "video"):
            assert command in out


def test_train_then_eval(capsys, tiny_checkpoint, tmp_path):
    assert tiny_checkpoint.is_file()
    out_json = tmp_path / "acc.json"
    assert main(["eval", str(tiny_checkpoint), "--resolutions", "6", "8", "16", "--no-progress",
                 "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert f"{_helpers.TINY} on digits/test, trained at 8px" in out
    for res in ("6px", "8px", "16px"):
        assert res in out
    summary = json.loads(out_json.read_text())
    assert set(summary["results"]) == {"6", "8", "16"} and summary["results"]["8"]["count"] == 360
    # a run directory works as well as the file
    assert main(["eval", str(tiny_checkpoint.parent), "--resolutions", "8", "--no-progress"]) == 0


def test_unknown_model(capsys, tiny_config, tmp_path):
    line = _error(capsys, ["train", str(tiny_config), "model.name=s4nd_nope", f"train.output_dir={tmp_path}"])
    assert "unknown model 's4nd_nope'" in line and "s4vision models:" in line


def test_unknown_dataset(capsys, tiny_config, tmp_path):
    line = _error(capsys, ["train", str(tiny_config), "data.dataset=mnist6k", f"train.output_dir={tmp_path}"])
    assert "unknown dataset 'mnist6k'" in line and "mnist5k, digits, imagefolder" in line


def test_unknown_config_key(capsys, tiny_config):
    line = _error(capsys, ["train", str(tiny_config), "optim.learning_rate=0.1"])
    assert "unknown config key 'optim.learning_rate'" in line and "lr, ssm_lr, weight_decay" in line


def test_missing_config(capsys):
    assert "config file not found: nowhere.yaml" in _error(capsys, ["train", "nowhere.yaml"])


def test_resolution_below_model_minimum(capsys, tiny_checkpoint):
    line = _error(capsys, ["eval", str(tiny_checkpoint), "--resolutions", "4", "8"])
    assert f"resolution 4 is below the minimum {_helpers.MIN_SIZE}" in line and _helpers.TINY in line


def test_image_folder_without_images(capsys, tiny_config, tmp_path):
    (tmp_path / "images" / "cat").mkdir(parents=True)
    line = _error(capsys, ["train", str(tiny_config), "data.dataset=imagefolder", f"data.root={tmp_path / 'images'}",
                           f"train.output_dir={tmp_path / 'run'}"])
    assert "contains no images" in line and "images" in line


def test_checkpoint_of_another_architecture(capsys, tiny_checkpoint, tiny_config, tmp_path):
    line = _error(capsys, ["eval", str(tiny_checkpoint), "--model", "resnet10t", "--resolutions", "8"])
    assert f"holds a '{_helpers.TINY}' model, not 'resnet10t'" in line
    line = _error(capsys, ["train", str(tiny_config), "model.name=resnet10t", f"model.checkpoint={tiny_checkpoint}",
                           f"train.output_dir={tmp_path}"])
    assert f"holds a '{_helpers.TINY}' model, not 'resnet10t'" in line


def test_missing_checkpoint(capsys, tmp_path):
    line = _error(capsys, ["eval", str(tmp_path / "gone.safetensors"), "--resolutions", "8"])
    assert "checkpoint file not found" in line and "gone.safetensors" in line


def test_models_lists_registered_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["model", "params", "pretrained"]
    assert _helpers.TINY not in out  # only s4vision's own models
    for name in ("s4nd_iso_micro", "conv2d_iso_micro", "ccnn_micro"):
        assert name in out


def test_video_commands_forward_their_arguments(capsys, monkeypatch, tmp_path):
    import s4vision.data.video_benchmark as video_benchmark
    import s4vision.engine.features as features

    calls = []
    monkeypatch.setattr(video_benchmark, "make_benchmark",
                        lambda *a, **k: calls.append(("bench", a, k)) or tmp_path / "x.csv")
    (tmp_path / "index.json").write_text('{"settings": {}, "videos": [], "failed": []}')
    monkeypatch.setattr(features, "extract_features",
                        lambda *a, **k: calls.append(("feats", a, k)) or tmp_path / "index.json")
    assert main(["video", "make-benchmark", "out", "--num-videos", "3", "--num-frames", "40", "--fps", "4",
                 "--size", "32", "--head-seconds", "1.5", "--seed", "2", "--split", "train", "val"]) == 0
    assert main(["video", "extract-features", "ann.csv", "feats", "--model", "resnet18", "--num-frames", "8",
                 "--batch-size", "4", "--tokens", "--size", "64", "48", "--no-resume"]) == 0
    bench_train, bench_test, feats = calls
    assert bench_train[1] == ("out", 3, 40) and bench_test[2]["split"] == "val"
    assert bench_train[2] == {"fps": 4.0, "size": 32, "head_seconds": 1.5, "seed": 2, "split": "train"}
    assert feats[1] == ("ann.csv", "feats")
    assert feats[2] == {"model": "resnet18", "num_frames": 8, "fps": None, "batch_size": 4, "tokens": True,
                        "pretrained": False, "checkpoint": None, "size": (64, 48), "device": "cpu", "resume": False,
                        "skip_failed": False, "short": "reject", "root": None, "format": "auto", "subset": None}
    assert "index.json" in capsys.readouterr().out


def test_overrides_may_follow_options(monkeypatch, tmp_path):
    train_module = importlib.import_module("s4vision.engine.train")  # not the re-exported function

    seen = {}
    monkeypatch.setattr(train_module, "train", lambda cfg, resume: seen.update(cfg=cfg, resume=resume) or
                        type("R", (), {"zero_shot": {}, "model_file": "x", "history": []})())
    assert main(["train", "mnist5k_s4nd_iso_micro", "train.epochs=2", "--resume", "train.seed=7",
                 f"train.output_dir={tmp_path}"]) == 0
    assert seen["resume"] and seen["cfg"].train.epochs == 2 and seen["cfg"].train.seed == 7
    with pytest.raises(SystemExit):
        main(["train", "mnist5k_s4nd_iso_micro", "--bogus"])


# -- which exceptions become one line ---------------------------------------------------------------


def _patch_models_command(monkeypatch, error):
    import s4vision.cli as cli

    def fail(args):
        raise error

    monkeypatch.setattr(cli, "_cmd_models", fail)


def test_package_error_is_one_line_with_status_2(capsys, monkeypatch):
    from s4vision.errors import MissingFileError

    _patch_models_command(monkeypatch, MissingFileError("no such thing:\n  /nowhere"))
    assert _error(capsys, ["models"]) == "error: no such thing: /nowhere"


def test_training_divergence_is_one_line_with_status_1(capsys, monkeypatch):
    from s4vision.errors import TrainingDivergedError

    train_module = importlib.import_module("s4vision.engine.train")

    def diverge(cfg, resume):
        raise TrainingDivergedError("training loss became nan at step 3; lower optim.lr or set optim.clip_grad")

    monkeypatch.setattr(train_module, "train", diverge)
    assert main(["train", "mnist5k_s4nd_iso_micro"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["error: training loss became nan at step 3; lower optim.lr or set "
                                        "optim.clip_grad"]


@pytest.mark.parametrize("error", [RuntimeError("a bug"), KeyError("a bug"), ValueError("a bug in a library")])
def test_other_exceptions_propagate(monkeypatch, error):
    _patch_models_command(monkeypatch, error)
    with pytest.raises(type(error), match="a bug"):
        main(["models"])


def test_a_bug_shows_its_traceback_and_exits_1():
    code = ("import sys, s4vision.cli as cli\n"
            "def fail(args):\n"
            "    raise KeyError('a bug')\n"
            "cli._cmd_models = fail\n"
            "raise SystemExit(cli.main(['models']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=_helpers.subprocess_env())
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr and "KeyError: 'a bug'" in proc.stderr
    assert "error: " not in proc.stderr


def test_interrupt_exits_130(capsys, monkeypatch):
    _patch_models_command(monkeypatch, KeyboardInterrupt())
    assert main(["models"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


# -- reliability: refuse before the work, and say what happened in one line ------------------------


def test_resume_into_a_missing_folder_is_refused(capsys, tiny_config, tmp_path):
    line = _error(capsys, ["train", str(tiny_config), f"train.output_dir={tmp_path / 'typo'}", "--resume"])
    assert f"train.output_dir {tmp_path / 'typo'} does not exist" in line and "drop --resume" in line
    assert not (tmp_path / "typo").exists()


def test_output_dir_that_is_a_file(capsys, tiny_config, tmp_path):
    (tmp_path / "taken").write_text("")
    line = _error(capsys, ["train", str(tiny_config), f"train.output_dir={tmp_path / 'taken'}"])
    assert "is a file, not a folder" in line


def test_out_of_range_config_value_is_refused_up_front(capsys, tiny_config, tmp_path):
    line = _error(capsys, ["train", str(tiny_config), "data.augment.scale=[1.5,0.2]", f"train.output_dir={tmp_path}"])
    assert "data.augment.scale=[1.5, 0.2] is out of range" in line and not any(tmp_path.iterdir())


def test_eval_checks_the_json_path_and_the_name_before_evaluating(capsys, monkeypatch, tiny_checkpoint):
    evaluate_module = importlib.import_module("s4vision.engine.evaluate")  # not the re-exported function
    monkeypatch.setattr(evaluate_module, "evaluate_resolutions", lambda *a, **k: pytest.fail("evaluated"))
    line = _error(capsys, ["eval", str(tiny_checkpoint), "--resolutions", "8", "--json", "/proc/x.json"])
    assert "cannot write --json file /proc/x.json" in line
    line = _error(capsys, ["eval", "s4nd_iso_micro.nope", "--resolutions", "14"])
    assert "no pretrained weights named 's4nd_iso_micro.nope'" in line and "s4nd_iso_micro.mnist5k" in line


def test_eval_refuses_a_dataset_with_other_classes(capsys, tiny_checkpoint, tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        Image.new("L", (8, 8)).save(tmp_path / cls / "a.png")
    line = _error(capsys, ["eval", str(tiny_checkpoint), "--resolutions", "8", "--dataset", "imagefolder",
                           "--root", str(tmp_path)])
    assert "predicts 10 classes but imagefolder/test has 2 ([cat, dog])" in line


def test_extract_features_exit_status_and_summary(capsys, monkeypatch, tmp_path):
    import s4vision.engine.features as features

    index = tmp_path / "index.json"
    index.write_text('{"settings": {}, "videos": [{"path": "a.mp4"}], "failed": [{"path": "b.mp4", "reason": "x"}]}')
    failure = features.FeatureExtractionError([{"path": "b.mp4", "reason": "VideoDecodeError: x"}], 2, index)

    def extract(*args, skip_failed, **kwargs):
        if not skip_failed:
            raise failure
        warnings.warn(str(failure).replace("; pass", ""), RuntimeWarning)
        return index

    monkeypatch.setattr(features, "extract_features", extract)
    line = _error(capsys, ["video", "extract-features", "ann.csv", str(tmp_path)])
    assert "1 of 2 videos could not be decoded" in line and "b.mp4" in line and "--skip-failed" in line
    assert main(["video", "extract-features", "ann.csv", str(tmp_path), "--skip-failed"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines() == [
        f"features of 1 of 2 videos in {tmp_path}; 1 could not be decoded and were skipped (listed under 'failed'); "
        f"encoder weights: None; index: {index}"]
    assert captured.err == ""  # the summary says it: no warning, no stray source line


def test_package_warnings_are_one_line(capsys, monkeypatch):
    import s4vision.cli as cli

    def warn(args):  # as if raised inside the package
        warnings.warn_explicit("checkpoint x is damaged", RuntimeWarning, filename=cli.__file__, lineno=1)
        return 0

    monkeypatch.setattr(cli, "_cmd_models", warn)
    assert main(["models"]) == 0
    assert capsys.readouterr().err == "warning: checkpoint x is damaged\n"


def test_make_benchmark_checks_every_split_before_writing_anything(capsys, tmp_path):
    line = _error(capsys, ["video", "make-benchmark", str(tmp_path / "b"), "--num-videos", "2", "--num-frames", "40",
                           "--split", "train", "test"])
    assert "unknown split 'test'; valid: 'train', 'val'" in line
    assert not (tmp_path / "b").exists()  # the train split was not written first
    line = _error(capsys, ["video", "make-benchmark", str(tmp_path / "b"), "--num-videos", "2", "--num-frames", "40",
                           "--split", "val", "val"])
    assert "--split lists a split twice" in line and not (tmp_path / "b").exists()


def test_help_examples_of_make_benchmark_are_valid_splits(capsys):
    """Every --split in the help's examples names a split that exists."""
    from s4vision.data.video_benchmark import SPLITS

    with pytest.raises(SystemExit):
        main(["video", "make-benchmark", "--help"])
    examples = capsys.readouterr().out.split("examples:")[1]
    used = [word for line in examples.splitlines() if "--split" in line
            for word in line.split("--split")[1].split("--")[0].split()]
    assert used and set(used) <= set(SPLITS)


def test_extract_features_says_which_weights_it_used(capsys, tmp_path):
    import numpy as np

    from s4vision.data import write_video

    write_video(tmp_path / "a.mp4", np.zeros((4, 32, 32, 3), np.uint8), 8)
    (tmp_path / "ann.csv").write_text("a.mp4,0\n")
    assert main(["video", "extract-features", str(tmp_path / "ann.csv"), str(tmp_path / "f"), "--model",
                 "test_convnext", "--size", "32"]) == 0
    captured = capsys.readouterr()
    assert "warning: no pretrained weights and no checkpoint: the features come from a randomly initialised " \
           "test_convnext (seed 0)" in captured.err
    assert "encoder weights: random (seed 0)" in captured.out
    assert json.loads((tmp_path / "f" / "index.json").read_text())["settings"]["weights"] == "random"
