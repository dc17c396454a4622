"""Clip samplers, checked against plain Python enumerations of what they should pick."""
import math

import pytest
import torch

from s4vision.data import (
    RandomSegmentSampler,
    ShortVideoError,
    SlidingWindowSampler,
    UniformClipSampler,
    WindowSampler,
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


# -- time windows, multi-clip views, short videos, sample times -------------------------------------


@pytest.mark.parametrize("video_fps, rate", [(8.0, 8.0), (30.0, 8.0), (25.0, 10.0), (4.0, 8.0)])
def test_window_sampler_takes_the_frame_on_screen_at_each_sample_time(video_fps, rate):
    num_frames, n = 90, 6
    clips = WindowSampler(n, rate, position="sliding").clips(num_frames, video_fps)
    duration = num_frames / video_fps
    samples = math.ceil(duration * rate - 1e-9)  # rate-grid samples before the video ends
    last = samples - n
    expected_starts = list(range(0, last + 1, n)) + ([] if last % n == 0 else [last])
    assert len(clips) == len(expected_starts)
    for clip, start in zip(clips, expected_starts):
        times = [(start + k) / rate for k in range(n)]
        assert clip.times.tolist() == pytest.approx(times)
        # the frame shown at time t is the last one that started at or before t
        assert clip.indices.tolist() == [max(i for i in range(num_frames) if i / video_fps <= t + 1e-9) for t in times]
        assert clip.resampled == (video_fps != rate) and not clip.extra.any()


def test_window_positions_and_strides():
    uniform = WindowSampler(4, 4.0, position="uniform", clips=3).clips(40, 8.0)  # 5 s: 20 samples at 4 fps
    assert [c.indices.tolist() for c in uniform] == [[0, 2, 4, 6], [16, 18, 20, 22], [32, 34, 36, 38]]
    assert [c.indices[0].item() for c in WindowSampler(4, 4.0, position="uniform").clips(40, 8.0)] == [16]
    strided = WindowSampler(4, 4.0, position="sliding", stride=1.5).clips(40, 8.0)  # starts every 6 samples
    assert [c.times[0].item() for c in strided] == [0.0, 1.5, 3.0, 4.0]  # the last ends with the video
    draws = {WindowSampler(4, 4.0, position="random").clips(40, 8.0, generator=torch.Generator().manual_seed(s))[0]
             .indices[0].item() for s in range(30)}
    assert draws <= set(range(0, 33, 2)) and len(draws) > 5


@pytest.mark.parametrize("policy", ["loop", "pad"])
def test_short_videos_loop_or_pad_and_keep_time_moving(policy):
    for sampler, num, rate in [(UniformClipSampler(8, short=policy), 5, 8.0),
                               (WindowSampler(8, 4.0, short=policy), 10, 4.0),
                               (RandomSegmentSampler(8, short=policy), 5, 8.0)]:
        (clip,) = sampler.clips(num, 8.0, generator=torch.Generator().manual_seed(0))
        available = 5  # 5 frames, or 10 frames = 5 samples at 4 fps
        step = 8.0 / rate
        inside = [int(k * step) for k in range(available)]
        if policy == "loop":
            expected = [inside[k % available] for k in range(8)]
        else:
            expected = inside + [inside[-1]] * 3
        assert clip.indices.tolist() == expected, sampler
        assert clip.times.tolist() == pytest.approx([k / rate for k in range(8)])  # increasing
        assert clip.extra.tolist() == [False] * 5 + [True] * 3


def test_short_videos_are_rejected_by_default_with_the_numbers():
    with pytest.raises(ShortVideoError, match=r"holds 5 frames \(0.625 s\) but a clip needs 8.*'loop' or 'pad'"):
        UniformClipSampler(8).clips(5, 8.0)
    with pytest.raises(ShortVideoError, match=r"holds 5 samples at 4 fps \(1.250 s\) but a clip needs 8"):
        WindowSampler(8, 4.0).clips(10, 8.0)
    with pytest.raises(ValueError, match="short-video policy 'stretch'"):
        UniformClipSampler(8, short="stretch")


def test_uniform_views_are_offsets_within_each_segment():
    clips = UniformClipSampler(4, clips=2).clips(40, 8.0)
    assert [c.indices.tolist() for c in clips] == [[math.floor((k + (j + 0.5) / 2) * 10) for k in range(4)]
                                                    for j in range(2)]
    assert clips[0].times.tolist() == [i / 8.0 for i in clips[0].indices.tolist()]
