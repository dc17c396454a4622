"""Long-video benchmark: ViS4mer against temporal mean pooling and Transformers, and a frame-rate shift.

1. Trains a tiny frame encoder (timm's ``test_convnext``, 200k parameters, random
   init) through the engine (``s4vision train``, ``task=image`` on an image
   folder) to classify single MNIST digits placed at random positions on a
   ``--size`` px frame (``--encoder-images`` frames drawn from the benchmark's
   training digits only, ``--encoder-epochs`` epochs), and keeps its weights.
2. For every clip length T in ``--lengths`` (default 256, 1,024 and 4,096 frames at
   ``--fps`` 8), the clips of the long-range MNIST benchmark (label = first digit +
   last digit mod 10, distractor digits in between; ``--segments`` segments of T /
   segments frames, so the number of digits to sort out stays the same while the
   time spans to integrate and bridge grow with T): ``--train-clips`` training clips
   at 8 fps and ``--val-clips`` held-out clips (digit images never seen in training)
   seen four ways: at 8 fps, the same seconds at 4 and at 16 fps, and at 8 fps with
   every timestamp moved later by up to half a frame interval (jitter).
   ``--features table`` (default): the frozen encoder's 64-d feature of every frame
   the benchmark can show (each of the 5,000 digit images at each of the 25 places a
   28 px digit has on a 32 px frame) is computed once; a clip's features are read from
   that table along :func:`s4vision.data.video_benchmark.frame_layout` (which digit
   where at each timestamp), normalised by the training table's mean and std, and
   cached in the engine's feature-cache format with the timestamps. They are the
   encoder's features of the frames rendered losslessly (no H.264), shared by every
   head and seed. ``--features video`` writes H.264 files at 8 fps and extracts
   features with :func:`s4vision.engine.extract_features` (no frame-rate variants).
3. Trains each head of ``--heads`` for each of ``--seeds`` through the engine
   (``task=video_features``: the Trainer, its parameter groups with the SSM
   parameters exempt from weight decay, warmup + cosine), heads from the temporal-head
   registry: ViS4mer (continuous time, ``train_fps`` 8; width ``--vis4mer-width`` 128 and
   ``readout="mean_first_last"``, the design chosen with ``--select``), temporal mean pooling, a
   Transformer with learned positions and one with sinusoidal time positions (both
   averaging T // ``--tokens`` frames per token, the time-aware one by time windows),
   and evaluates every trained head on the four held-out variants with the features
   and timestamps as cached (:func:`s4vision.video_demo.evaluate_on_caches`). One
   JSON per (T, head, seed) in ``--work-dir``: an interrupted run resumes.
   ``--select`` is the design-selection protocol: each head trained on the training clips but
   the last ``--select-clips`` (400) and scored on those, at 8 fps; the val split is never
   read, so designs and learning rates are chosen without looking at the reported figures.
4. Measures, on random features, time per clip (inference and one training
   step) and peak memory of a training step, for T up to ``--memory-lengths``,
   for the benchmark's heads and for the Transformer over every frame (one token
   per frame: ``transformer_frames``) with the fused attention kernel
   ``scaled_dot_product_attention`` picks by default, and with plain attention that
   materialises the ``T x T`` matrix (``transformer_frames_math``, up to
   ``--max-math-length``). Each measurement runs in a fresh process, after one
   warm-up step, with freed memory returned to the OS at once
   (``MALLOC_MMAP_THRESHOLD_``), so the peak resident set during the step (``VmHWM``,
   reset just before it) over the resident size before it is the step's own memory.

Prints tables, writes JSON (``--out``) and a PNG plot (``--plot``).

    nice -n 19 python tools/bench_video_long.py --work-dir /tmp/bench_video_long \\
        --out /tmp/bench_video_long/bench.json --plot /tmp/bench_video_long/bench.png
    python tools/bench_video_long.py --skip-accuracy        # time and memory only
    python tools/bench_video_long.py --work-dir /tmp/bench_video_long --select --lengths 256 --seeds 0 \
        --epochs 8 --heads vis4mer --vis4mer-width 64 --vis4mer-readout mean   # one design, scored for selection
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from s4vision._io import atomic_write_json
from s4vision.data import make_benchmark
from s4vision.data.video_benchmark import DIGIT_SIZE, SPLITS, mnist_digits
from s4vision.engine import extract_features
from s4vision.engine.video_eval import evaluate_video_checkpoint
from s4vision.models.heads import create_temporal_head
from s4vision.video_demo import evaluate_on_caches, train_frame_encoder, train_temporal_head

ENCODER = "test_convnext"
NUM_CLASSES = 10
HEADS = ("mean_pool", "transformer", "vis4mer")  # the --features video run
# For time and memory also the Transformer over every frame (one token per frame, as the memory
# target compares), with the fused attention kernel scaled_dot_product_attention picks by default
# and with plain attention that materialises the T x T matrix (``_math``).
EFFICIENCY_MODELS = ("vis4mer", "mean_pool", "transformer", "transformer_sinusoidal",
                     "transformer_frames", "transformer_frames_math")


# -- heads -------------------------------------------------------------------------------------


def head_kwargs(name: str, max_len: int, d_model: int, d_state: int) -> dict:
    """The registry arguments of each head of the ``--features video`` run."""
    return {"mean_pool": {}, "transformer": {"embed_dim": d_model, "max_tokens": max_len},
            "vis4mer": {"embed_dim": d_model, "depth": 3, "d_state": d_state}}[name]


def build_head(name: str, in_dim: int, T: int, args) -> nn.Module:
    """A head of the time and memory measurement: a benchmark head as trained at ``T``, or the
    Transformer over every frame (``transformer_frames``)."""
    if name == "transformer_frames":
        return create_temporal_head("transformer", in_dim, NUM_CLASSES, embed_dim=args.d_model, max_tokens=T)
    registry_name, kwargs = head_config(name, T, args)
    return create_temporal_head(registry_name, in_dim, NUM_CLASSES, **kwargs)


# -- step 1: the frame encoder -----------------------------------------------------------------


def train_encoder(size: int, images: int, epochs: int, work: Path, seed: int, threads: int) -> tuple[Path, dict]:
    """Train the frame encoder on single digits through the engine (task=image, an image folder
    of generated frames); returns its weights file and a summary."""
    started = time.perf_counter()
    result = train_frame_encoder(work / "encoder_digits", work / "encoder_run", images=images, epochs=epochs, size=size,
                                 seed=seed, threads=threads)
    accuracy = next(row["eval_top1"] for row in reversed(result.history) if "eval_top1" in row) if result.history \
        else None
    return result.model_file, {"images": images, "epochs": epochs, "seconds": time.perf_counter() - started,
                               "steps": result.global_step,
                               "val_digit_accuracy": None if accuracy is None else accuracy / 100}


# -- step 2: clips and features ----------------------------------------------------------------


def clip_features(work: Path, T: int, split: str, clips: int, args, checkpoint: Path) -> Path:
    """Write one split of the benchmark at length T and its feature cache (once); the cache's index."""
    data = work / f"T{T}"
    csv = data / f"{split}.csv"
    if not csv.exists():
        make_benchmark(data, clips, T, fps=args.fps, size=args.size, head_seconds=T / (args.segments * args.fps),
                       seed=args.seed + T, split=split)
    return extract_features(csv, work / f"features_T{T}_{split}", ENCODER, checkpoint=checkpoint,
                            size=args.size, batch_size=512)


