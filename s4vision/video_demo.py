"""A head trained at 8 fps, evaluated at 4, 8 and 16 fps (``s4vision video demo``).

A small version of the frame-rate experiment of ``tools/bench_video_long.py``, end to end through
the package on a CPU, with no network: it writes the long-range moving-MNIST clips
(:func:`~s4vision.data.make_benchmark`; label = first digit + last digit mod 10, distractors in
between) as H.264 files, the training clips at 8 fps and the same held-out clips rendered at 4,
8 and 16 fps (the same seconds, half / the same / twice the frames); trains a tiny frame encoder
(timm's ``test_convnext``) on single digits with the engine; decodes every clip and caches its
per-frame features and timestamps (:func:`~s4vision.engine.extract_features`); trains a
continuous-time :class:`~s4vision.models.ViS4mer` and a Transformer with learned positions (a
frame-indexed head) on the 8 fps features with the engine; and evaluates both on the held-out
clips at each frame rate, the features and timestamps as decoded. ViS4mer reads frames as
samples in time and keeps its accuracy; the Transformer's positions count frames, so at another
frame rate its input means something else.

Outputs (default ``outputs/video_demo/``): a table on stdout, ``results.json`` and
``frame_rate.png``. About 4 minutes on an idle 2-core CPU (229 s measured). With 2,000 training
clips the Transformer learns the task at 8 fps and loses it at 4 and 16 fps (59.5% -> 13.0% /
17.5%), while ViS4mer, less accurate, stays within 1.5 points (26.0% -> 27.5% / 25.5%); with a
few hundred clips both stay near chance and the demo shows nothing.

    s4vision video demo
    s4vision video demo --train-clips 4000 --epochs 20 --out-dir outputs/video_demo_long
"""
from __future__ import annotations

import json
import time
from pathlib import Path
import numpy as np
import torch

from ._checks import check_positive_int
from ._io import atomic_write_json
from .errors import InvalidValueError

__all__ = ["run_video_demo", "evaluate_on_caches", "format_results", "train_frame_encoder", "train_temporal_head",
           "DEMO_HEADS", "DEMO_RATES"]

ENCODER = "test_convnext"
DEMO_RATES = (4.0, 8.0, 16.0)
TRAIN_FPS = 8.0
SIZE = 32
# Head name in the registry, its arguments (T: frames per training clip) and peak learning rate.
DEMO_HEADS = {
    "vis4mer": ("vis4mer", lambda T: {"embed_dim": 64, "depth": 3, "d_state": 32, "train_fps": TRAIN_FPS}, 3e-3),
    "transformer (learned positions)": ("transformer", lambda T: {"embed_dim": 64, "max_tokens": 2 * T + 2}, 1e-3),
}


def evaluate_on_caches(model_file: str | Path, indices: dict, batch_size: int = 32) -> dict:
    """Top-1 accuracy of a trained temporal head on feature caches (``{name: index.json}``), each
    clip whole, its features and timestamps as cached (no resampling: a head that takes
    timestamps gets the frames' own)."""
    from safetensors.torch import load_file

    from .engine.evaluate import load_checkpoint_model
    from .models.heads import forward_with_time

    model, _ = load_checkpoint_model(model_file)
    model.eval()
    accuracy = {}
    for name, index in indices.items():
        index = Path(index)
        entries = json.loads(index.read_text())["videos"]
        correct = 0
        for start in range(0, len(entries), batch_size):
            part = entries[start:start + batch_size]
            tensors = [load_file(str(index.parent / e["features"])) for e in part]
            x = torch.stack([t["features"] for t in tensors])
            times = torch.stack([t["timestamps"] for t in tensors])
            with torch.no_grad():
                predicted = forward_with_time(model, x, times).argmax(-1)
            correct += int((predicted == torch.tensor([int(e["label"]) for e in part])).sum())
        accuracy[name] = correct / len(entries)
    return accuracy


def _train(cfg_dict: dict):
    from .engine.config import config_from_dict, validate_config
    from .engine.train import train

    cfg = config_from_dict(cfg_dict)
    validate_config(cfg)
    return train(cfg, resume=True)


