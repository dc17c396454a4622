"""Benchmark the s4vision backbones next to their timm counterparts, in one run.

For every model and input resolution: parameters, GFLOPs per image and throughput in images/s
for inference (eval, ``torch.no_grad``) and training (forward + backward of a
cross-entropy loss). GFLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode``
(2 FLOPs per multiply-add of matmuls and convolutions). FFTs are *not* counted: CCNN's FlexConv
runs by FFT, so its figure covers only its pointwise layers; S4ND's separable convolutions run
as batched matrix products here and are counted.

All models are built for 224 (the CCNN for its CIFAR-10 size, 32) and evaluated at every
resolution without change (ViT is rebuilt per resolution for its position embedding). Each
timing is the best of ``--rounds`` interleaved repetitions, which keeps the comparison fair on a
machine shared with other work.

    python tools/bench_models.py --threads 1 --clock cpu   # ~10 minutes on a 2-core CPU
    python tools/bench_models.py --resolutions 224 --models s4nd_convnext_tiny,convnext_tiny
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Dict, List

import torch
import torch.nn.functional as F
import timm
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

import s4vision  # noqa: F401  (registers the s4vision models)

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
    p.add_argument("--rounds", type=int, default=2, help="timed repetitions (best is kept)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: elapsed time; cpu: process CPU time (with --threads 1: images per CPU-second, "
                        "robust when other jobs share the machine)")
    p.add_argument("--no-train", action="store_true", help="skip the training measurement")
    p.add_argument("--skip-train", default="ccnn_4_140@288",
                   help="MODEL@RES pairs whose training step is not measured (default: the CCNN at 288, whose "
                        "full-resolution FFT activations need ~18 GB for a batch of 2)")
    p.add_argument("--out", default="bench_models.json", help="where to write the JSON results")
    return p.parse_args(argv)


def build(name: str, resolution: int) -> torch.nn.Module:
    kwargs = {"img_size": resolution} if name.startswith("vit_") else {}
    return timm.create_model(name, **kwargs)


def count_gflops(model: torch.nn.Module, x: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        model(x)  # kernels are generated once and cached in eval mode: count the steady state
        counter = FlopCounterMode(display=False)
        with counter:
            model(x)
    return counter.get_total_flops() / x.shape[0] / 1e9


def _timed(fn, clock) -> float:
    start = clock()
    fn()
    return clock() - start


def measure(models: Dict[str, torch.nn.Module], resolution: int, args, bar) -> Dict[str, dict]:
    """Interleaved timing of all models at one resolution: best of ``args.rounds``."""
    results = {}
    inputs = {}
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    for name, model in models.items():
        in_chans = model.pretrained_cfg["input_size"][0]
        x = torch.randn(args.batch, in_chans, resolution, resolution)
        xt = torch.randn(args.train_batch, in_chans, resolution, resolution)
        target = torch.randint(0, model.num_classes, (args.train_batch,))
        results[name] = dict(
            model=name, resolution=resolution, params_m=sum(p.numel() for p in model.parameters()) / 1e6,
            gflops=count_gflops(model, x[:1]), infer_s=float("inf"), train_s=float("inf"),
        )

        def infer(model=model, x=x):
            model.eval()
            with torch.no_grad():
                model(x)

        def train(model=model, x=xt, target=target):
            model.train()
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), target).backward()

        inputs[name] = (infer, train)
    # Inference first, training after: a training step changes the parameters, which (rightly)
    # invalidates the kernels S4ND and FlexConv cache in eval mode.
    for name, (infer, _) in inputs.items():
        infer()  # warm-up: kernel caches, allocator, oneDNN primitives
    for _ in range(args.rounds):
        for name, (infer, _) in inputs.items():
            results[name]["infer_s"] = min(results[name]["infer_s"], _timed(infer, clock))
            bar.update(1)
    skipped = {pair.strip() for pair in args.skip_train.split(",") if pair.strip()}
    trained = {n: step for n, (_, step) in inputs.items() if not args.no_train and f"{n}@{resolution}" not in skipped}
    for name, train in trained.items():
        train()
    for _ in range(args.rounds):
        for name in inputs:
            if name in trained:
                results[name]["train_s"] = min(results[name]["train_s"], _timed(trained[name], clock))
            bar.update(1)
    for r in results.values():
        r["infer_img_s"] = args.batch / r.pop("infer_s")
        train_s = r.pop("train_s")
        r["train_img_s"] = args.train_batch / train_s if train_s < float("inf") else None
    return results


def add_ratios(rows: List[dict]) -> None:
    """Throughput of each s4vision model relative to its timm baseline at the same resolution."""
    index = {(r["model"], r["resolution"]): r for r in rows}
    for r in rows:
        base = index.get((BASELINES.get(r["model"]), r["resolution"]))
        r["vs"] = base["model"] if base else None
        for key in ("infer_img_s", "train_img_s"):
            ok = base and r[key] and base[key]
            r[key.replace("_img_s", "_ratio")] = r[key] / base[key] if ok else None


def print_table(rows: List[dict]) -> None:
    header = f"{'model':26s} {'res':>4s} {'params(M)':>9s} {'GFLOPs':>7s} {'infer img/s':>11s} {'x base':>6s} " \
             f"{'train img/s':>11s} {'x base':>6s}"
    print(header)
    print("-" * len(header))
    fmt = lambda v, spec: format(v, spec) if v is not None else "-"  # noqa: E731
    for r in rows:
        print(f"{r['model']:26s} {r['resolution']:4d} {r['params_m']:9.2f} {r['gflops']:7.2f} "
              f"{fmt(r['infer_img_s'], '11.2f')} {fmt(r['infer_ratio'], '6.2f')} "
              f"{fmt(r['train_img_s'], '11.2f')} {fmt(r['train_ratio'], '6.2f')}")


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), {gpu}"


def main(argv=None) -> List[dict]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    resolutions = [int(r) for r in args.resolutions.split(",")]
    unknown = [n for n in names if not timm.is_model(n)]
    if unknown:
        raise SystemExit(f"unknown model(s): {', '.join(unknown)}")
    torch.manual_seed(0)
    rows = []
    runs = len(names) * len(resolutions) * args.rounds * 2
    with tqdm(total=runs, desc="benchmark", unit="run") as bar:
        for resolution in resolutions:
            models = {n: build(n, resolution) for n in names}
            rows.extend(measure(models, resolution, args, bar).values())
            del models
    add_ratios(rows)
    print(f"\nmachine: {machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.clock} clock, batch {args.batch} (inference) / {args.train_batch} (training), best of {args.rounds}")
    print_table(rows)
    report = dict(machine=machine(), torch=torch.__version__, timm=timm.__version__,
                  threads=torch.get_num_threads(), clock=args.clock, batch=args.batch, train_batch=args.train_batch,
                  rounds=args.rounds, fft_flops_counted=False, results=rows)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nwrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
