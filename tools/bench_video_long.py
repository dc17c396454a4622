"""Long-video benchmark: ViS4mer against temporal mean pooling and a Transformer.

1. Trains a tiny frame encoder (timm's ``test_convnext``, 200k parameters, random
   init) for ``--encoder-seconds`` to classify single MNIST digits placed at
   random positions on a ``--size`` px frame, from the benchmark's training
   digits only, and saves it as a checkpoint.
2. For every clip length T in ``--lengths``: writes the long-range MNIST video
   benchmark (:func:`s4vision.data.make_benchmark`, label = first digit + last
   digit mod 10, distractor digits in between) as H.264 files and extracts
   per-frame features with :func:`s4vision.engine.extract_features` and the
   frozen encoder (64-d per frame). Every clip has ``--segments`` segments
   (``head_seconds = T / (segments * fps)``), so the number of digits to sort
   out stays the same while the time spans to integrate and bridge grow with T.
3. Trains three heads with the same recipe on the cached features and reports
   the validation accuracy: temporal mean pooling + linear, a Transformer
   encoder (``nn.TransformerEncoder``, learned positions, class token) and
   ViS4mer.
4. Measures, on random features, time per clip (inference and one training
   step) and peak memory of a training step, for T up to ``--memory-lengths``.
   Each measurement runs in a fresh process; memory is the growth of the peak
   resident set size (``VmHWM``, reset just before the step) over the resident
   size before the step. The Transformer is measured twice: with the fused
   attention kernel ``scaled_dot_product_attention`` picks by default, and
   with plain attention that materialises the ``T x T`` matrix
   (``transformer_math``).

Prints tables, writes JSON (``--out``) and a PNG plot (``--plot``).

    python tools/bench_video_long.py --out bench_video_long.json
"""
from __future__ import annotations

import argparse
import json
import math
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
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from s4vision.data import VideoFeatureDataset, make_benchmark
from s4vision.data.video_benchmark import DIGIT_SIZE, mnist_digits
from s4vision.engine import extract_features
from s4vision.models import ViS4mer

ENCODER = "test_convnext"
NUM_CLASSES = 10
HEADS = ("mean_pool_linear", "transformer", "vis4mer")
# For time and memory also the Transformer with plain (materialised T x T) attention, as
# opposed to the fused kernel scaled_dot_product_attention picks by default.
EFFICIENCY_MODELS = ("mean_pool_linear", "transformer", "transformer_math", "vis4mer")


# -- heads -------------------------------------------------------------------------------------


class MeanPoolLinear(nn.Module):
    """``(B, T, D)`` -> average over time -> linear classifier."""

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.fc = nn.Linear(in_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x.mean(dim=1)))