def train_frame_encoder(folder: Path, run_dir: Path, *, images: int, epochs: int, size: int = SIZE, seed: int = 0,
                        threads: int | None = None):
    """``test_convnext`` trained with the engine (``task=image``) on ``images`` frames of single
    training digits at random places, written once to ``folder``
    (:func:`~s4vision.data.video_benchmark.write_digit_images`); the engine's result."""
    from .data.video_benchmark import write_digit_images

    if not (folder / "test").is_dir():
        write_digit_images(folder, "train", images, size, seed)
        write_digit_images(folder, "test", max(1, images // 8), size, seed)
    return _train({
        "model": {"name": ENCODER, "kwargs": {"in_chans": 3}},
        "data": {"dataset": "imagefolder", "root": str(folder), "resolution": size, "batch_size": 128,
                 "augment": {"random_resized_crop": False}},
        "optim": {"lr": 2e-3, "weight_decay": 0.05, "warmup_epochs": 0.2},
        "train": {"epochs": epochs, "seed": seed, "threads": threads, "output_dir": str(run_dir), "progress": True},
    })


def train_temporal_head(name: str, kwargs: dict, train_index: Path, eval_index: Path, *, epochs: int, lr: float,
                        batch_size: int, seed: int, run_dir: Path, threads: int | None, progress: bool = True):
    """Head ``name`` trained with the engine on a feature cache (``task=video_features``)."""
    return _train({
        "task": "video_features",
        "model": {"name": name, "kwargs": kwargs},
        "video": {"train": str(train_index), "eval": str(eval_index), "num_frames": None},
        "data": {"batch_size": batch_size, "eval_batch_size": 64},
        "optim": {"lr": lr, "weight_decay": 0.05, "warmup_epochs": 0.1 * epochs, "min_lr_ratio": 0.0},
        "train": {"epochs": epochs, "seed": seed, "threads": threads, "output_dir": str(run_dir),
                  "progress": progress, "eval_every": epochs},
    })


def run_video_demo(
    out_dir: str | Path = "outputs/video_demo",
    *,
    train_clips: int = 2000,
    val_clips: int = 200,
    num_frames: int = 64,
    epochs: int = 10,
    encoder_images: int = 6000,
    encoder_epochs: int = 3,
    seed: int = 0,
    threads: int | None = None,
) -> dict:
    """Run the demo in ``out_dir`` (reused: finished steps are not redone); returns the results."""
    from .data import make_benchmark
    from .engine.features import extract_features

    for name, value in (("train_clips", train_clips), ("val_clips", val_clips), ("num_frames", num_frames),
                        ("epochs", epochs), ("encoder_images", encoder_images), ("encoder_epochs", encoder_epochs)):
        check_positive_int(name, value)
    if num_frames < 32:
        raise InvalidValueError(f"num_frames must be at least 32 (4 segments, spanning 8 frames at 4 fps), got {num_frames}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    head_seconds = num_frames / (4 * TRAIN_FPS)  # four segments: first digit, two distractors, last digit
    clips = {"train": out / "clips" / "train_8fps"} | {f"{r:g}": out / "clips" / f"val_{r:g}fps" for r in DEMO_RATES}
    for key, folder in clips.items():
        split = "train" if key == "train" else "val"
        if not (folder / f"{split}.csv").exists():
            make_benchmark(folder, train_clips if split == "train" else val_clips, num_frames, fps=TRAIN_FPS, size=SIZE,
                           head_seconds=head_seconds, seed=seed, split=split,
                           render_fps=TRAIN_FPS if split == "train" else float(key))
    encoder = train_frame_encoder(out / "digits", out / "encoder", images=encoder_images, epochs=encoder_epochs,
                                  seed=seed, threads=threads).model_file
    features = {key: extract_features(folder / f"{'train' if key == 'train' else 'val'}.csv", out / "features" / key,
                                      ENCODER, checkpoint=encoder, size=SIZE, batch_size=256)
                for key, folder in clips.items()}
    results = {"train_fps": TRAIN_FPS, "num_frames": num_frames, "train_clips": train_clips, "val_clips": val_clips,
               "epochs": epochs, "seed": seed, "accuracy": {}}
    for label, (name, kwargs, lr) in DEMO_HEADS.items():
        run = train_temporal_head(name, kwargs(num_frames), features["train"], features["8"], epochs=epochs, lr=lr,
                                  batch_size=16, seed=seed, run_dir=out / "runs" / name, threads=threads)
        accuracy = evaluate_on_caches(run.model_file, {f"{r:g}": features[f"{r:g}"] for r in DEMO_RATES})
        results["accuracy"][label] = {rate: 100 * a for rate, a in accuracy.items()}
    results["seconds"] = time.perf_counter() - started
    atomic_write_json(out / "results.json", results)
    _plot(results, out / "frame_rate.png")
    return results


def format_results(results: dict) -> str:
    rates = [f"{r:g}" for r in DEMO_RATES]
    lines = [f"accuracy (%) of heads trained at {results['train_fps']:g} fps, by test frame rate (chance 10%)",
             f"{'head':<34}" + "".join(f"{r + ' fps':>9}" for r in rates)]
    for label, accuracy in results["accuracy"].items():
        lines.append(f"{label:<34}" + "".join(f"{accuracy[r]:>9.1f}" for r in rates))
    return "\n".join(lines)


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [f"{r:g}" for r in DEMO_RATES]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    width = 0.8 / len(results["accuracy"])
    for k, (label, accuracy) in enumerate(results["accuracy"].items()):
        ax.bar(np.arange(len(rates)) + (k - (len(results["accuracy"]) - 1) / 2) * width,
               [accuracy[r] for r in rates], width, label=label)
    ax.axhline(10, color="gray", linestyle=":", label="chance")
    ax.set_xticks(range(len(rates)), [f"{r} fps" + (" (train)" if float(r) == results["train_fps"] else "")
                                      for r in rates])
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title(f"trained at {results['train_fps']:g} fps on {results['train_clips']} clips")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def add_arguments(parser) -> None:
    """The options of ``s4vision video demo``."""
    parser.add_argument("--out-dir", default="outputs/video_demo", help="where clips, features, runs and results go")
    parser.add_argument("--train-clips", type=int, default=2000)
    parser.add_argument("--val-clips", type=int, default=200, help="held-out clips, at each test frame rate")
    parser.add_argument("--num-frames", type=int, default=64, help="frames per clip at 8 fps")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of each head")
    parser.add_argument("--encoder-images", type=int, default=6000, help="digit frames the frame encoder learns from")
    parser.add_argument("--encoder-epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")


def run_from_args(args) -> int:
    """``s4vision video demo``: run, print the table, name the outputs."""
    results = run_video_demo(args.out_dir, train_clips=args.train_clips, val_clips=args.val_clips,
                             num_frames=args.num_frames, epochs=args.epochs, encoder_images=args.encoder_images,
                             encoder_epochs=args.encoder_epochs, seed=args.seed, threads=args.threads)
    print(format_results(results))
    print(f"\nwrote {Path(args.out_dir) / 'results.json'} and {Path(args.out_dir) / 'frame_rate.png'} "
          f"({results['seconds'] / 60:.1f} min)")
    return 0
