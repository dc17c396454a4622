"""Peak memory of ``s4vision predict`` against video length: streaming must not grow with it.

1. Trains a tiny causal ViS4mer on cached frame features through the engine (route 1 of the
   README on a small long-range moving-digits benchmark: ``make-benchmark``, ``extract-features``
   with timm's ``test_convnext``, ``train``), unless ``--checkpoint`` names one.
2. Writes one H.264 video per ``--lengths`` (frames of ``--size`` px at 8 fps, a square moving
   across a black frame).
3. Runs ``s4vision predict CHECKPOINT VIDEO --stream --chunk N`` (and, with ``--offline``, the
   same without ``--stream``) in a fresh process per video and reads that process's peak
   resident set size (``ru_maxrss``): decoding, encoding and the head's state go ``--chunk``
   frames at a time, so the peak should be flat in the video's length. (Linux only: the peak is
   the process's ``VmHWM``.)

Prints a table and writes JSON (``--out``)::

    python tools/bench_predict_memory.py --lengths 5000 20000 --out predict_memory.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

FPS = 8
# The child reports its own peak (VmHWM: the high-water mark of this process's memory since its
# exec; ru_maxrss would also carry its parent's peak, which Linux keeps across fork and exec).
_CHILD = ("import sys; from s4vision.cli import main; code = main(sys.argv[1:]); "
          "peak = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')][0]; "
          "print('PEAK_KIB', peak, file=sys.stderr); raise SystemExit(code)")


def write_long_video(path: Path, frames: int, size: int = 32, fps: float = FPS) -> Path:
    """A ``frames``-frame H.264 video of ``size`` px: a bright square sliding across, one
    position every 50 frames (written in one go: ``frames * size * size * 3`` bytes)."""
    from s4vision.data import write_video

    video = np.zeros((frames, size, size, 3), np.uint8)
    side = max(2, size // 4)
    for start in range(0, frames, 50):
        x = (start // 50) % (size - side)
        video[start:start + 50, size // 2 - side // 2:size // 2 + side // 2, x:x + side] = 200
    return write_video(path, video, fps, threads=1)


def tiny_checkpoint(work: Path, size: int = 32) -> Path:
    """A causal ViS4mer trained for two epochs on features of a 16-video benchmark (seconds)."""
    from s4vision.data import make_benchmark
    from s4vision.engine.config import config_from_dict, validate_config
    from s4vision.engine.features import extract_features
    from s4vision.engine.train import train

    run = work / "run"
    if (run / "model.safetensors").is_file():
        return run / "model.safetensors"
    for split, count in (("train", 12), ("val", 4)):
        make_benchmark(work / "bench", count, 32, fps=FPS, size=size, head_seconds=1.0, split=split)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a randomly initialised encoder, on purpose
            extract_features(work / "bench" / f"{split}.csv", work / "features" / split, "test_convnext", size=size)
    cfg = config_from_dict({
        "task": "video_features",
        "model": {"name": "vis4mer", "kwargs": {"embed_dim": 16, "depth": 2, "d_state": 8, "bidirectional": False}},
        "video": {"train": str(work / "features" / "train"), "eval": str(work / "features" / "val"),
                  "num_frames": None},
        "data": {"batch_size": 4},
        "train": {"epochs": 2, "progress": False, "output_dir": str(run)},
    })
    validate_config(cfg)
    return train(cfg).model_file


def peak_rss_of_predict(checkpoint: Path, video: Path, *, chunk: int = 256, stream: bool = True,
                        env: dict | None = None) -> dict:
    """Run ``s4vision predict`` on ``video`` in a fresh process: its peak resident memory
    (``VmHWM``, MiB), wall time and what it printed."""
    command = [sys.executable, "-c", _CHILD, "predict", str(checkpoint), str(video), "--chunk", str(chunk),
               "--device", "cpu", *(["--stream"] if stream else [])]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"predict failed ({result.returncode}): {result.stderr[-2000:]}")
    peak = next(int(line.split()[1]) for line in result.stderr.splitlines() if line.startswith("PEAK_KIB"))
    lines = result.stdout.strip().splitlines()
    streamed = [line for line in lines if line.startswith(video.name)]
    return {"peak_mib": peak / 1024, "seconds": seconds, "updates": len(streamed),
            "last_update": streamed[-1] if streamed else None, "output": lines[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[5000, 20000], help="frames per video")
    parser.add_argument("--size", type=int, default=32, help="frame size in pixels (the checkpoint's)")
    parser.add_argument("--chunk", type=int, default=256, help="frames decoded at a time")
    parser.add_argument("--checkpoint", help="a causal feature-head checkpoint (default: train a tiny one)")
    parser.add_argument("--offline", action="store_true", help="also measure predict without --stream")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the measured processes")
    parser.add_argument("--work-dir", help="keep the videos and the checkpoint here (default: a temp dir)")
    parser.add_argument("--out", default="predict_memory.json")
    args = parser.parse_args()

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_predict_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = Path(args.checkpoint) if args.checkpoint else tiny_checkpoint(work, args.size)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    rows = []
    for length in args.lengths:
        video = work / f"long_{length}.mp4"
        if not video.is_file():
            write_long_video(video, length, args.size)
        for stream in (True, False) if args.offline else (True,):
            row = {"frames": length, "seconds_of_video": length / FPS, "stream": stream,
                   **peak_rss_of_predict(checkpoint, video, chunk=args.chunk, stream=stream, env=env)}
            rows.append(row)
            print(f"{length:>7} frames  {'stream ' if stream else 'offline'}  peak {row['peak_mib']:7.1f} MiB  "
                  f"{row['seconds']:6.1f} s", flush=True)
    Path(args.out).write_text(json.dumps({"checkpoint": str(checkpoint), "chunk": args.chunk, "size": args.size,
                                          "threads": args.threads, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
