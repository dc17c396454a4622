"""``s4vision predict`` on images, and the bad input of ``predict`` and video ``eval``: each gives one
line naming the file or value (exit status 2), and nothing is predicted from a wrong input."""
import json

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
    data = (video_bench / "val" / "val_00002.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
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
