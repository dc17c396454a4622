"""How FlexConv's cost grows with the extent of its Gaussian mask (its learned kernel size).

FlexConv crops its kernel to the box outside which the mask is below ``mask_threshold``
(``FlexConv.crop``): half-widths of at most 4 taps (2 with gradients) are convolved directly,
wider ones by FFT of ``_fft_len(S + h)`` samples (``2^a`` times 1, 3, 5, 9 or 15) per axis, so the cost follows the mask's
extent, not the input's. For each mask width ``sigma`` (in units of the input's extent) this
times ``FlexConv(out_proj=None)`` on ``(B, C, H, W)``: inference (eval, no grad, kernel
spectrum cached) and a training step (forward + backward of a fixed gradient, the kernel net
evaluated every step), next to the depthwise 7x7 convolution, under every clock of
``--clocks`` with interleaved rounds (``tools/_bench_clocks.py``); the median is reported.

    python tools/bench_flexconv_crop.py                      # ~3 minutes on a 2-core CPU
    python tools/bench_flexconv_crop.py --shape 2,140,224,224 --no-train   # a CCNN layer at 224
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_clocks import DEFAULT_CLOCKS, machine_info, parse_clocks, side_by_side  # noqa: E402

from s4vision.layers import FlexConv  # noqa: E402
from s4vision.layers.flexconv import _DIRECT_HALF_WIDTH, _DIRECT_HALF_WIDTH_TRAIN  # noqa: E402
from s4vision.ops.fftconv import _fft_len  # noqa: E402

DEFAULT_SIGMAS = "0.005,0.01,0.02,0.04,0.08,0.16,0.25"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="8,64,64,64", help="B,C,H,W")
    p.add_argument("--sigmas", default=DEFAULT_SIGMAS, help="comma-separated mask widths (units of the extent)")
    p.add_argument("--threshold", type=float, default=0.1, help="mask_threshold (0.1: the CCNN paper's)")
    p.add_argument("--rounds", type=int, default=5, help="timed repetitions per clock (median is kept)")
    p.add_argument("--clocks", nargs="+", default=list(DEFAULT_CLOCKS), help="clocks, each KIND@THREADS")
    p.add_argument("--no-train", action="store_true", help="time inference only")
    p.add_argument("--out", default="bench_flexconv_crop.json", help="where to write the JSON results")
    return p.parse_args(argv)


def path_name(half: int, size: int, train: bool) -> str:
    limit = _DIRECT_HALF_WIDTH_TRAIN if train else _DIRECT_HALF_WIDTH
    return "direct" if half <= limit else f"FFT {_fft_len(size + half)}"


def main(argv=None) -> List[dict]:
    args = parse_args(argv)
    clocks = parse_clocks(args.clocks)
    B, C, H, W = (int(v) for v in args.shape.split(","))
    sigmas = [float(s) for s in args.sigmas.split(",")]
    torch.manual_seed(0)
    x = torch.randn(B, C, H, W)
    xg = x.clone().requires_grad_(True)
    grad = torch.randn_like(x)
    weight = torch.randn(C, 1, 7, 7)

    steps: Dict[str, Callable[[], None]] = {}
    rows: Dict[str, dict] = {}

    def dw_infer():
        with torch.no_grad():
            F.conv2d(x, weight, padding=3, groups=C)

    steps["dwconv7x7/infer"] = dw_infer
    if not args.no_train:
        steps["dwconv7x7/train"] = lambda: F.conv2d(xg, weight.requires_grad_(), padding=3, groups=C).backward(grad)
    rows["dwconv7x7"] = dict(method="dwconv7x7", sigma=None, half_width=3, infer_path="direct", train_path="direct")
    for sigma in sigmas:
        layer = FlexConv(C, 2, out_proj=None, mask_sigma=sigma, mask_threshold=args.threshold)
        half = max(layer.crop((H, W)))
        name = f"sigma={sigma:g}"
        rows[name] = dict(method="flexconv", sigma=sigma, half_width=half, infer_path=path_name(half, max(H, W), False),
                          train_path=path_name(half, max(H, W), True))

        def infer(layer=layer):
            layer.eval()
            with torch.no_grad():
                layer(x)

        def train(layer=layer):
            layer.train()
            layer(xg).backward(grad)

        steps[f"{name}/infer"] = infer
        if not args.no_train:
            steps[f"{name}/train"] = train

    times: Dict[tuple, list] = {}
    with tqdm(total=len(steps) * len(clocks) * (args.rounds + 1), desc="bench_flexconv_crop", unit="step") as bar:
        for rnd in range(args.rounds + 1):  # round 0 warms up (kernel caches, oneDNN primitives)
            for key, step in steps.items():
                for clock in clocks:
                    seconds = clock.time(step)
                    if rnd:
                        times.setdefault((key, clock.name), []).append(seconds)
                    bar.update(1)
    results = []
    for name, row in rows.items():
        for clock in clocks:
            r = dict(row, name=name, clock=clock.name)
            for task in ("infer", "train"):
                t = times.get((f"{name}/{task}", clock.name))
                base = times.get((f"dwconv7x7/{task}", clock.name))
                r[f"{task}_ms"] = statistics.median(t) * 1e3 if t else None
                r[f"{task}_vs_7x7"] = statistics.median(t) / statistics.median(base) if t and base else None
            results.append(r)
    index = {(r["name"], r["clock"]): r for r in results}
    names = list(rows)
    fmt = lambda v, spec: format(v, spec) if v is not None else "-"  # noqa: E731
    left = [f"{n:14s} {rows[n]['half_width']:5d} {2 * rows[n]['half_width'] + 1:5d} {rows[n]['infer_path']:>9s} "
            f"{rows[n]['train_path']:>9s}" for n in names]

    def cell(i: int, clock) -> str:
        r = index[(names[i], clock.name)]
        return (f"{fmt(r['infer_ms'], '8.1f')} {fmt(r['infer_vs_7x7'], '6.2f')} "
                f"{fmt(r['train_ms'], '8.1f')} {fmt(r['train_vs_7x7'], '6.2f')}")

    text = side_by_side(left, f"{'mask':14s} {'half':>5s} {'taps':>5s} {'infer':>9s} {'train':>9s}", clocks,
                        f"{'infer ms':>8s} {'vs 7x7':>6s} {'train ms':>8s} {'vs 7x7':>6s}", cell)
    machine = machine_info(clocks)
    machine["load_average_after"] = list(os.getloadavg())
    print(f"\nFlexConv(out_proj=None) on {B}x{C}x{H}x{W}, mask_threshold {args.threshold:g}, median of {args.rounds}, "
          f"load average {machine['load_average'][0]:.1f} -> {machine['load_average_after'][0]:.1f}")
    print(text)
    with open(args.out, "w") as f:
        json.dump(dict(benchmark="bench_flexconv_crop", machine=machine, shape=[B, C, H, W], threshold=args.threshold,
                       rounds=args.rounds, table=text, results=results), f, indent=2)
    print(f"\nwrote {args.out}")
    return results


if __name__ == "__main__":
    main()