class TransformerHead(nn.Module):
    """``(B, T, D)`` -> projection, learned positions, class token -> Transformer encoder -> linear."""

    def __init__(self, in_dim: int, num_classes: int, max_len: int, d_model: int = 64, depth: int = 2, heads: int = 4):
        super().__init__()
        self.proj = nn.Linear(in_dim, d_model)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        self.pos = nn.Parameter(torch.randn(1, max_len + 1, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, heads, 2 * d_model, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos[:, : x.shape[1] + 1]
        return self.fc(self.norm(self.encoder(x)[:, 0]))


def build_head(name: str, in_dim: int, max_len: int, d_model: int, d_state: int) -> nn.Module:
    if name == "mean_pool_linear":
        return MeanPoolLinear(in_dim, NUM_CLASSES)
    if name == "transformer":
        return TransformerHead(in_dim, NUM_CLASSES, max_len, d_model=d_model)
    if name == "vis4mer":
        return ViS4mer(in_dim, NUM_CLASSES, embed_dim=d_model, depth=3, d_state=d_state)
    raise ValueError(f"unknown head {name!r}")


# -- step 1: the frame encoder -----------------------------------------------------------------


def digit_frames(images: np.ndarray, labels: np.ndarray, count: int, size: int, rng: np.random.Generator):
    """``count`` frames ``(count, 3, size, size)`` in [0, 1], one random digit at a random place."""
    chosen = rng.integers(0, len(images), count)
    frames = np.zeros((count, size, size), np.float32)
    for frame, image, (y, x) in zip(frames, images[chosen], rng.integers(0, size - DIGIT_SIZE + 1, (count, 2))):
        frame[y:y + DIGIT_SIZE, x:x + DIGIT_SIZE] = image / 255.0
    return torch.from_numpy(frames)[:, None].expand(-1, 3, -1, -1), torch.from_numpy(labels[chosen])


def train_encoder(size: int, seconds: float, path: Path, seed: int) -> dict:
    """Train the frame encoder on single digits for ``seconds``; save it to ``path``."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = timm.create_model(ENCODER, pretrained=False, num_classes=NUM_CLASSES)
    config = timm.data.resolve_data_config(model=model)
    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["std"]).view(1, 3, 1, 1)
    train_images, train_labels = mnist_digits("train")
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    start, steps = time.perf_counter(), 0
    with tqdm(desc="training the frame encoder", total=round(seconds), unit="s") as bar:
        while (elapsed := time.perf_counter() - start) < seconds:
            x, y = digit_frames(train_images, train_labels, 128, size, rng)
            loss = F.cross_entropy(model((x - mean) / std), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            bar.update(round(elapsed) - bar.n)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    val_images, val_labels = mnist_digits("val")
    x, y = digit_frames(val_images, val_labels, 2000, size, rng)
    with torch.no_grad():
        accuracy = (model((x - mean) / std).argmax(-1) == y).float().mean().item()
    save_file(model.state_dict(), str(path))
    return {"steps": steps, "seconds": seconds, "val_digit_accuracy": accuracy}


# -- step 2: clips and features ----------------------------------------------------------------


def clip_features(work: Path, T: int, split: str, clips: int, args, checkpoint: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Write one split of the benchmark at length T (once) and return its features ``(N, T, D)``."""
    data = work / f"T{T}"
    csv = data / f"{split}.csv"
    if not csv.exists():
        make_benchmark(data, clips, T, fps=args.fps, size=args.size, head_seconds=T / (args.segments * args.fps),
                       seed=args.seed + T, split=split)
    index = extract_features(csv, work / f"features_T{T}_{split}", ENCODER, checkpoint=checkpoint,
                             size=args.size, batch_size=512)
    dataset = VideoFeatureDataset(index)
    features = torch.stack([dataset[i][0] for i in range(len(dataset))])
    return features, torch.tensor(dataset.labels)


# -- step 3: training the heads ----------------------------------------------------------------


def train_head(model: nn.Module, train: tuple, val: tuple, epochs: int, lr: float, batch: int, seed: int) -> dict:
    torch.manual_seed(seed)
    (x_train, y_train), (x_val, y_val) = train, val
    steps = epochs * math.ceil(len(x_train) / batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x_train)).split(batch):
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            schedule.step()
    seconds = time.perf_counter() - start

    def accuracy(x, y):
        model.eval()
        with torch.no_grad():
            return torch.cat([model(chunk).argmax(-1) for chunk in x.split(64)]).eq(y).float().mean().item()

    return {"val_accuracy": accuracy(x_val, y_val), "train_accuracy": accuracy(x_train, y_train),
            "train_seconds": seconds, "final_loss": loss.item(),
            "parameters": sum(p.numel() for p in model.parameters())}


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


def measure(name: str, T: int, in_dim: int, batch: int, d_model: int, d_state: int, repeats: int) -> dict:
    """Run in a fresh process: peak memory of one training step, then median times."""
    from contextlib import nullcontext

    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    attention = sdpa_kernel(SDPBackend.MATH) if name == "transformer_math" else nullcontext()
    model = build_head(name.removesuffix("_math"), in_dim, T, d_model, d_state)
    x = torch.randn(batch, T, in_dim)
    y = torch.randint(0, NUM_CLASSES, (batch,))

    def train_step():
        model.train()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    def infer():
        model.eval()
        with torch.no_grad():
            model(x)

    with attention:
        _reset_peak_rss()
        before = _status_mb("VmRSS")
        train_step()
        peak = _status_mb("VmHWM")
        times = {}
        for label, fn in (("train", train_step), ("infer", infer)):
            fn()
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                runs.append(time.perf_counter() - start)
            times[label] = sorted(runs)[len(runs) // 2]
    return {"model": name, "T": T, "peak_train_mb": max(peak - before, 0.0),
            "train_ms_per_clip": 1e3 * times["train"] / batch, "infer_ms_per_clip": 1e3 * times["infer"] / batch}


def measure_in_subprocess(name: str, T: int, args, in_dim: int) -> dict:
    command = [sys.executable, __file__, "--measure", name, str(T), str(in_dim), "--threads", str(args.threads),
               "--batch", str(args.memory_batch), "--d-model", str(args.d_model), "--d-state", str(args.d_state),
               "--repeats", str(args.repeats)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return {"model": name, "T": T, "error": result.stderr.strip().splitlines()[-1:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- report ------------------------------------------------------------------------------------


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for color, name in enumerate(EFFICIENCY_MODELS):
        style = dict(marker="o", label=name, color=f"C{color}")
        acc = [(r["T"], r["val_accuracy"]) for r in results["accuracy"] if r["model"] == name]
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
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--train-clips", type=int, default=400)
    parser.add_argument("--val-clips", type=int, default=100)
    parser.add_argument("--size", type=int, default=32, help="frame size in pixels")
    parser.add_argument("--fps", type=float, default=8)
    parser.add_argument("--segments", type=int, default=4,
                        help="digits per clip: first, segments - 2 distractors, last")
    parser.add_argument("--encoder-seconds", type=float, default=60)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, nargs=3, default=[3e-3, 1e-3, 3e-3], metavar=("MEAN", "TRANSFORMER", "VIS4MER"),
                        help="peak learning rate of each head (each the better of 1e-3 and 3e-3 in a pilot)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--d-state", type=int, default=32)
    parser.add_argument("--memory-lengths", type=int, nargs="+", default=[64, 256, 1024, 2048, 4096])
    parser.add_argument("--memory-batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 avoids thread oversubscription on a shared 2-core machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default=None,
                        help="keep clips, features and the encoder here and reuse them (default: a temp dir)")
    parser.add_argument("--out", default="bench_video_long.json")
    parser.add_argument("--plot", default="bench_video_long.png")
    parser.add_argument("--skip-accuracy", action="store_true", help="only measure time and memory")
    parser.add_argument("--measure", nargs=3, metavar=("MODEL", "T", "IN_DIM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.measure:
        name, T, in_dim = args.measure[0], int(args.measure[1]), int(args.measure[2])
        print(json.dumps(measure(name, T, in_dim, args.batch, args.d_model, args.d_state, args.repeats)))
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
            checkpoint = work / "encoder.safetensors"
            encoder_file = work / "encoder.json"
            if checkpoint.exists() and encoder_file.exists():
                results["encoder"] = json.loads(encoder_file.read_text())
            else:
                results["encoder"] = train_encoder(args.size, args.encoder_seconds, checkpoint, args.seed)
                encoder_file.write_text(json.dumps(results["encoder"]))
            print(f"frame encoder {ENCODER}: digit accuracy {results['encoder']['val_digit_accuracy']:.3f}")
            for T in args.lengths:
                phase = time.perf_counter()
                train = clip_features(work, T, "train", args.train_clips, args, checkpoint)
                val = clip_features(work, T, "val", args.val_clips, args, checkpoint)
                mean, std = train[0].mean((0, 1)), train[0].std((0, 1)) + 1e-6
                train, val = ((train[0] - mean) / std, train[1]), ((val[0] - mean) / std, val[1])
                data_seconds = time.perf_counter() - phase
                for name, lr in zip(HEADS, args.lr):
                    model = build_head(name, in_dim, T, args.d_model, args.d_state)
                    row = {"model": name, "T": T, "data_seconds": data_seconds, "lr": lr}
                    row.update(train_head(model, train, val, args.epochs, lr, args.batch, args.seed))
                    results["accuracy"].append(row)
                    print(f"T={T:5d} {name:17s} val acc {row['val_accuracy']:.3f} "
                          f"(train {row['train_accuracy']:.3f}, {row['train_seconds']:.0f} s)", flush=True)
        finally:
            if not args.work_dir:
                shutil.rmtree(work, ignore_errors=True)

    for T in tqdm(args.memory_lengths, desc="time and memory"):
        for name in EFFICIENCY_MODELS:
            results["efficiency"].append(measure_in_subprocess(name, T, args, in_dim))
    results["total_seconds"] = time.perf_counter() - started

    if results["accuracy"]:
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
    if args.plot:
        plot(results, args.plot)
    print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))


if __name__ == "__main__":
    main()
