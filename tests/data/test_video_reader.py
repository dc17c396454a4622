"""VideoReader: frame accuracy, backend agreement and errors, on real H.264 files."""
import importlib.util

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from s4vision.data import VideoDecodeError, VideoReader, write_video
from s4vision.data import video as video_module

NUM_FRAMES, HEIGHT, WIDTH, FPS = 40, 48, 64, 10


def make_frames(num_frames=NUM_FRAMES, height=HEIGHT, width=WIDTH) -> np.ndarray:
    """Smooth frames whose flat top band encodes the frame number as its brightness,
    so a decoded frame tells which frame it is whatever the decoding path."""
    yy, xx = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        frames[t, ..., 0] = (96 + 64 * np.sin(xx / 9 + t / 5)).astype(np.uint8)
        frames[t, ..., 1] = (96 + 64 * np.cos(yy / 7 - t / 4)).astype(np.uint8)
        frames[t, ..., 2] = 128
        frames[t, : height // 4] = 5 * t + 20
    return frames


def frame_numbers(decoded: np.ndarray) -> np.ndarray:
    band = decoded[:, 2 : HEIGHT // 4 - 2, 2:-2].astype(np.float64).mean(axis=(1, 2, 3))
    return np.rint((band - 20) / 5).astype(int)


def decode_all_pyav(path) -> np.ndarray:
    """Reference: every frame, decoded front to back with plain PyAV (no seeking)."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    # Keyframes every 8 frames and x264's default B-frames: presentation order
    # differs from decoding order, so seeking has to count frames by timestamp.
    path = tmp_path_factory.mktemp("videos") / "clip.mp4"
    write_video(path, make_frames(), FPS, gop_size=8)
    return path


@pytest.fixture(scope="module")
def reference(video):
    return decode_all_pyav(video)


def decord_or_skip():
    pytest.importorskip("decord")


def torchcodec_or_skip():
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except Exception as e:  # not installed, or FFmpeg's shared libraries missing
        pytest.skip(f"torchcodec unusable here: {e}")


BACKENDS = [
    "pyav",
    pytest.param("decord", marks=pytest.mark.skipif(importlib.util.find_spec("decord") is None, reason="no decord")),
    "torchcodec",
]


def test_reference_decodes_the_written_frames(reference):
    assert reference.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(frame_numbers(reference), np.arange(NUM_FRAMES))
    assert np.abs(reference.astype(int) - make_frames()).mean() < 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_metadata(video, backend):
    if backend == "torchcodec":
        torchcodec_or_skip()
    with VideoReader(video, backend=backend) as reader:
        assert len(reader) == NUM_FRAMES
        assert reader.fps == pytest.approx(FPS)
        assert reader.duration == pytest.approx(NUM_FRAMES / FPS)
        assert reader.frame_size == (HEIGHT, WIDTH)


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_access_matches_sequential_decoding(video, reference, backend):
    if backend == "torchcodec":
        torchcodec_or_skip()
    rng = np.random.default_rng(0)
    with VideoReader(video, backend=backend) as reader:
        for _ in range(4):  # unsorted, with repeats, and across several reads of one reader
            indices = rng.integers(0, NUM_FRAMES, size=12)
            frames = reader.get_frames(indices)
            assert frames.dtype == torch.uint8 and frames.shape == (12, HEIGHT, WIDTH, 3)
            np.testing.assert_array_equal(frames.numpy(), reference[indices])
        np.testing.assert_array_equal(reader.get_frames(torch.arange(NUM_FRAMES)).numpy(), reference)
        np.testing.assert_array_equal(frame_numbers(reader.get_frames([39, 0, 17]).numpy()), [39, 0, 17])
        assert reader.get_frames([]).shape == (0, HEIGHT, WIDTH, 3)


def test_pyav_seeks_only_to_skip_ahead(video, monkeypatch):
    seeks = []
    original = video_module._PyAVBackend._seek
    monkeypatch.setattr(video_module._PyAVBackend, "_seek", lambda self, i: (seeks.append(i), original(self, i)))
    with VideoReader(video) as reader:
        reader.get_frames(range(NUM_FRAMES))
        assert seeks == [0]  # one pass for sorted indices
        seeks.clear()
        reader.get_frames([1, 2, 3])  # behind the decoder: seek back once
        assert seeks == [1]
        seeks.clear()
        reader.get_frames([4, 5, 33, 34])  # continue to 5, then jump to the keyframe before 33
        assert seeks == [33]


@pytest.mark.parametrize("size, expected", [(24, (24, 32)), ((30, 40), (30, 40)), (None, (HEIGHT, WIDTH))])
def test_resize_at_decode(video, reference, size, expected):
    with VideoReader(video, size=size) as reader:
        assert reader.frame_size == expected
        frames = reader.get_frames([0, 21])
    assert frames.shape == (2, *expected, 3)
    # Independent reference: bilinear resampling of the native frames with torch.
    native = torch.from_numpy(reference[[0, 21]]).permute(0, 3, 1, 2).float()
    resized = F.interpolate(native, size=expected, mode="bilinear", align_corners=False, antialias=True)
    diff = (frames.permute(0, 3, 1, 2).float() - resized).abs()
    assert diff.mean() < 4


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_backends_agree_on_resized_frames(video, backend):
    if backend == "torchcodec":
        torchcodec_or_skip()
    indices = [0, 13, 39]
    with VideoReader(video, backend="pyav", size=(24, 32)) as a, VideoReader(video, backend=backend, size=(24, 32)) as b:
        diff = (a.get_frames(indices).float() - b.get_frames(indices).float()).abs()
    assert diff.mean() < 3  # resampling filters differ slightly between libraries


def test_decord_width_bug_raises_video_decode_error(tmp_path):
    decord_or_skip()
    path = tmp_path / "w48.mp4"
    write_video(path, make_frames(8, 32, 48), FPS)
    with VideoReader(path, backend="decord") as reader:
        with pytest.raises(VideoDecodeError, match="decord") as info:
            reader.get_frames([0, 1])
        with pytest.raises(VideoDecodeError):
            reader.get_frames([3])  # single frames are mis-shaped rather than refused
    assert info.value.path == str(path) and info.value.backend == "decord"
    with VideoReader(path, backend="pyav") as reader:  # the file itself is fine
        assert reader.get_frames([0, 1]).shape == (2, 32, 48, 3)


def test_torchcodec_missing_gives_clear_error(video, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        video_module.importlib.util, "find_spec", lambda name: None if name == "torchcodec" else real_find_spec(name)
    )
    with pytest.raises(ImportError, match="torchcodec"):
        VideoReader(video, backend="torchcodec")
    assert "torchcodec" not in video_module.available_backends()


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        VideoReader(tmp_path / "nope.mp4")


def corrupt_files(video, tmp_path):
    data = video.read_bytes()
    random_bytes = tmp_path / "random.mp4"
    random_bytes.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    truncated = tmp_path / "truncated.mp4"  # moov atom (the index) at the end: lost
    truncated.write_bytes(data[: len(data) // 2])
    faststart = tmp_path / "faststart.mp4"  # index first, frame data cut off
    with av.open(str(faststart), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for image in make_frames():
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = faststart.read_bytes()
    faststart_truncated = tmp_path / "faststart_truncated.mp4"
    faststart_truncated.write_bytes(data[: len(data) * 2 // 3])
    return [random_bytes, truncated, faststart_truncated]


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_files_raise_video_decode_error(video, tmp_path, backend):
    if backend == "torchcodec":
        torchcodec_or_skip()
    for path in corrupt_files(video, tmp_path):
        with pytest.raises(VideoDecodeError) as info:
            with VideoReader(path, backend=backend) as reader:
                reader.get_frames(range(len(reader)))
        assert str(path) in str(info.value) and backend in str(info.value)


def test_index_and_argument_errors(video):
    with VideoReader(video) as reader:
        with pytest.raises(IndexError, match=r"40 out of range \[0, 40\)"):
            reader.get_frames([0, 40])
        with pytest.raises(IndexError, match="-1"):
            reader.get_frames([-1])
        with pytest.raises(TypeError):
            reader.get_frames([0.5])
        with pytest.raises(TypeError):
            reader.get_frames(3)
        with pytest.raises(TypeError):
            reader.get_frames(torch.tensor([True, False]))
        with pytest.raises(ValueError, match="one-dimensional"):
            reader.get_frames([[0, 1]])
    with pytest.raises(RuntimeError, match="closed"):
        reader.get_frames([0])
    with pytest.raises(ValueError, match="backend"):
        VideoReader(video, backend="opencv")
    with pytest.raises(ValueError, match="positive"):
        VideoReader(video, size=0)
    with pytest.raises(ValueError, match="size must be an int or 2 ints"):
        VideoReader(video, size=(1, 2, 3))
    with pytest.raises(TypeError):
        VideoReader(video, size="large")


def test_write_video_validates(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 31, 32, 3), np.uint8), 8)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "f.mp4", np.zeros((2, 32, 32, 3), np.float32), 8)


def test_paths_as_bytes_and_paths_that_are_not_files(video, tmp_path):
    with VideoReader(bytes(video)) as reader:  # os.fsencode'd paths are paths too
        assert reader.path == str(video) and len(reader) == NUM_FRAMES
    with pytest.raises(ValueError, match=f"{tmp_path}' is a directory, not a video file"):
        VideoReader(tmp_path)
    with pytest.raises(ValueError, match="is a directory"):
        VideoReader(bytes(tmp_path))
    with pytest.raises(TypeError, match="path must be a str, bytes or path object, got int"):
        VideoReader(3)


def test_decord_refuses_a_truncated_file_at_open_whatever_it_would_decode(video, tmp_path):
    """Whether decord itself notices the faststart-truncated file depends on where its reads stop
    (it failed to, once, under load); the packet count taken by demuxing decides, at open."""
    decord_or_skip()
    truncated = corrupt_files(video, tmp_path)[2]
    assert video_module._demuxed_frames(str(truncated))[1] < NUM_FRAMES == video_module._demuxed_frames(str(video))[1]
    with pytest.raises(VideoDecodeError, match="declares 40 frames but only .* present"):
        VideoReader(truncated, backend="decord")
