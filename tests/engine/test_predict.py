"""``s4vision predict`` on images, and the bad input of ``predict`` and video ``eval``: each gives one
line naming the file or value (exit status 2), and nothing is predicted from a wrong input."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import _helpers
from s4vision.cli import main
from s4vision.data import write_video


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _damaged_copy(source, target):
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("image")
    config = _helpers.write_config(tmp / "tiny.yaml", {
        "model": {"name": _helpers.TINY}, "data": {"dataset": "digits", "resolution": 8, "batch_size": 64},
        "train": {"epochs": 1, "max_steps": 4, "progress": False, "threads": 1, "output_dir": str(tmp / "run")}})
    assert main(["train", str(config)]) == 0
    return tmp / "run"


def test_images_are_predicted_as_the_model_sees_them(image_run, tmp_path, capsys):
    from s4vision.data import create_image_dataset
    from s4vision.engine.evaluate import evaluation_loader, load_checkpoint_model

    data = create_image_dataset("digits", "test")
    folder = tmp_path / "digits"
    folder.mkdir()
    for i in range(3):
        pixels = (data[i][0][0].numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    capsys.readouterr()
    assert main(["predict", str(image_run), str(folder), "--json", "--top-k", "3"]) == 0
    predictions = json.loads(capsys.readouterr().out)
    model, _ = load_checkpoint_model(image_run)
    images, _ = next(iter(evaluation_loader(data, 8, batch_size=3)))
    with torch.no_grad():
        expected = model(images).softmax(dim=1)
    for i, p in enumerate(predictions):
        assert p["input"].endswith(f"{i}.png") and len(p["top"]) == 3
        assert p["top"][0]["class"] == str(int(expected[i].argmax()))
        assert p["top"][0]["probability"] == pytest.approx(float(expected[i].max()), abs=0.02)  # PNG rounding
    assert main(["predict", str(image_run), str(folder / "0.png")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["input", "class", "probability"] and "0.png" in table[2]


def test_an_image_model_refuses_videos_and_a_video_model_images(image_run, video_runs, video_bench, tmp_path, capsys):
    video = video_bench / "val" / "val_00000.mp4"
    line = _error(capsys, ["predict", str(image_run), str(video)])
    assert "is an image model (task image) but" in line and "val_00000.mp4 is a video" in line
    Image.new("L", (8, 8)).save(tmp_path / "a.png")
    line = _error(capsys, ["predict", str(video_runs[1]), str(tmp_path / "a.png")])
    assert "is a video model (task video_features)" in line and "a.png is an image" in line
    line = _error(capsys, ["eval", str(video_runs[1]), "--resolutions", "8"])
    assert "is a video model; --resolutions are for image checkpoints" in line
    line = _error(capsys, ["eval", str(image_run), "--data", str(video_bench / "val.csv"), "--resolutions", "8"])
    assert "is an image model; --data are for video checkpoints" in line


def test_inputs_that_are_not_there(video_runs, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    line = _error(capsys, ["predict", str(video_runs[1]), str(tmp_path / "empty")])
    assert f"no image or video files in directory {tmp_path / 'empty'}" in line
    line = _error(capsys, ["predict", str(video_runs[1]), str(tmp_path / "gone.mp4")])
    assert f"no such file or directory: {tmp_path / 'gone.mp4'}" in line
    (tmp_path / "notes.txt").write_text("x")
    assert "notes.txt is neither an image nor a video file" in _error(capsys, ["predict", str(video_runs[1]),
                                                                               str(tmp_path / "notes.txt")])


def test_damaged_videos_among_many_are_listed_and_skipped_only_when_asked(video_runs, video_bench, tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("val_00000.mp4", "val_00001.mp4"):
        (folder / name).write_bytes((video_bench / "val" / name).read_bytes())
    _damaged_copy(video_bench / "val" / "val_00002.mp4", folder / "truncated.mp4")
    (folder / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    line = _error(capsys, ["predict", str(video_runs[1]), str(folder)])
    assert line.startswith("error: 2 of 4 inputs cannot be predicted") and "--skip-bad" in line
    assert "noise.mp4" in line and "truncated.mp4" in line and "val_00000" not in line
    assert main(["predict", str(video_runs[1]), str(folder), "--skip-bad", "--json"]) == 0
    captured = capsys.readouterr()
    assert [p["input"].rsplit("/", 1)[-1] for p in json.loads(captured.out)] == ["val_00000.mp4", "val_00001.mp4"]
    assert "warning: skipping 2 of 4 inputs cannot be predicted" in captured.err


def test_short_videos_and_other_frame_rates(video_runs, tmp_path, capsys):
    """Route 3 cuts windows of 4 samples at 4 fps (1 s): a 0.4 s video is refused under the
    default 'reject' policy; a 16 fps video is resampled by time, with a warning naming it."""
    write_video(tmp_path / "short.mp4", np.zeros((3, 32, 32, 3), np.uint8), 8)
    line = _error(capsys, ["predict", str(video_runs[3]), str(tmp_path / "short.mp4")])
    assert "short.mp4" in line and "shorter than a clip" in line and "'loop' or 'pad'" in line
    write_video(tmp_path / "fast.mp4", np.zeros((64, 32, 32, 3), np.uint8), 16)
    assert main(["predict", str(video_runs[3]), str(tmp_path / "fast.mp4"), "--json"]) == 0
    err = capsys.readouterr().err
    assert "warning: video" in err and "fast.mp4 is at 16 fps but the model was trained on 8 fps videos; its frames " \
                                      "are taken at 4 fps by time" in err


def test_eval_refuses_data_of_the_other_kind_and_other_feature_sizes(video_runs, video_bench, tmp_path, capsys):
    line = _error(capsys, ["eval", str(video_runs[1]), "--data", str(video_bench / "val.csv")])
    assert "is a temporal head on cached features" in line and "val.csv" in line
    line = _error(capsys, ["eval", str(video_runs[2]), "--data", str(video_bench / "features" / "val")])
    assert "takes decoded clips" in line and "features/val" in line
    cache = tmp_path / "cache"
    cache.mkdir()
    save_file({"features": torch.zeros(32, 5), "frame_indices": torch.arange(32),
               "timestamps": torch.arange(32, dtype=torch.float64) / 8}, str(cache / "v.safetensors"))
    (cache / "index.json").write_text(json.dumps({"settings": {"model": "other"}, "classes": None, "videos": [
        {"path": "v.mp4", "label": 1, "start": None, "end": None, "features": "v.safetensors", "shape": [32, 5],
         "fps": 8.0}]}))
    line = _error(capsys, ["eval", str(video_runs[1]), "--data", str(cache)])
    assert "holds 5-dim features but checkpoint" in line and "trained on 64-dim ones (from test_convnext)" in line


def test_eval_refuses_unknown_classes(video_runs, video_bench, tmp_path, capsys):
    (tmp_path / "val.csv").write_text(f"path,label\n{video_bench / 'val' / 'val_00000.mp4'},3\n"
                                      f"{video_bench / 'val' / 'val_00001.mp4'},12\n")
    line = _error(capsys, ["eval", str(video_runs[2]), "--data", str(tmp_path / "val.csv")])
    assert "val.csv:3: class index 12 is out of range for the" in line


def test_training_names_videos_shorter_than_a_clip_before_any_work(video_bench, tmp_path, capsys):
    from s4vision.engine.config import config_from_dict
    from s4vision.engine.train import Trainer

    cfg = _helpers.route_config(3, video_bench, tmp_path / "run", video={"num_frames": 40, "sampler": "uniform",
                                                                        "fps": None, "eval_windows": "uniform"})
    config = _helpers.write_config(tmp_path / "short.yaml", cfg)
    line = _error(capsys, ["train", str(config)])
    assert "12 of 12 videos are shorter than a clip" in line and "train_00000.mp4" in line and "'loop' or 'pad'" in line
    assert not (tmp_path / "run").exists()
    cfg["video"]["short"] = "loop"
    trainer = Trainer(config_from_dict(cfg))  # loops the 32 frames to 40 samples
    clip, _, times = trainer.train_set[0]
    assert clip.shape[1] == 40 and (times.diff() > 0).all()


def test_eval_lists_damaged_videos_among_many_and_skips_them_only_when_asked(video_runs, video_bench, tmp_path,
                                                                              capsys):
    """Two damaged files among the six held-out videos: eval names both and evaluates nothing;
    with --skip-bad it scores the other six, with the run's own figures."""
    val = video_bench / "val"
    _damaged_copy(val / "val_00002.mp4", tmp_path / "truncated.mp4")
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    rows = (video_bench / "val.csv").read_text().strip().splitlines()
    (tmp_path / "val.csv").write_text("\n".join([rows[0], *(f"{val.parent / r.split(',')[0]},{r.split(',', 1)[1]}"
                                                              for r in rows[1:]),
                                                 f"{tmp_path / 'truncated.mp4'},1", f"{tmp_path / 'noise.mp4'},2"]))
    argv = ["eval", str(video_runs[2]), "--data", str(tmp_path / "val.csv"), "--no-progress",
            "--report", str(tmp_path / "report")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 2 of 8 videos cannot be read") and "--skip-bad" in err and "Traceback" not in err
    assert "truncated.mp4" in err and "noise.mp4" in err and "val_00000" not in err
    assert not (tmp_path / "report" / "report.json").exists()
    assert main(argv + ["--skip-bad", "--json", str(tmp_path / "eval.json")]) == 0
    err = capsys.readouterr().err
    assert "warning: skipping 2 of 8 videos cannot be read" in err
    assert "truncated.mp4" in err and "noise.mp4" in err
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["count"] == 6 and {Path(v["path"]).name for v in report["videos"]} == {
        f"val_0000{i}.mp4" for i in range(6)}
    with open(video_runs[2] / "log.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert report["top1"] == pytest.approx(float(last["eval_top1"]), abs=1e-3)
    assert report["loss"] == pytest.approx(float(last["eval_loss"]), rel=1e-4)


def test_eval_and_predict_take_frames_by_time_from_videos_at_another_rate(video_runs, video_bench, tmp_path, capsys):
    """The held-out videos rendered at 16 fps (the same scenes, twice the frames): route 3 (windows
    of 4 samples at 4 fps) names them in a warning and takes the frames at the same times, so its
    predictions equal those on the 8 fps originals (up to H.264 noise). Taking frames by index
    instead would cover half the time span and change them."""
    from s4vision.data import make_benchmark
    from s4vision.engine.predict import Predictor

    fast_csv = make_benchmark(tmp_path / "fast", 6, _helpers.VIDEO_FRAMES, fps=_helpers.VIDEO_FPS,
                              size=_helpers.VIDEO_SIZE, head_seconds=1.0, split="val", render_fps=2 * _helpers.VIDEO_FPS)
    assert fast_csv.read_text() == (video_bench / "val.csv").read_text()  # the same clips and labels
    reports = {}
    for name, data in (("native", video_bench / "val.csv"), ("fast", fast_csv)):
        capsys.readouterr()
        assert main(["eval", str(video_runs[3]), "--data", str(data), "--no-progress", "--json",
                     str(tmp_path / f"{name}.json"), "--report", str(tmp_path / name)]) == 0
        reports[name] = (json.loads((tmp_path / f"{name}.json").read_text()), capsys.readouterr().err)
    (native, _), (fast, warned) = reports["native"], reports["fast"]
    assert "warning: 6 of 6 videos are not at the model's frame rate 8 fps (val_00000.mp4 at 16 fps" in warned
    assert "resampled by time" in warned
    assert [v["predicted"] for v in fast["videos"]] == [v["predicted"] for v in native["videos"]]
    assert fast["loss"] == pytest.approx(native["loss"], rel=0.05)

    predictor = Predictor(video_runs[3], device="cpu")
    original = predictor.predict_video(video_bench / "val" / "val_00001.mp4")
    with pytest.warns(RuntimeWarning, match="val_00001.mp4 is at 16 fps"):
        resampled = predictor.predict_video(tmp_path / "fast" / "val" / "val_00001.mp4")
    assert resampled.clips == original.clips
    torch.testing.assert_close(resampled.logits, original.logits, atol=0.05, rtol=0.05)