# -- step 3: training the heads ----------------------------------------------------------------


def train_head(name: str, kwargs: dict, train_index: Path, val_index: Path, epochs: int, lr: float, batch: int,
               seed: int, run_dir: Path, threads: int) -> dict:
    """Train head ``name`` on the cached features through the engine; accuracies on both splits."""
    result = train_temporal_head(name, kwargs, train_index, val_index, epochs=epochs, lr=lr, batch_size=batch,
                                 seed=seed, run_dir=run_dir, threads=threads, progress=False)
    on_val = evaluate_video_checkpoint(result.model_file, str(val_index), progress=False)
    rows = result.history or []
    # Training accuracy as the engine logged it over the last epoch (in training mode): evaluating
    # the training clips again would cost a third of an epoch per head.
    train_top1 = next((row["train_top1"] for row in reversed(rows) if row.get("train_top1") is not None), None)
    return {"val_accuracy": on_val["top1"] / 100, "train_accuracy": None if train_top1 is None else train_top1 / 100,
            "train_seconds": sum(row["seconds"] for row in rows),
            "final_loss": rows[-1]["train_loss"] if rows else None,
            "parameters": _parameters(result.model_file)}


def _parameters(model_file: Path) -> int:
    from s4vision.engine.evaluate import load_checkpoint_model

    model, _ = load_checkpoint_model(model_file)
    return sum(p.numel() for p in model.parameters())


