"""The long-range MNIST video benchmark: files, labels tied to the digits shown, splits."""
import csv
import json

import numpy as np
import pytest

from s4vision.data import VideoClipDataset, VideoReader, make_benchmark
from s4vision.data.video_benchmark import mnist_digits

NUM_FRAMES, FPS, HEAD_SECONDS, SIZE = 40, 8, 1.0, 32
HEAD = int(HEAD_SECONDS * FPS)


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    csv_path = make_benchmark(out, 4, NUM_FRAMES, fps=FPS, size=SIZE, head_seconds=HEAD_SECONDS, seed=3, split="val")
    return out, csv_path


def identify_digit(frame: np.ndarray, images: np.ndarray, labels: np.ndarray) -> int:
    """Label of the split's digit image that best matches the frame at any position
    (brute force: an independent check that the label follows what is shown)."""
    gray = frame[..., 0].astype(np.float32)
    best, best_label = np.inf, -1
    reference = images.astype(np.float32)
    for y in range(SIZE - 28 + 1):
        for x in range(SIZE - 28 + 1):
            crop = gray[y:y + 28, x:x + 28]
            rest = gray.sum() - crop.sum()  # all ink must be inside the crop
            errors = np.abs(reference - crop).mean(axis=(1, 2)) + rest / 784
            k = int(errors.argmin())
            if errors[k] < best:
                best, best_label = errors[k], int(labels[k])
    return best_label


def test_files_and_annotations(benchmark):
    out, csv_path = benchmark
    assert csv_path == out / "val.csv"
    rows = list(csv.reader(open(csv_path)))
    assert rows[0] == ["path", "label"] and len(rows) == 5
    for path, label in rows[1:]:
        assert 0 <= int(label) <= 9
        with VideoReader(out / path) as reader:
            assert len(reader) == NUM_FRAMES and reader.fps == pytest.approx(FPS)
            assert reader.frame_size == (SIZE, SIZE)
    dataset = VideoClipDataset(csv_path, num_frames=8)
    assert len(dataset) == 4 and dataset[0][0].shape == (3, 8, SIZE, SIZE)


def test_label_is_sum_of_first_and_last_digit_shown(benchmark):
    out, csv_path = benchmark
    images, labels = mnist_digits("val")
    meta = json.loads((out / "val.json").read_text())
    rows = list(csv.reader(open(csv_path)))[1:]
    for (path, label), (first, last) in zip(rows, meta["first_last_digits"]):
        with VideoReader(out / path) as reader:
            frames = reader.get_frames([0, HEAD - 1, NUM_FRAMES - HEAD, NUM_FRAMES - 1]).numpy()
        shown = [identify_digit(f, images, labels) for f in frames]
        assert shown == [first, first, last, last]
        assert int(label) == (first + last) % 10


def test_digits_glide_in_straight_lines(benchmark):
    out, _ = benchmark
    with VideoReader(out / "val/val_00001.mp4") as reader:
        frames = reader.get_frames(range(NUM_FRAMES)).numpy()[..., 0].astype(np.float32)
    moved = 0
    for start in range(0, NUM_FRAMES, HEAD):  # five segments of HEAD frames
        ink = frames[start:start + HEAD]
        # The ink's centre of mass moves linearly with time within a segment.
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        centres = np.stack([(ink * yy).sum((1, 2)), (ink * xx).sum((1, 2))], 1) / ink.sum((1, 2))[:, None]
        t = np.arange(HEAD)
        fit = np.polyval(np.polyfit(t, centres, 1)[:, 0], t), np.polyval(np.polyfit(t, centres, 1)[:, 1], t)
        assert np.abs(np.stack(fit, 1) - centres).max() < 1.0
        moved += np.linalg.norm(centres[-1] - centres[0]) > 1
    assert moved >= 3


def test_clips_are_reproducible_and_splits_disjoint(benchmark, tmp_path):
    out, csv_path = benchmark
    again = make_benchmark(tmp_path, 2, NUM_FRAMES, fps=FPS, size=SIZE, head_seconds=HEAD_SECONDS, seed=3, split="val")
    for k in range(2):
        with VideoReader(out / f"val/val_0000{k}.mp4") as a, VideoReader(tmp_path / f"val/val_0000{k}.mp4") as b:
            diff = (a.get_frames(range(NUM_FRAMES)).float() - b.get_frames(range(NUM_FRAMES)).float()).abs()
        # Same rendered clip; x264 is not bit-exact on frames this small (it reads
        # uninitialised memory), so allow a few levels of encoding noise.
        assert diff.mean() < 0.5 and diff.max() <= 64
    assert list(csv.reader(open(again)))[1:] == list(csv.reader(open(csv_path)))[1:3]

    train_images, train_labels = mnist_digits("train")
    val_images, val_labels = mnist_digits("val")
    assert np.bincount(train_labels).tolist() == [400] * 10 and np.bincount(val_labels).tolist() == [100] * 10
    train_set = {image.tobytes() for image in train_images}
    assert not any(image.tobytes() in train_set for image in val_images)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(num_frames=16), ValueError),  # no room between head and tail
        (dict(split="test"), ValueError),
        (dict(size=31), ValueError),
        (dict(num_videos=0), ValueError),
        (dict(fps=0), ValueError),
        (dict(num_frames=64.0), ValueError),
    ],
)
def test_argument_errors(tmp_path, kwargs, error):
    args = dict(num_videos=1, num_frames=64) | kwargs
    with pytest.raises(error):
        make_benchmark(tmp_path, args.pop("num_videos"), args.pop("num_frames"), **args)


