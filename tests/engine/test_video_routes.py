"""The three video routes through the command line, on a tiny benchmark of real H.264 files:
two short epochs each, then ``eval`` and ``predict`` must give the run's own validation figures
back from the checkpoint."""
import csv
import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

import _helpers
from s4vision.cli import main
from s4vision.engine.checkpoint import read_model_metadata

pytestmark = pytest.mark.filterwarnings("ignore:the model was trained on clips:RuntimeWarning")


def _log(run: Path) -> list[dict]:
    with open(run / "log.csv") as f:
        return list(csv.DictReader(f))


def _labels(bench: Path) -> dict[str, int]:
    with open(bench / "val.csv") as f:
        return {str((bench / row["path"]).resolve()): int(row["label"]) for row in csv.DictReader(f)}


@pytest.mark.parametrize("route", [1, 2, 3])
def test_eval_and_predict_reproduce_the_runs_validation(route, video_runs, video_bench, capsys, tmp_path):
    run = video_runs[route]
    rows = _log(run)
    assert [int(r["epoch"]) for r in rows] == [0, 1] and all(r["eval_top1"] for r in rows)
    held_out, held_out_loss = float(rows[-1]["eval_top1"]), float(rows[-1]["eval_loss"])

    meta = read_model_metadata(run / "model.safetensors")
    with open(video_bench / "train.csv") as f:
        most = max(int(row["label"]) for row in csv.DictReader(f))
    assert meta["classes"] == [str(i) for i in range(most + 1)]  # integer labels: the classes are their indices
    assert meta["fps"] > 0 and meta["task"] in ("video_features", "video_clips")
    assert meta["train_resolution"] == _helpers.VIDEO_SIZE  # route 1: the frame size of the feature extraction
    assert {int(r["resolution"]) for r in rows} == {_helpers.VIDEO_SIZE}
    if route != 1:
        assert meta["num_frames"] in (8, 4)

    capsys.readouterr()
    assert main(["eval", str(run), "--no-progress", "--json", str(tmp_path / "eval.json"),
                 "--report", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["top1"] == pytest.approx(held_out, abs=1e-3) and report["loss"] == pytest.approx(held_out_loss, rel=1e-4)
    assert report["count"] == 6 and len(report["confusion"]) == len(meta["classes"])
    assert sum(map(sum, report["confusion"])) == 6 and report["top5"] >= report["top1"]
    assert (tmp_path / "report" / "confusion.png").stat().st_size > 1000
    assert json.loads((tmp_path / "report" / "report.json").read_text())["top1"] == report["top1"]

    capsys.readouterr()
    assert main(["predict", str(run), str(video_bench / "val"), "--json"]) == 0
    predictions = json.loads(capsys.readouterr().out)
    labels = _labels(video_bench)
    assert len(predictions) == 6
    correct = sum(int(p["top"][0]["class"]) == labels[str(Path(p["input"]).resolve())] for p in predictions)
    assert 100 * correct / 6 == pytest.approx(report["top1"])
    by_path = {str(Path(v["path"]).resolve()): v["predicted"] for v in report["videos"]}
    assert {str(Path(p["input"]).resolve()): p["top"][0]["class"] for p in predictions} == by_path  # video by video


def test_streaming_predict_equals_the_offline_logits(video_runs, video_bench):
    """A causal ViS4mer consumes the video chunk by chunk (random chunk sizes); the last running
    logits equal the offline forward on the whole sequence."""
    import torch

    from s4vision.engine.predict import Predictor

    video = video_bench / "val" / "val_00002.mp4"
    offline = Predictor(video_runs[1], device="cpu").predict_video(video).logits
    generator = torch.Generator().manual_seed(0)
    for chunk in [1, *torch.randint(2, 40, (3,), generator=generator).tolist()]:
        streamed = Predictor(video_runs[1], device="cpu", chunk=chunk).predict_video(video, stream=True)
        torch.testing.assert_close(streamed.logits, offline, rtol=1e-4, atol=1e-5)
        assert len(streamed.updates) == -(-_helpers.VIDEO_FRAMES // chunk)
        assert streamed.updates[-1][0] == pytest.approx((_helpers.VIDEO_FRAMES - 1) / _helpers.VIDEO_FPS)


def test_stream_prints_the_running_prediction_and_refuses_a_bidirectional_head(video_runs, video_bench, capsys):
    video = str(video_bench / "val" / "val_00000.mp4")
    assert main(["predict", str(video_runs[1]), video, "--stream", "--chunk", "10"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[1] for line in lines[:4]] == ["1.12", "2.38", "3.62", "3.88"]  # seconds after each chunk
    assert lines[4].split()[:3] == ["input", "class", "probability"]
    assert main(["predict", str(video_runs[2]), video, "--stream"]) == 2
    assert "needs a causal head" in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_video_run_resumes_to_the_same_weights(video_bench, tmp_path):
    """Route 2 (random segment sampling, decoded clips) killed with SIGKILL mid-epoch, resumed with
    --resume: the final weights equal an uninterrupted run's."""
    cfg = _helpers.route_config(2, video_bench, tmp_path / "unused", train={"checkpoint_every": 2,
                                                                            "keep_checkpoints": 50},
                                data={"batch_size": 2})
    config = _helpers.write_config(tmp_path / "route2.yaml", cfg)
    run, reference = tmp_path / "killed", tmp_path / "reference"
    _helpers.kill_and_resume([str(config)], reference, run)
    _helpers.assert_same_weights(load_file(str(run / "model.safetensors")),
                                 load_file(str(reference / "model.safetensors")))
    assert [int(r["epoch"]) for r in _log(run)] == [0, 1]


def test_two_process_torchrun_on_cpu_for_cached_features(video_bench, tmp_path):
    """Route 1 under torchrun (DDP, gloo): both ranks end with the same weights, each saw half of
    every epoch, and the exported model is rank 0's."""
    import torch

    cfg = _helpers.route_config(1, video_bench, tmp_path / "run", data={"batch_size": 2})
    config = _helpers.write_config(tmp_path / "route1.yaml", cfg)
    rank0, rank1, exported = _helpers.torchrun_two_ranks(tmp_path, ["--config", str(config)])
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    assert all(torch.equal(exported[k], rank0[k]) for k in rank0)
    assert [int(r["step"]) for r in _log(tmp_path / "run")] == [3, 6]  # 12 videos / 2 ranks / batch 2 per epoch


def _memory_tool():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "tools" / "bench_predict_memory.py"
    spec = importlib.util.spec_from_file_location("bench_predict_memory", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_streaming_memory_does_not_grow_with_the_videos_length(video_runs, tmp_path):
    """``s4vision predict --stream`` in a fresh process on videos of 2,000 and 20,000 frames:
    the peak resident memory is the same within a few MiB (the 18,000 extra frames, held as the
    float clip a non-streaming model would take, are 211 MiB)."""
    tool = _memory_tool()
    env = _helpers.subprocess_env(OMP_NUM_THREADS="1")
    peaks = {}
    for frames in (2_000, 20_000):
        video = tool.write_long_video(tmp_path / f"long_{frames}.mp4", frames, size=_helpers.VIDEO_SIZE)
        row = tool.peak_rss_of_predict(video_runs[1], video, chunk=512, env=env)
        assert row["updates"] == -(-frames // 512)
        assert float(row["last_update"].split()[1]) == pytest.approx((frames - 1) / _helpers.VIDEO_FPS, abs=0.01)
        peaks[frames] = row["peak_mib"]
    assert peaks[20_000] - peaks[2_000] < 24, peaks


@pytest.mark.parametrize("route", [1, 2])
def test_the_ssm_parameters_of_video_models_get_no_weight_decay(route, video_runs):
    """The engine's parameter groups for a temporal head (route 1) and an encoder + head (route 2):
    every SSM parameter, as ssm_parameter_names names them, sits in the ssm group, without decay."""
    from s4vision.engine.evaluate import load_checkpoint_model
    from s4vision.engine.optim import param_groups
    from s4vision.kernels import ssm_parameter_names

    model, _ = load_checkpoint_model(video_runs[route])
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["name"]: g for g in param_groups(model, lr=1e-3, weight_decay=0.05, ssm_lr=5e-4)}
    expected = ssm_parameter_names(model)
    assert expected and {names[id(p)] for p in groups["ssm"]["params"]} == set(expected)
    assert groups["ssm"]["weight_decay"] == 0 and groups["ssm"]["lr"] == 5e-4
    assert groups["decay"]["weight_decay"] == 0.05