# -- step 4: time and memory -------------------------------------------------------------------


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (``VmRSS``, ``VmHWM``), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    """Reset the peak resident set size (VmHWM) to the current size (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure(name: str, T: int, in_dim: int, args) -> dict:
    """Run in a fresh process: peak memory of a training step (after one warm-up step), then
    median times. Started with glibc returning every freed block of 64 KiB or more to the OS
    (``MALLOC_MMAP_THRESHOLD_``), so the resident set follows the live tensors and its peak
    during the step is the step's own, not the allocator's cache or one-time library set-up."""
    from contextlib import nullcontext

    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    attention = sdpa_kernel(SDPBackend.MATH) if name.endswith("_math") else nullcontext()
    model = build_head(name.removesuffix("_math"), in_dim, T, args)
    x = torch.randn(args.batch, T, in_dim)
    y = torch.randint(0, NUM_CLASSES, (args.batch,))

    def train_step():
        model.train()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    def infer():
        model.eval()
        with torch.no_grad():
            model(x)

    with attention:
        train_step()
        model.zero_grad(set_to_none=True)
        _reset_peak_rss()
        before = _status_mb("VmRSS")
        train_step()
        peak = _status_mb("VmHWM")
        times = {}
        for label, fn in (("train", train_step), ("infer", infer)):
            fn()
            runs = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                fn()
                runs.append(time.perf_counter() - start)
            times[label] = sorted(runs)[len(runs) // 2]
    return {"model": name, "T": T, "peak_train_mb": max(peak - before, 0.0),
            "train_ms_per_clip": 1e3 * times["train"] / args.batch, "infer_ms_per_clip": 1e3 * times["infer"] / args.batch}


def measure_in_subprocess(name: str, T: int, args, in_dim: int) -> dict:
    import os

    command = [sys.executable, __file__, "--measure", name, str(T), str(in_dim), "--threads", str(args.threads),
               "--batch", str(args.memory_batch), "--d-model", str(args.d_model), "--d-state", str(args.d_state),
               "--vis4mer-width", str(args.vis4mer_width), "--vis4mer-readout", args.vis4mer_readout,
               "--repeats", str(args.repeats), "--tokens", str(args.tokens), "--fps", str(args.fps)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        return {"model": name, "T": T, "error": result.stderr.strip().splitlines()[-1:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- the decisive run: light features, frame-rate shift, seeds ----------------------------------
#
# ``--features table`` (the default) skips H.264: every frame of the benchmark shows one MNIST
# digit at one of (size - 27)^2 positions on black, so the frozen encoder's feature of every
# frame it can show is computed once, for every (digit image, position) pair of a split (a
# table), and a clip's features are read from the table along :func:`frame_layout` (which digit
# and where, at each frame's timestamp). They equal the encoder's features of the losslessly
# rendered frames (no codec). ``--features video`` writes and decodes mp4 files instead.

BENCH_HEADS = ("vis4mer", "mean_pool", "transformer", "transformer_sinusoidal")
VARIANTS = ("8fps", "4fps", "16fps", "jitter")  # evaluated: train rate, half, double, jittered


def head_config(name: str, T: int, args) -> tuple[str, dict]:
    """Registry name and arguments of a benchmark head for clips of ``T`` frames."""
    patch = max(1, T // args.tokens)
    transformer = {"embed_dim": args.d_model, "patch": patch, "num_heads": 4, "depth": 2}
    return {
        "vis4mer": ("vis4mer", {"embed_dim": args.vis4mer_width, "depth": 3, "d_state": args.d_state,
                                "readout": args.vis4mer_readout, "train_fps": args.fps}),
        "mean_pool": ("mean_pool", {}),
        "transformer": ("transformer", {**transformer, "max_tokens": 2 * (T // patch) + 2}),
        "transformer_sinusoidal": ("transformer", {**transformer, "positions": "sinusoidal", "train_fps": args.fps}),
    }[name]


def feature_table(work: Path, split: str, checkpoint: Path, size: int) -> torch.Tensor:
    """The encoder's feature of every frame a split can show: ``(images, P, P, D)``, digit image
    ``i`` with its top-left corner at ``(y, x)``, ``P = size - 27`` (cached in ``work``)."""
    from s4vision.engine.features import FrameEncoder

    path = work / f"table_{split}.pt"
    if path.exists():
        return torch.load(path)
    encoder = FrameEncoder(ENCODER, checkpoint=checkpoint, size=size, batch_size=500)
    images, _ = mnist_digits(split)
    P = size - DIGIT_SIZE + 1
    table = torch.empty(len(images), P, P, encoder.num_features)
    frames = np.zeros((len(images), size, size, 3), np.uint8)
    for y, x in tqdm([(y, x) for y in range(P) for x in range(P)], desc=f"feature table ({split})"):
        frames[:] = 0
        frames[:, y:y + DIGIT_SIZE, x:x + DIGIT_SIZE] = images[..., None]
        table[:, y, x] = encoder(torch.from_numpy(frames))
    torch.save(table, path)
    return table


def clip_variant_timestamps(plan, variant: str, fps: float, rng: np.random.Generator) -> np.ndarray:
    from s4vision.data.video_benchmark import clip_timestamps

    rate = {"8fps": 1.0, "4fps": 0.5, "16fps": 2.0, "jitter": 1.0}[variant] * fps
    return clip_timestamps(plan.seconds, rate, 0.5 if variant == "jitter" else 0.0, rng)


def write_table_cache(out: Path, split: str, clips: int, T: int, variant: str, table: torch.Tensor, args) -> Path:
    """A feature cache (the engine's ``index.json`` format) of one split at length ``T`` seen as
    ``variant``; clip ``i`` shows the same content in every variant."""
    from safetensors.torch import save_file

    from s4vision.data.video_benchmark import _segment_bounds, frame_layout, plan_clip

    index_path = out / "index.json"
    if index_path.exists():
        return index_path
    out.mkdir(parents=True, exist_ok=True)
    _, labels = mnist_digits(split)
    head_frames = T // args.segments
    bounds = _segment_bounds(T, head_frames)
    entries = []
    for i in tqdm(range(clips), desc=f"features T={T} {split} {variant}", leave=False):
        plan = plan_clip(np.random.default_rng([args.seed + T, SPLITS.index(split), i]), len(table), bounds, args.size,
                         args.fps)
        times = clip_variant_timestamps(plan, variant, args.fps, np.random.default_rng([args.seed + T, i, 1]))
        segment, corner = frame_layout(plan, times)
        images = torch.from_numpy(plan.digits[segment])
        features = table[images, torch.from_numpy(corner[:, 0]), torch.from_numpy(corner[:, 1])]
        name = f"clip_{i:05d}.safetensors"
        save_file({"features": features.contiguous(), "frame_indices": torch.arange(len(times)),
                   "timestamps": torch.from_numpy(times)}, str(out / name))
        label = (int(labels[plan.digits[0]]) + int(labels[plan.digits[-1]])) % NUM_CLASSES
        entries.append({"path": f"{split}_{i:05d}", "label": label, "start": None, "end": None, "features": name,
                        "shape": list(features.shape), "fps": round((len(times) - 1) / float(times[-1] - times[0]), 6)})
    settings = {"model": ENCODER, "weights": "checkpoint", "source": "feature table (see bench_video_long.py)",
                "variant": variant, "size": args.size, "tokens": False}
    atomic_write_json(index_path, {"settings": settings, "classes": [str(c) for c in range(NUM_CLASSES)],
                                   "videos": entries, "failed": []})
    return index_path


def selection_split(train_index: Path, held_out: int) -> tuple[Path, Path]:
    """Indices of the design-selection split next to ``train_index``: the training clips but the
    last ``held_out``, and those last ``held_out`` (the val split is never looked at)."""
    content = json.loads(train_index.read_text())
    videos = content["videos"]
    if not 0 < held_out < len(videos):
        raise SystemExit(f"--select-clips must be between 1 and {len(videos) - 1}, got {held_out}")
    paths = tuple(train_index.parent / f"select_{part}_{held_out}" / "index.json" for part in ("fit", "score"))
    for path, part in zip(paths, (videos[:-held_out], videos[-held_out:])):
        if not path.exists():  # a cache of its own (an index.json in a folder), the features one level up
            path.parent.mkdir(exist_ok=True)
            atomic_write_json(path, {**content, "videos": [{**v, "features": f"../{v['features']}"} for v in part]})
    return paths


def run_tag(name: str, lr: float, kwargs: dict, args) -> str:
    """The file name of a (T, head, seed) run: plain for the study, with the design for --select."""
    if not args.select:
        return name
    design = f"_w{kwargs['embed_dim']}_{kwargs['readout']}" if name == "vis4mer" else ""
    return f"select{args.select_clips}_{name}{design}_lr{lr:g}"


def run_study(work: Path, checkpoint: Path, args, results: dict) -> None:
    """Train every head at every T for every seed on the table features (through the engine) and
    evaluate each at every frame-rate variant; one JSON per run in ``work`` (resumable). With
    ``--select``: trained on the training clips but the last ``--select-clips``, scored on those
    at 8 fps (for choosing designs and learning rates; the val split stays untouched)."""
    tables = {split: feature_table(work, split, checkpoint, args.size) for split in SPLITS}
    mean, std = tables["train"].mean((0, 1, 2)), tables["train"].std((0, 1, 2)) + 1e-6
    tables = {split: (t - mean) / std for split, t in tables.items()}
    for T in args.lengths:
        train_index = write_table_cache(work / f"T{T}" / "train_8fps", "train", args.train_clips, T, "8fps",
                                        tables["train"], args)
        if args.select:
            train_index, scored = selection_split(train_index, args.select_clips)
            val_indices = {"8fps": scored}
        else:
            val_indices = {v: write_table_cache(work / f"T{T}" / f"val_{v}", "val", args.val_clips, T, v, tables["val"],
                                                args) for v in VARIANTS}
        for seed in args.seeds:
            for name in args.heads:
                registry_name, kwargs = head_config(name, T, args)
                lr = args.head_lr.get(name, 3e-3)
                tag = run_tag(name, lr, kwargs, args)
                record = work / f"result_T{T}_{tag}_seed{seed}.json"
                if record.exists():
                    row = json.loads(record.read_text())
                elif args.report_only:
                    continue
                else:
                    run_dir = work / f"run_T{T}_{tag}_seed{seed}"
                    row = {"model": name, "design": tag, "T": T, "seed": seed, "lr": lr, "kwargs": kwargs}
                    row.update(train_head(registry_name, kwargs, train_index, val_indices["8fps"], args.epochs, lr,
                                          args.batch, seed, run_dir, args.threads))
                    fitted = args.train_clips - (args.select_clips if args.select else 0)
                    row["train_ms_per_clip"] = 1e3 * row["train_seconds"] / (args.epochs * fitted)
                    row["variants"] = evaluate_on_caches(run_dir / "model.safetensors", val_indices)
                    atomic_write_json(record, row)
                results["accuracy"].append(row)
                shown = " ".join(f"{v} {a:.3f}" for v, a in row["variants"].items())
                print(f"T={T:5d} seed {seed} {name:22s} {shown} (train {row['train_accuracy']:.3f}, "
                      f"{row['train_ms_per_clip']:.1f} ms/clip)", flush=True)
        if args.select and args.report_only:  # every design recorded for these heads and seeds, not just this one
            results["accuracy"] = [r for r in results["accuracy"] if r["T"] != T]
            for seed in args.seeds:
                for record in sorted(work.glob(f"result_T{T}_select{args.select_clips}_*_seed{seed}.json")):
                    row = json.loads(record.read_text())
                    if row["model"] in args.heads:
                        results["accuracy"].append(row)


def study_table(results: dict, args) -> str:
    """Mean +- std over seeds of every variant's accuracy, training time per clip and peak memory."""
    peak = {(r["model"], r["T"]): r.get("peak_train_mb") for r in results["efficiency"] if "error" not in r}
    variants = [v for v in VARIANTS if any(v in r["variants"] for r in results["accuracy"])]
    width = max([22] + [len(r.get("design", r["model"])) for r in results["accuracy"]])
    lines = [f"{'T':>5} {'head':>{width}} " + " ".join(f"{v:>13}" for v in variants) + f" {'ms/clip':>9} {'peak MiB':>9}"]
    for T in args.lengths:
        at_T = [r for r in results["accuracy"] if r["T"] == T and r["model"] in args.heads]
        for name in dict.fromkeys(r.get("design", r["model"]) for r in at_T):  # heads, or designs with --select
            rows = [r for r in at_T if r.get("design", r["model"]) == name]
            cells = []
            for v in variants:
                a = np.array([100 * r["variants"][v] for r in rows])
                cells.append(f"{a.mean():6.1f} +- {a.std():4.1f}")
            ms = np.mean([r["train_ms_per_clip"] for r in rows])
            mem = peak.get((name, T))
            lines.append(f"{T:>5} {name:>{width}} " + " ".join(f"{c:>13}" for c in cells) + f" {ms:>9.1f} "
                         + (f"{mem:>9.1f}" if mem is not None else f"{'-':>9}"))
    return "\n".join(lines)


def plot_study(results: dict, args, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(VARIANTS) + 2, figsize=(4 * (len(VARIANTS) + 2), 3.8))
    for color, name in enumerate(args.heads):
        style = dict(marker="o", label=name, color=f"C{color}", capsize=3)
        for ax, v in zip(axes, VARIANTS):
            points = []
            for T in args.lengths:
                a = [100 * r["variants"][v] for r in results["accuracy"] if r["T"] == T and r["model"] == name]
                if a:
                    points.append((T, np.mean(a), np.std(a)))
            if points:
                Ts, means, stds = zip(*points)
                ax.errorbar(Ts, means, yerr=stds, **style)
            ax.set_title(f"accuracy (%), evaluated at {v}" if v != "jitter" else "accuracy (%), jittered timestamps")
        eff = [r for r in results["efficiency"] if r["model"] == name and "error" not in r]
        if eff:
            axes[-2].plot([r["T"] for r in eff], [r["peak_train_mb"] for r in eff], marker="o", color=f"C{color}")
            axes[-1].plot([r["T"] for r in eff], [r["train_ms_per_clip"] for r in eff], marker="o", color=f"C{color}")
    axes[-2].set_title("peak training memory (MiB)")
    axes[-1].set_title("training step, ms per clip")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("frames per clip T (at 8 fps)")
    for ax in axes[:len(VARIANTS)]:
        ax.axhline(100 / NUM_CLASSES, color="gray", linestyle=":")
    axes[-2].set_yscale("log")
    axes[-1].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


# -- report ------------------------------------------------------------------------------------


def plot(results: dict, args, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for color, name in enumerate(EFFICIENCY_MODELS):
        style = dict(marker="o", label=name, color=f"C{color}")
        acc = [(r["T"], r["val_accuracy"]) for r in results["accuracy"] if r["model"] == name and "variants" not in r]
        if acc:
            axes[0].plot(*zip(*acc), **style)
        eff = [r for r in results["efficiency"] if r["model"] == name and "error" not in r]
        if eff:
            axes[1].plot([r["T"] for r in eff], [r["peak_train_mb"] for r in eff], **style)
            axes[2].plot([r["T"] for r in eff], [r["train_ms_per_clip"] for r in eff], **style)
    axes[0].axhline(1 / NUM_CLASSES, color="gray", linestyle=":", label="chance")
    for ax, title in zip(axes, ("validation accuracy", "peak memory of a training step (MiB)",
                                "training step time per clip (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("frames per clip T")
        ax.set_title(title)
        ax.legend()
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--train-clips", type=int, default=2000)
    parser.add_argument("--val-clips", type=int, default=500)
    parser.add_argument("--features", choices=("table", "video"), default="table",
                        help="table: encoder features of every (digit, position) computed once and read along each "
                             "clip's layout at any frame rate (the decisive run); video: mp4 files and extract-features")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--heads", nargs="+", default=list(BENCH_HEADS), choices=BENCH_HEADS)
    parser.add_argument("--tokens", type=int, default=256,
                        help="Transformer heads average T // tokens frames per token (at most this many tokens)")
    parser.add_argument("--head-lr", type=json.loads, default={"transformer": 1e-3, "transformer_sinusoidal": 1e-3},
                        help="peak learning rate per head (JSON; others 3e-3)")
    parser.add_argument("--size", type=int, default=32, help="frame size in pixels")
    parser.add_argument("--fps", type=float, default=8)
    parser.add_argument("--segments", type=int, default=4,
                        help="digits per clip: first, segments - 2 distractors, last")
    parser.add_argument("--encoder-images", type=int, default=16000,
                        help="generated digit frames the frame encoder is trained on")
    parser.add_argument("--encoder-epochs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, nargs=3, default=[3e-3, 1e-3, 3e-3], metavar=("MEAN", "TRANSFORMER", "VIS4MER"),
                        help="peak learning rate of each head (each the better of 1e-3 and 3e-3 in a pilot)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--d-state", type=int, default=32)
    parser.add_argument("--vis4mer-width", type=int, default=128,
                        help="ViS4mer's embed_dim (its stages halve it); chosen with --select")
    parser.add_argument("--vis4mer-readout", default="mean_first_last", choices=("mean", "mean_first_last"),
                        help="what ViS4mer's classifier sees; chosen with --select")
    parser.add_argument("--memory-lengths", type=int, nargs="*", default=[256, 1024, 2048, 4096],
                        help="T of the time and memory measurement (none: skip it)")
    parser.add_argument("--memory-batch", type=int, default=4)
    parser.add_argument("--max-math-length", type=int, default=2048,
                        help="longest T at which to measure the Transformer with plain (T x T) attention")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 avoids thread oversubscription on a shared 2-core machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default=None,
                        help="keep clips, features and the encoder here and reuse them (default: a temp dir)")
    parser.add_argument("--out", default="bench_video_long.json")
    parser.add_argument("--plot", default="bench_video_long.png")
    parser.add_argument("--skip-accuracy", action="store_true", help="only measure time and memory")
    parser.add_argument("--efficiency-from", default=None, metavar="JSON",
                        help="take time and memory from an earlier run's --out file instead of measuring them")
    parser.add_argument("--select", action="store_true",
                        help="design selection: train on the training clips but the last --select-clips and score "
                             "on those (8 fps); the val split is not used")
    parser.add_argument("--select-clips", type=int, default=400)
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: report the (T, head, seed) runs already recorded in --work-dir "
                             "(with --select: every design recorded)")
    parser.add_argument("--measure", nargs=3, metavar=("MODEL", "T", "IN_DIM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.measure:
        name, T, in_dim = args.measure[0], int(args.measure[1]), int(args.measure[2])
        print(json.dumps(measure(name, T, in_dim, args)))
        return

    results = {
        "machine": "2-core CPU, no GPU", "platform": platform.platform(), "torch": torch.__version__,
        "threads": args.threads, "args": vars(args), "accuracy": [], "efficiency": [],
    }
    started = time.perf_counter()
    in_dim = timm.create_model(ENCODER, num_classes=0).num_features
    if not args.skip_accuracy:
        work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="bench_video_long_"))
        work.mkdir(parents=True, exist_ok=True)
        try:
            encoder_file = work / "encoder.json"
            checkpoint = work / "encoder_run" / "model.safetensors"
            if checkpoint.exists() and encoder_file.exists():
                results["encoder"] = json.loads(encoder_file.read_text())
            else:
                checkpoint, results["encoder"] = train_encoder(args.size, args.encoder_images, args.encoder_epochs,
                                                               work, args.seed, args.threads)
                encoder_file.write_text(json.dumps(results["encoder"]))
            print(f"frame encoder {ENCODER}: digit accuracy {results['encoder']['val_digit_accuracy']:.3f}")
            if args.features == "table":
                run_study(work, checkpoint, args, results)
            for T in args.lengths if args.features == "video" else []:
                phase = time.perf_counter()
                train_index = clip_features(work, T, "train", args.train_clips, args, checkpoint)
                val_index = clip_features(work, T, "val", args.val_clips, args, checkpoint)
                data_seconds = time.perf_counter() - phase
                for name, lr in zip(HEADS, args.lr):
                    row = {"model": name, "T": T, "data_seconds": data_seconds, "lr": lr}
                    row.update(train_head(name, head_kwargs(name, T, args.d_model, args.d_state), train_index,
                                          val_index, args.epochs, lr, args.batch, args.seed,
                                          work / f"run_T{T}_{name}_seed{args.seed}", args.threads))
                    results["accuracy"].append(row)
                    print(f"T={T:5d} {name:17s} val acc {row['val_accuracy']:.3f} "
                          f"(train {row['train_accuracy']:.3f}, {row['train_seconds']:.0f} s)", flush=True)
        finally:
            if not args.work_dir:
                shutil.rmtree(work, ignore_errors=True)

    if args.efficiency_from:  # the time and memory table of an earlier run (--skip-accuracy --out FILE)
        results["efficiency"] = json.loads(Path(args.efficiency_from).read_text())["efficiency"]
    for T in tqdm(args.memory_lengths if not args.efficiency_from else [], desc="time and memory"):
        for name in EFFICIENCY_MODELS:
            if name.endswith("_math") and T > args.max_math_length:
                continue  # plain attention's T x T matrices: 4.3 GiB at T = 4096, more than a shared machine spares
            results["efficiency"].append(measure_in_subprocess(name, T, args, in_dim))
    results["total_seconds"] = time.perf_counter() - started

    if results["accuracy"] and args.features == "table":
        if args.select:
            print(f"\ndesign selection: accuracy (%) over seeds {args.seeds}, mean +- std; trained on the first "
                  f"{args.train_clips - args.select_clips} training clips, scored on the last {args.select_clips} "
                  f"(8 fps; the val split unused); chance 10%")
        else:
            print(f"\naccuracy (%) over seeds {args.seeds}, mean +- std; trained at {args.fps:g} fps on "
                  f"{args.train_clips} clips, {args.val_clips} validation clips per variant; chance 10%")
        print(study_table(results, args))
    elif results["accuracy"]:
        print(f"\nvalidation accuracy ({args.train_clips} training clips, chance = 0.100)")
        print(f"{'T':>6} " + " ".join(f"{name:>17}" for name in HEADS))
        for T in args.lengths:
            accs = {r["model"]: r["val_accuracy"] for r in results["accuracy"] if r["T"] == T}
            print(f"{T:>6} " + " ".join(f"{accs.get(name, float('nan')):>17.3f}" for name in HEADS))
    print(f"\ntraining step on random features (batch {args.memory_batch}, {args.threads} thread(s))")
    print(f"{'T':>6} {'model':>17} {'peak MiB':>9} {'train ms/clip':>14} {'infer ms/clip':>14}")
    for r in results["efficiency"]:
        if "error" in r:
            print(f"{r['T']:>6} {r['model']:>17}  failed: {r['error']}")
        else:
            print(f"{r['T']:>6} {r['model']:>17} {r['peak_train_mb']:>9.1f} {r['train_ms_per_clip']:>14.2f} "
                  f"{r['infer_ms_per_clip']:>14.2f}")
    print(f"\ntotal {results['total_seconds']:.0f} s")

    Path(args.out).write_text(json.dumps(results, indent=1))
    if args.plot and not args.select:
        (plot_study if args.features == "table" and not args.skip_accuracy else plot)(results, args, args.plot)
    print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))


if __name__ == "__main__":
    main()