# -- frame rates and timestamps ----------------------------------------------------------------

from s4vision.data.video_benchmark import clip_timestamps, frame_layout, plan_clip, render_clip  # noqa: E402


def test_same_content_at_another_frame_rate_and_jittered(benchmark, tmp_path):
    out, csv_path = benchmark
    fast = make_benchmark(tmp_path / "fast", 2, NUM_FRAMES, fps=FPS, size=SIZE, head_seconds=HEAD_SECONDS, seed=3,
                          split="val", render_fps=2 * FPS)
    jittered = make_benchmark(tmp_path / "jit", 2, NUM_FRAMES, fps=FPS, size=SIZE, head_seconds=HEAD_SECONDS, seed=3,
                              split="val", jitter=0.6)
    assert list(csv.reader(open(fast)))[1:] == list(csv.reader(open(jittered)))[1:] == list(csv.reader(open(csv_path)))[1:3]
    with VideoReader(out / "val/val_00000.mp4") as native, VideoReader(tmp_path / "fast/val/val_00000.mp4") as twice:
        assert len(twice) == 2 * NUM_FRAMES and twice.fps == pytest.approx(2 * FPS)
        a = native.get_frames(range(NUM_FRAMES)).float()
        b = twice.get_frames(range(0, 2 * NUM_FRAMES, 2)).float()  # the frames at the native timestamps
        assert (a - b).abs().mean() < 1.0
    with VideoReader(tmp_path / "jit/val/val_00000.mp4") as reader:
        t = reader.timestamps().numpy()
    i = np.arange(NUM_FRAMES)
    assert len(t) == NUM_FRAMES and np.all(np.diff(t) > 0)
    assert np.all(t >= i / FPS - 1e-4) and np.all(t < (i + 0.6) / FPS + 1e-4) and np.ptp(t * FPS - i) > 0.2
    meta = json.loads((tmp_path / "jit/val.json").read_text())
    assert meta["jitter"] == 0.6 and meta["render_fps"] == FPS


def test_frame_layout_follows_time():
    """The digit's position is a function of time: at the native rate the segments' frames, in
    between on the straight path, and a frame's segment is the one its timestamp falls in."""
    rng = np.random.default_rng(0)
    bounds = [(0, 8), (8, 16), (16, 24)]
    plan = plan_clip(rng, 1000, bounds, SIZE, fps=8)
    native_segment, native_pos = frame_layout(plan, np.arange(24) / 8)
    assert native_segment.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    assert native_pos[0].tolist() == plan.motions[0, 0].tolist() and native_pos[7].tolist() == plan.motions[0, 1].tolist()
    segment, pos = frame_layout(plan, np.arange(48) / 16)
    assert np.array_equal(segment[::2], native_segment) and np.array_equal(pos[::2], native_pos)
    # half-way between two native frames the position is half-way (to a pixel)
    mid = (native_pos[2] + native_pos[3]) / 2
    assert np.abs(pos[5] - mid).max() <= 0.5
    # the same draws as render_clip: rendering a plan at its own rate reproduces it
    images = np.random.default_rng(1).integers(0, 255, (3, 28, 28), dtype=np.uint8)
    frames = render_clip(images, bounds, SIZE, np.random.default_rng(7))
    rng = np.random.default_rng(7)  # render_clip's draws: each segment's start and end corner
    for k, (start, stop) in enumerate(bounds):
        begin, end = rng.integers(0, SIZE - 28 + 1, size=(2, 2))
        for i in range(start, stop):
            y, x = np.rint(begin + (end - begin) * (i - start) / (stop - start - 1)).astype(int)
            assert np.array_equal(frames[i, y:y + 28, x:x + 28, 0], images[k])


def test_clip_timestamps():
    t = clip_timestamps(4.0, 8)
    np.testing.assert_allclose(t, np.arange(32) / 8)
    assert len(clip_timestamps(4.0, 3)) == 12
    j = clip_timestamps(4.0, 8, 0.5, np.random.default_rng(0))
    assert np.all(np.diff(j) > 0) and np.all((j * 8 - np.arange(32) >= 0) & (j * 8 - np.arange(32) < 0.5)) and j[0] == 0
    with pytest.raises(ValueError, match="jitter"):
        clip_timestamps(4.0, 8, 1.0)
