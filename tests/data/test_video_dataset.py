"""Annotation-file datasets: clip contents, sampling, labels and bad-file handling."""
import json
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from s4vision.data import (
    BadVideoFilesError,
    RandomSegmentSampler,
    ShortVideoError,
    SlidingWindowSampler,
    UniformClipSampler,
    UnknownClassError,
    VideoClipDataset,
    WindowSampler,
    VideoReader,
    read_annotations,
    write_video,
)

FPS = 8
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    rng = np.random.default_rng(0)
    lengths = {"a.mp4": 24, "b.mp4": 40, "sub/c.mp4": 17}
    for name, length in lengths.items():
        (root / name).parent.mkdir(exist_ok=True)
        frames = np.repeat(rng.integers(0, 256, (length, 8, 8, 3), dtype=np.uint8), 4, axis=1).repeat(4, axis=2)
        write_video(root / name, frames, FPS)
    (root / "random.mp4").write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    return root, lengths


def write_csv(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_annotations(videos, tmp_path):
    root, _ = videos
    csv = write_csv(tmp_path / "a.csv", ["path,label,start,end", "a.mp4,3", "# comment", "", "b.mp4,1,0.5,", "/abs/c.mp4,0,,2"])
    records, classes = read_annotations(csv, root)
    assert classes is None
    assert [(r.path, r.label, r.start, r.end) for r in records] == [
        (str(root / "a.mp4"), 3, None, None),
        (str(root / "b.mp4"), 1, 0.5, None),
        ("/abs/c.mp4", 0, None, 2.0),
    ]
    named = write_csv(tmp_path / "n.csv", ["a.mp4,walk", "b.mp4,run", "c.mp4,walk"])
    records, classes = read_annotations(named)
    assert classes == ["run", "walk"] and [r.label for r in records] == [1, 0, 1]
    assert records[0].path == str(tmp_path / "a.mp4")  # root defaults to the CSV's folder

    for bad, message in [("a.mp4", "expected"), ("a.mp4,1,x", "start"), ("a.mp4,1,3,2", "after start"), ("a.mp4,1,-1,", ">= 0")]:
        with pytest.raises(ValueError, match=message):
            read_annotations(write_csv(tmp_path / "bad.csv", [bad]))
    with pytest.raises(FileNotFoundError):
        read_annotations(tmp_path / "missing.csv")


def test_clips_are_normalised_frames(videos, tmp_path):
    root, lengths = videos
    csv = write_csv(tmp_path / "ann.csv", ["a.mp4,2", "sub/c.mp4,5"])
    dataset = VideoClipDataset(csv, root, num_frames=6, mean=MEAN, std=STD, size=(16, 24))
    assert len(dataset) == 2 and dataset.labels == [2, 5] and dataset.bad_files == []
    clip, label, times = dataset[1]
    assert clip.shape == (3, 6, 16, 24) and clip.dtype == torch.float32 and label == 5
    indices = [int((k + 0.5) * lengths["sub/c.mp4"] / 6) for k in range(6)]
    with VideoReader(root / "sub/c.mp4", size=(16, 24)) as reader:
        frames = reader.get_frames(indices).numpy().astype(np.float32) / 255  # (T, H, W, 3)
    expected = (frames - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    np.testing.assert_allclose(clip.numpy(), expected.transpose(3, 0, 1, 2), atol=1e-6)
    assert times.tolist() == pytest.approx([i / FPS for i in indices])

    batch, labels, stamps = next(iter(DataLoader(dataset, batch_size=2)))
    assert batch.shape == (2, 3, 6, 16, 24) and labels.tolist() == [2, 5] and stamps.shape == (2, 6)


def test_time_spans_and_dense_windows(videos, tmp_path):
    root, lengths = videos
    # b.mp4 holds 40 frames = 5 s at 8 fps; the span 1 s - 3 s is frames 8..23.
    csv = write_csv(tmp_path / "ann.csv", ["b.mp4,1,1.0,3.0", "a.mp4,0"])
    dataset = VideoClipDataset(csv, root, sampler=SlidingWindowSampler(1.0, unit="seconds"), mean=None, std=None)
    assert len(dataset) == 2 + 3  # two windows in the span, three over a.mp4's 24 frames
    assert dataset.labels == [1, 1, 0, 0, 0]
    second, _, _ = dataset[1]
    with VideoReader(root / "b.mp4") as reader:
        frames = reader.get_frames(range(16, 24)).permute(3, 0, 1, 2).float() / 255
    torch.testing.assert_close(second, frames)


def test_random_segments_redraw_per_access(videos, tmp_path):
    root, _ = videos
    csv = write_csv(tmp_path / "ann.csv", ["b.mp4,1"])
    dataset = VideoClipDataset(csv, root, sampler=RandomSegmentSampler(4))
    assert len(dataset) == 1
    torch.manual_seed(0)
    clips = [dataset[0][0] for _ in range(4)]
    assert clips[0].shape == (3, 4, 32, 32)
    assert any(not torch.equal(clips[0], c) for c in clips[1:])


def test_bad_files_are_reported_not_skipped_silently(videos, tmp_path):
    root, _ = videos
    csv = write_csv(tmp_path / "ann.csv", ["a.mp4,0", "missing.mp4,1", "random.mp4,2", "b.mp4,3", "a.mp4,4,9.0,"])
    with pytest.raises(BadVideoFilesError) as info:
        VideoClipDataset(csv, root)
    reported = {path: reason for path, reason in info.value.bad_files}
    assert set(reported) == {str(root / "missing.mp4"), str(root / "random.mp4"), str(root / "a.mp4")}
    assert "MissingFileError" in reported[str(root / "missing.mp4")]
    assert "VideoDecodeError" in reported[str(root / "random.mp4")]
    assert "3 of 5 videos" in str(info.value) and "skip_bad=True" in str(info.value)

    with pytest.warns(RuntimeWarning, match="3 of 5 videos"):
        dataset = VideoClipDataset(csv, root, skip_bad=True)
    assert len(dataset) == 2 and dataset.labels == [0, 3] and len(dataset.bad_files) == 3


def test_an_annotation_ending_past_the_video_is_warned(videos, tmp_path):
    root, lengths = videos  # a.mp4: 24 frames at 8 fps, 3 s
    csv = write_csv(tmp_path / "late.csv", [f"{root / 'a.mp4'},0,1,9.5", f"{root / 'b.mp4'},1,0,5.0"])
    with pytest.warns(RuntimeWarning, match=r"a\.mp4 lasts 3\.000 s but its annotation ends at 9\.5 s") as record:
        data = VideoClipDataset(csv, num_frames=4, progress=False)
    assert len(record) == 1  # b.mp4 ends exactly at 5 s: no warning
    assert data[0][0].shape[1] == 4  # the span is cut at the video's end


def _feature_cache(tmp_path):
    from safetensors.torch import save_file

    save_file({"features": torch.ones(5, 3), "frame_indices": torch.arange(5),
               "timestamps": torch.arange(5, dtype=torch.float64) / 4}, str(tmp_path / "v.safetensors"))
    (tmp_path / "index.json").write_text(
        '{"settings": {}, "videos": [{"path": "v.mp4", "label": 2, "start": null, "end": null, '
        '"features": "v.safetensors", "shape": [5, 3]}], "failed": []}')
    return tmp_path


def test_feature_dataset_names_the_files_it_cannot_read(tmp_path):
    from s4vision.data import VideoFeatureDataset

    cache = _feature_cache(tmp_path)
    assert VideoFeatureDataset(cache)[0][1] == 2
    data = (cache / "v.safetensors").read_bytes()
    (cache / "v.safetensors").write_bytes(data[:-8])
    with pytest.raises(ValueError, match="cannot read feature file .*v.safetensors.*rerun extract-features"):
        VideoFeatureDataset(cache)[0]
    (cache / "v.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="feature file .*v.safetensors.* is missing"):
        VideoFeatureDataset(cache)[0]
    (cache / "index.json").write_text('{"settings": {}, "vid')
    with pytest.raises(ValueError, match="feature index .*index.json.* is damaged"):
        VideoFeatureDataset(cache)


# -- timestamps, class names, short videos, frame rates -----------------------------------------------


def _write_vfr(path, stamps_ms, size=16):
    """An H.264 file whose frames are shown at the given times (milliseconds): variable frame rate."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, stamp in enumerate(stamps_ms):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), 10 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = stamp, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_samples_carry_the_decoders_timestamps(tmp_path):
    stamps = [0, 40, 70, 150, 160, 230, 400, 420, 480, 600, 610, 700]  # irregular, in ms
    _write_vfr(tmp_path / "vfr.mp4", stamps)
    with VideoReader(tmp_path / "vfr.mp4") as reader:
        assert reader.timestamps().tolist() == pytest.approx([t / 1000 for t in stamps])
    csv = write_csv(tmp_path / "ann.csv", ["vfr.mp4,0"])
    dataset = VideoClipDataset(csv, sampler=UniformClipSampler(4), mean=None, std=None, progress=False)
    _, _, times = dataset[0]
    chosen = [int((k + 0.5) * len(stamps) / 4) for k in range(4)]
    assert times.tolist() == pytest.approx([stamps[i] / 1000 for i in chosen])


def test_grey_frames_and_central_crop(videos, tmp_path):
    root, lengths = videos
    csv = write_csv(tmp_path / "ann.csv", ["b.mp4,1"])
    dataset = VideoClipDataset(csv, root, num_frames=3, size=(16, 24), crop=16, mean=(0.5,), std=(0.25,), progress=False)
    clip, _, _ = dataset[0]
    with VideoReader(root / "b.mp4", size=(16, 24)) as reader:
        frames = reader.get_frames(dataset._clip(0)[1].indices).float() / 255  # (T, H, W, 3)
    expected = (frames.mean(dim=-1)[:, :, 4:20] - 0.5) / 0.25
    assert clip.shape == (1, 3, 16, 16)
    torch.testing.assert_close(clip[0], expected)


def test_validation_names_are_mapped_by_the_training_classes(videos, tmp_path):
    root, _ = videos
    train = write_csv(tmp_path / "train.csv", ["a.mp4,walk", "b.mp4,run"])
    val = write_csv(tmp_path / "val.csv", ["b.mp4,walk"])
    train_set = VideoClipDataset(train, root, num_frames=4, progress=False)
    val_set = VideoClipDataset(val, root, num_frames=4, classes=train_set.classes, progress=False)
    assert train_set.classes == ["run", "walk"] and val_set.labels == [1]
    write_csv(val, ["b.mp4,walk", "a.mp4,swim"])
    with pytest.raises(UnknownClassError, match=r"val.csv:2: unknown class 'swim' \(known classes: run, walk\)"):
        VideoClipDataset(val, root, num_frames=4, classes=train_set.classes, progress=False)


def test_short_videos_are_named_or_looped(videos, tmp_path):
    root, lengths = videos  # sub/c.mp4 has 17 frames
    csv = write_csv(tmp_path / "ann.csv", ["a.mp4,0", "sub/c.mp4,1"])
    with pytest.raises(ShortVideoError, match=r"1 of 2 videos are shorter than a clip: .*c\.mp4: the span holds 17"):
        VideoClipDataset(csv, root, sampler=UniformClipSampler(20), progress=False)
    looped = VideoClipDataset(csv, root, sampler=UniformClipSampler(20, short="loop"), mean=None, std=None,
                              progress=False)
    clip, _, times = looped[1]
    assert clip.shape[1] == 20 and torch.equal(clip[:, 17:], clip[:, :3])  # played again from the start
    assert (times.diff() > 0).all()


def test_videos_at_another_frame_rate_are_named_in_one_warning(videos, tmp_path):
    root, _ = videos
    write_video(tmp_path / "fast.mp4", np.zeros((30, 16, 16, 3), np.uint8), 24)
    csv = write_csv(tmp_path / "ann.csv", [f"{root / 'a.mp4'},0", "fast.mp4,1"])
    with pytest.warns(RuntimeWarning, match=r"1 of 2 videos are not at the model's frame rate 8 fps \(fast.mp4 at 24 "
                                            r"fps\); their frames are resampled by time"):
        data = VideoClipDataset(csv, sampler=WindowSampler(4, 8.0), fps=8.0, progress=False, mean=None, std=None)
    _, _, times = data[1]
    # 1.25 s hold 10 samples at 8 fps; the centred window of 4 starts at sample 3
    assert times.tolist() == pytest.approx([(3 + k) / 8 for k in range(4)])


def test_feature_windows_and_names(tmp_path):
    from safetensors.torch import save_file

    from s4vision.data import VideoFeatureDataset

    stamps = torch.arange(12, dtype=torch.float64) / 4 + 1.0  # 4 steps per second, from 1 s
    save_file({"features": torch.arange(36.0).view(12, 3), "frame_indices": torch.arange(12), "timestamps": stamps},
              str(tmp_path / "v.safetensors"))
    entry = {"path": "v.mp4", "label": 1, "start": None, "end": None, "features": "v.safetensors", "shape": [12, 3],
             "fps": 4.0}
    (tmp_path / "index.json").write_text(json.dumps({"settings": {}, "classes": ["cat", "dog"], "videos": [entry]}))
    whole = VideoFeatureDataset(tmp_path, classes=["ant", "dog", "cat"])
    features, label, times = whole[0]
    assert label == 1 and whole.classes == ["ant", "dog", "cat"] and features.shape == (12, 3)
    assert times.tolist() == pytest.approx(stamps.tolist())
    windows = VideoFeatureDataset(tmp_path, sampler=WindowSampler(4, 2.0, position="sliding"))
    assert len(windows) == 2 and windows.clip_videos == [0, 0]
    features, label, times = windows[1]
    assert label == 1 and windows.classes == ["cat", "dog"]  # the index's own classes
    assert features[:, 0].tolist() == [3.0 * i for i in (4, 6, 8, 10)]  # steps 4, 6, 8, 10 (2 per second)
    assert times.tolist() == pytest.approx([2.0, 2.5, 3.0, 3.5])
    with pytest.raises(UnknownClassError, match=r"video v.mp4 has unknown class 'dog'"):
        VideoFeatureDataset(tmp_path, classes=["cat"])
