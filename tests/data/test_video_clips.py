"""Clip samplers, checked against plain Python enumerations of what they should pick."""
import math

import pytest
import torch

from s4vision.data import (
    RandomSegmentSampler,
    SlidingWindowSampler,
    UniformClipSampler,
    segment_indices,
    sliding_windows,
    uniform_indices,
)
from s4vision.data.clips import frame_span


@pytest.mark.parametrize("first, stop, num", [(0, 100, 8), (10, 17, 7), (3, 5, 6), (0, 1, 3), (0, 97, 13)])
def test_uniform_indices_are_segment_centres(first, stop, num):
    length = stop - first
    expected = [min(stop - 1, first + math.floor((k + 0.5) * length / num)) for k in range(num)]
    assert uniform_indices(first, stop, num).tolist() == expected


@pytest.mark.parametrize("first, stop, num", [(0, 100, 8), (5, 12, 7), (0, 3, 8)])
def test_segment_indices_draw_one_frame_per_segment(first, stop, num):
    generator = torch.Generator().manual_seed(0)
    length = stop - first
    segments = []
    for k in range(num):
        low = first + math.floor(k * length / num)
        high = max(first + math.floor((k + 1) * length / num), low + 1)
        segments.append(range(low, min(high, stop)))
    seen = [set() for _ in range(num)]
    for _ in range(200):
        indices = segment_indices(first, stop, num, generator)
        assert indices.shape == (num,)
        for k, i in enumerate(indices.tolist()):
            assert i in segments[k]
            seen[k].add(i)
    assert all(s == set(segment) for s, segment in zip(seen, segments))  # every frame gets drawn
    again = segment_indices(first, stop, num, torch.Generator().manual_seed(0))
    assert again.tolist() == segment_indices(first, stop, num, torch.Generator().manual_seed(0)).tolist()


@pytest.mark.parametrize(
    "first, stop, window, stride, frame_stride",
    [(0, 20, 4, 4, 1), (0, 21, 5, 3, 1), (7, 30, 4, 6, 2), (0, 10, 3, 1, 3), (0, 5, 8, 8, 1)],
)
def test_sliding_windows_cover_the_range(first, stop, window, stride, frame_stride):
    windows = sliding_windows(first, stop, window, stride, frame_stride)
    extent = window * frame_stride  # frames of video a window stands for
    last_start = max(first, stop - extent)
    expected_starts = list(range(first, last_start + 1, stride))
    if expected_starts[-1] != last_start:
        expected_starts.append(last_start)
    assert [int(w[0]) for w in windows] == expected_starts
    for w in windows:
        assert w.tolist() == [min(stop - 1, int(w[0]) + j * frame_stride) for j in range(window)]
    if frame_stride == 1:  # every frame is in some window
        assert set(torch.cat(windows).tolist()) == set(range(first, stop))
    assert int(windows[-1][-1]) == min(stop - 1, last_start + extent - frame_stride)


def test_frame_span_converts_seconds():
    assert frame_span(100, 10.0) == (0, 100)
    assert frame_span(100, 10.0, start=1.0, end=2.5) == (10, 25)
    assert frame_span(100, 10.0, start=1.05) == (11, 100)  # frame 10 is at 1.0 s: before the span
    assert frame_span(100, 10.0, end=50.0) == (0, 100)
    with pytest.raises(ValueError, match="holds no frame"):
        frame_span(100, 10.0, start=10.0)
    with pytest.raises(ValueError):
        frame_span(100, 10.0, start=-1.0)


def test_uniform_sampler_by_count_and_by_rate():
    (clip,) = UniformClipSampler(8)(200, 25.0)
    assert clip.tolist() == uniform_indices(0, 200, 8).tolist()
    (clip,) = UniformClipSampler(fps=2)(100, 10.0)  # 10 s at 2 frames per second
    assert clip.tolist() == [2 + 5 * k for k in range(20)]
    (clip,) = UniformClipSampler(4)(100, 10.0, start=2.0, end=4.0)
    assert clip.tolist() == [22, 27, 32, 37]


def test_sliding_window_sampler_in_seconds_equals_frames():
    by_seconds = SlidingWindowSampler(1.0, 0.5, unit="seconds")(64, 8.0)
    by_frames = SlidingWindowSampler(8, 4)(64, 8.0)
    assert [w.tolist() for w in by_seconds] == [w.tolist() for w in by_frames]
    back_to_back = SlidingWindowSampler(4, frame_stride=2)(16, 8.0)
    assert [w.tolist() for w in back_to_back] == [[0, 2, 4, 6], [8, 10, 12, 14]]
    thinned = SlidingWindowSampler(2.0, unit="seconds", frame_stride=4)(48, 8.0)
    assert [w.tolist() for w in thinned] == [[0, 4, 8, 12], [16, 20, 24, 28], [32, 36, 40, 44]]


def test_random_segment_sampler():
    sampler = RandomSegmentSampler(4)
    assert sampler.is_random and not RandomSegmentSampler(4, random=False).is_random
    clips = {tuple(sampler(40, 8.0)[0].tolist()) for _ in range(20)}
    assert len(clips) > 1
    for clip in clips:
        assert [i // 10 for i in clip] == [0, 1, 2, 3]
    assert RandomSegmentSampler(4, random=False)(40, 8.0)[0].tolist() == [5, 15, 25, 35]


def test_sampler_argument_errors():
    with pytest.raises(ValueError, match="exactly one"):
        UniformClipSampler(8, fps=2)
    with pytest.raises(ValueError, match="exactly one"):
        UniformClipSampler()
    with pytest.raises(ValueError, match="unit"):
        SlidingWindowSampler(4, unit="minutes")
    with pytest.raises(ValueError, match="window must be a positive integer"):
        SlidingWindowSampler(1.5)  # frames must be whole
    with pytest.raises(ValueError, match="num_segments"):
        RandomSegmentSampler(0)
    with pytest.raises(ValueError, match="num_frames"):
        UniformClipSampler(4)(0, 8.0)
    with pytest.raises(ValueError, match="fps"):
        UniformClipSampler(4)(10, 0.0)
