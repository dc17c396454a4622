"""Annotation-file datasets: clip contents, sampling, labels and bad-file handling."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from s4vision.data import (
    BadVideoFilesError,
    RandomSegmentSampler,
    SlidingWindowSampler,
    VideoClipDataset,
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
    clip, label = dataset[1]
    assert clip.shape == (3, 6, 16, 24) and clip.dtype == torch.float32 and label == 5
    indices = [int((k + 0.5) * lengths["sub/c.mp4"] / 6) for k in range(6)]
    with VideoReader(root / "sub/c.mp4", size=(16, 24)) as reader:
        frames = reader.get_frames(indices).numpy().astype(np.float32) / 255  # (T, H, W, 3)
    expected = (frames - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    np.testing.assert_allclose(clip.numpy(), expected.transpose(3, 0, 1, 2), atol=1e-6)

    batch, labels = next(iter(DataLoader(dataset, batch_size=2)))
    assert batch.shape == (2, 3, 6, 16, 24) and labels.tolist() == [2, 5]


def test_time_spans_and_dense_windows(videos, tmp_path):
    root, lengths = videos
    # b.mp4 holds 40 frames = 5 s at 8 fps; the span 1 s - 3 s is frames 8..23.
    csv = write_csv(tmp_path / "ann.csv", ["b.mp4,1,1.0,3.0", "a.mp4,0"])
    dataset = VideoClipDataset(csv, root, sampler=SlidingWindowSampler(1.0, unit="seconds"), mean=None, std=None)
    assert len(dataset) == 2 + 3  # two windows in the span, three over a.mp4's 24 frames
    assert dataset.labels == [1, 1, 0, 0, 0]
    second, _ = dataset[1]
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
