"""Benchmark the s4vision backbones next to their timm counterparts, in one run.

For every model and input resolution: parameters, GFLOPs per image and throughput in images/s
for inference (eval, ``torch.no_grad``) and training (forward + backward of a cross-entropy
loss), under every clock of ``--clocks`` (default: two-thread wall clock and one-thread CPU
time, see ``tools/_bench_clocks.py``). GFLOPs are counted with
``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add of matmuls and
convolutions). FFTs are *not* counted: CCNN's FlexConv runs large kernels by FFT, so its figure
covers only its pointwise layers and small direct convolutions; S4ND's separable convolutions
run as batched matrix products here and are counted.

All models are built for 224 (the CCNN for its CIFAR-10 size, 32) and evaluated at every
resolution without change (ViT is rebuilt per resolution for its position embedding). Each
timing is the best of ``--rounds`` repetitions; rounds are interleaved over models and clocks,
which keeps the comparison fair on a machine shared with other work. Ratios (``x base``) are
throughput relative to the timm model named in ``BASELINES``, at the same resolution and clock.

    python tools/bench_models.py                            # ~15 minutes on a 2-core CPU
    python tools/bench_models.py --resolutions 224 --models s4nd_convnext_tiny,convnext_tiny
    python tools/bench_models.py --device cuda --clocks wall@8 --batch 32 --train-batch 32
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn.functional as F
import timm
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_clocks import DEFAULT_CLOCKS, Clock, machine_info, parse_clocks, side_by_side  # noqa: E402

import s4vision  # noqa: E402,F401  (registers the s4vision models)

DEFAULT_MODELS = [
    "s4nd_convnext_atto", "convnext_atto",
    "s4nd_convnext_tiny", "convnext_tiny",
    "s4nd_vit_small_patch16", "vit_small_patch16_224",
    "ccnn_4_140",
]
# Each s4vision model and the timm model it is compared with.
BASELINES = {
    "s4nd_convnext_atto": "convnext_atto",
    "s4nd_convnext_tiny": "convnext_tiny",
    "s4nd_vit_small_patch16": "vit_small_patch16_224",
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated model names")
    p.add_argument("--resolutions", default="224,160,288", help="comma-separated square input sizes")
    p.add_argument("--batch", type=int, default=2, help="inference batch size")
    p.add_argument("--train-batch", type=int, default=2, help="training batch size")
    p.add_argument("--rounds", type=int, default=3, help="timed repetitions per clock (best is kept)")
    p.add_argument("--clocks", nargs="+", default=list(DEFAULT_CLOCKS),
                   help="clocks, each KIND@THREADS: wall@2 (elapsed, two threads), cpu@1 (CPU time of one thread)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--amp", choices=("none", "bf16"), default="none", help="autocast dtype for the timed calls")
    p.add_argument("--no-train", action="store_true", help="skip the training measurement")
    p.add_argument("--skip-train", default="ccnn_4_140@288",
                   help="MODEL@RES pairs whose training step is not measured (default: the CCNN at 288, whose "
                        "full-resolution activations are large for a batch of 2)")
    p.add_argument("--out", default="bench_models.json", help="where to write the JSON results")
    p.add_argument("--plot", default=None, help="also write a PNG of the ratios to the baselines")
    return p.parse_args(argv)


def build(name: str, resolution: int, device: str) -> torch.nn.Module:
    kwargs = {"img_size": resolution} if name.startswith("vit_") else {}
    return timm.create_model(name, **kwargs).to(device)


def count_gflops(model: torch.nn.Module, x: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        model(x)  # kernels are generated once and cached in eval mode: count the steady state
        counter = FlopCounterMode(display=False)
        with counter:
            model(x)
    return counter.get_total_flops() / x.shape[0] / 1e9


def _autocast(args, device: str):
    if args.amp == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def measure(models: Dict[str, torch.nn.Module], resolution: int, clocks: List[Clock], args, bar) -> List[dict]:
    """Interleaved timing of all models at one resolution: best of ``args.rounds`` per clock."""
    device = args.device
    best: Dict[tuple, float] = {}
    info, steps = {}, {}
    for name, model in models.items():
        in_chans = model.pretrained_cfg["input_size"][0]
        x = torch.randn(args.batch, in_chans, resolution, resolution, device=device)
        xt = torch.randn(args.train_batch, in_chans, resolution, resolution, device=device)
        target = torch.randint(0, model.num_classes, (args.train_batch,), device=device)
        info[name] = dict(params_m=sum(p.numel() for p in model.parameters()) / 1e6, gflops=count_gflops(model, x[:1]))

        def infer(model=model, x=x):
            model.eval()
            with torch.no_grad(), _autocast(args, device):
                model(x)

        def train(model=model, x=xt, target=target):
            model.train()
            model.zero_grad(set_to_none=True)
            with _autocast(args, device):
                loss = F.cross_entropy(model(x), target)
            loss.backward()

        steps[name] = (infer, train)
    skipped = {pair.strip() for pair in args.skip_train.split(",") if pair.strip()}
    trained = {n for n in models if not args.no_train and f"{n}@{resolution}" not in skipped}
    # Inference first, training after: a training step changes the parameters, which (rightly)
    # invalidates the kernels S4ND and FlexConv cache in eval mode.
    for task, index, names in (("infer", 0, list(models)), ("train", 1, [n for n in models if n in trained])):
        for name in names:
            for clock in clocks:  # warm-up: kernel caches, allocator, oneDNN primitives per thread count
                clock.time(steps[name][index])
        for _ in range(args.rounds):
            for name in names:
                for clock in clocks:
                    key = (name, task, clock.name)
                    best[key] = min(best.get(key, float("inf")), clock.time(steps[name][index]))
                    bar.update(1)
    rows = []
    for name in models:
        for clock in clocks:
            row = dict(model=name, resolution=resolution, clock=clock.name, **info[name])
            for task, batch in (("infer", args.batch), ("train", args.train_batch)):
                seconds = best.get((name, task, clock.name))
                row[f"{task}_img_s"] = batch / seconds if seconds else None
            rows.append(row)
    return rows


def add_ratios(rows: List[dict]) -> None:
    """Throughput of each s4vision model relative to its timm baseline at the same resolution and clock."""
    index = {(r["model"], r["resolution"], r["clock"]): r for r in rows}
    for r in rows:
        base = index.get((BASELINES.get(r["model"]), r["resolution"], r["clock"]))
        r["vs"] = base["model"] if base else None
        for key in ("infer_img_s", "train_img_s"):
            ok = base and r[key] and base[key]
            r[key.replace("_img_s", "_ratio")] = r[key] / base[key] if ok else None


def table(rows: List[dict], clocks: List[Clock]) -> str:
    """One line per model and resolution, the clocks side by side."""
    fmt = lambda v, spec: format(v, spec) if v is not None else "-"  # noqa: E731
    index = {(r["model"], r["resolution"], r["clock"]): r for r in rows}
    keys = list(dict.fromkeys((r["model"], r["resolution"]) for r in rows))
    left = [f"{m:26s} {res:4d} {index[(m, res, clocks[0].name)]['params_m']:9.2f} "
            f"{index[(m, res, clocks[0].name)]['gflops']:7.2f}" for m, res in keys]

    def cell(i: int, c: Clock) -> str:
        r = index[(*keys[i], c.name)]
        return (f"{fmt(r['infer_img_s'], '11.2f')} {fmt(r['infer_ratio'], '6.2f')} "
                f"{fmt(r['train_img_s'], '11.2f')} {fmt(r['train_ratio'], '6.2f')}")

    return side_by_side(left, f"{'model':26s} {'res':>4s} {'params(M)':>9s} {'GFLOPs':>7s}", clocks,
                        f"{'infer img/s':>11s} {'x base':>6s} {'train img/s':>11s} {'x base':>6s}", cell)


def plot(rows: List[dict], clocks: List[Clock], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compared = [r for r in rows if r["vs"]]
    keys = list(dict.fromkeys((r["model"], r["resolution"]) for r in compared))
    index = {(r["model"], r["resolution"], r["clock"]): r for r in compared}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    width = 0.8 / max(1, len(clocks))
    for ax, task in zip(axes, ("infer", "train")):
        for i, c in enumerate(clocks):
            values = [index[(m, res, c.name)][f"{task}_ratio"] or 0.0 for m, res in keys]
            ax.bar([k + i * width for k in range(len(keys))], values, width, label=c.label)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks([k + width * (len(clocks) - 1) / 2 for k in range(len(keys))])
        ax.set_xticklabels([f"{m}\n{res}" for m, res in keys], rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{task}: throughput / timm baseline")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> List[dict]:
    args = parse_args(argv)
    clocks = parse_clocks(args.clocks, args.device)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    resolutions = [int(r) for r in args.resolutions.split(",")]
    unknown = [n for n in names if not timm.is_model(n)]
    if unknown:
        raise SystemExit(f"unknown model(s): {', '.join(unknown)}")
    torch.manual_seed(0)
    rows = []
    runs = len(names) * len(resolutions) * args.rounds * 2 * len(clocks)
    machine = machine_info(clocks, args.device)
    with tqdm(total=runs, desc="bench_models", unit="run") as bar:
        for resolution in resolutions:
            models = {n: build(n, resolution, args.device) for n in names}
            rows.extend(measure(models, resolution, clocks, args, bar))
            del models
    add_ratios(rows)
    machine["load_average_after"] = list(os.getloadavg())
    text = table(rows, clocks)
    print(f"\n{machine['processor']}, {machine['cpu_count']} cores, {machine['gpu'] or 'no GPU'}, device {args.device}, "
          f"torch {torch.__version__}, batch {args.batch} (inference) / {args.train_batch} (training), "
          f"best of {args.rounds}, load average {machine['load_average'][0]:.1f} -> {machine['load_average_after'][0]:.1f}")
    print(text)
    report = dict(benchmark="bench_models", machine=machine, timm=timm.__version__, batch=args.batch,
                  train_batch=args.train_batch, rounds=args.rounds, amp=args.amp, fft_flops_counted=False,
                  table=text, results=rows)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nwrote {args.out}")
    if args.plot:
        plot(rows, clocks, args.plot)
        print(f"wrote {args.plot}")
    return rows


if __name__ == "__main__":
    main()
