"""Benchmark of the N-d layers against depthwise convolutions, forward + backward.

For each input shape ``(B, C, H, W)``, in one process and one run, times a training step
(forward, then backward of a fixed random gradient, gradients w.r.t. the input and all
parameters) of:

- ``dwconv7x7``: ``F.conv2d`` depthwise with a 7x7 kernel (the ConvNeXt token mixer).
- ``dwconv_global``: ``F.conv2d`` depthwise with a ``(2H-1) x (2W-1)`` kernel, the extent of
  the S4ND / FlexConv kernels (very slow: fewer repeats, see ``--global-repeats``).
- ``s4nd_<kernel>[_<disc>]``: the spatial mixing of ``S4ND(activation=None, out_proj=None)``: per-axis
  kernel generation from the SSM parameters (ZOH unless a discretisation is named), the
  separable convolution (path chosen by the cost model, printed) and the ``D`` skip.
  ``s4nd_<kernel>[<path>]`` rows force one path (for the first kernel of ``--kernels`` only).
- ``pointwise``: the ``C -> C`` pointwise projection that ``S4ND(out_proj="linear")`` adds
  (the same as ConvNeXt's, so it is reported on its own rather than in either row).
- ``flexconv_<net>``: ``FlexConv(out_proj=None)``: kernel net on the ``(2H-1) x (2W-1)``
  offsets, Gaussian mask, N-d FFT convolution and bias.

Every row is timed under every clock of ``--clocks`` (default: two-thread wall clock and
one-thread CPU time, ``tools/_bench_clocks.py``). Rounds are interleaved across methods and
clocks (each round times every method under every clock once), so a change in machine load
affects all of them alike; the median of the rounds is reported, and ratios to ``dwconv7x7``
are taken within the run and the clock.

    python tools/bench_nd.py                      # both shapes, writes bench_nd.json
    python tools/bench_nd.py --quick              # tiny shapes, smoke test
    python tools/bench_nd.py --device cuda --clocks wall@8
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
from _bench_clocks import DEFAULT_CLOCKS, Clock, machine_info, parse_clocks, side_by_side  # noqa: E402

from s4vision.layers import S4ND, FlexConv  # noqa: E402
from s4vision.ops import choose_separable_path  # noqa: E402

DEFAULT_SHAPES = ["16,64,32,32", "8,96,56,56"]


def training_step(module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        module(x).backward(grad)

    return step


def depthwise(weight: torch.Tensor, padding) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: F.conv2d(x, weight, padding=padding, groups=weight.shape[0])


def build_methods(shape, args) -> Dict[str, Callable[[], None]]:
    B, C, H, W = shape
    dev = dict(device=args.device)
    x = torch.randn(shape, requires_grad=True, **dev)
    grad = torch.randn(shape, **dev)
    methods = {"dwconv7x7": training_step(depthwise(torch.randn(C, 1, 7, 7, requires_grad=True, **dev), 3), x, grad)}
    if args.global_repeats > 0:
        global_weight = torch.randn(C, 1, 2 * H - 1, 2 * W - 1, requires_grad=True, **dev)
        methods["dwconv_global"] = training_step(depthwise(global_weight, (H - 1, W - 1)), x, grad)
    for spec in args.kernels:
        kernel, _, disc = spec.partition(":")
        disc = disc or "zoh"
        name = f"s4nd_{kernel}" + (f"_{disc}" if disc != "zoh" else "")
        layer = S4ND(C, 2, d_state=args.d_state, kernel=kernel, disc=disc, activation=None, out_proj=None, l_max=(H, W),
                     **dev)
        methods[name] = training_step(layer, x, grad)
        for path in args.paths if spec == args.kernels[0] else ():
            forced = S4ND(C, 2, d_state=args.d_state, kernel=kernel, disc=disc, activation=None, out_proj=None, l_max=(H, W),
                          conv_path=path, **dev)
            forced.load_state_dict(layer.state_dict())
            methods[f"{name}[{path}]"] = training_step(forced, x, grad)
    pointwise = torch.nn.Conv2d(C, C, 1, **dev)
    methods["pointwise"] = training_step(pointwise, x, grad)
    for net in args.nets:
        methods[f"flexconv_{net}"] = training_step(FlexConv(C, 2, kernel_net=net, out_proj=None, **dev), x, grad)
    return methods


def time_methods(
    methods: Dict[str, Callable[[], None]], clocks: List[Clock], rounds: int, slow: Dict[str, int], bar: tqdm
) -> Dict[tuple, List[float]]:
    """``{(method, clock name): [ms per round]}``, rounds interleaved over methods and clocks."""
    samples: Dict[tuple, List[float]] = {(n, c.name): [] for n in methods for c in clocks}
    for fn in methods.values():  # warm-up under each thread count (allocator, oneDNN primitives, pools)
        for clock in clocks:
            clock.time(fn)
        bar.update(1)
    for r in range(rounds):
        for name, fn in methods.items():
            if r >= slow.get(name, rounds):
                continue
            for clock in clocks:
                samples[(name, clock.name)].append(1e3 * clock.time(fn))
            bar.update(1)
    return samples


def table(results: List[dict], clocks: List[Clock]) -> str:
    index = {(tuple(r["shape"]), r["method"], r["clock"]): r for r in results}
    keys = list(dict.fromkeys((tuple(r["shape"]), r["method"]) for r in results))
    left = [f"{'x'.join(str(s) for s in shape):<14}{method:<24}" for shape, method in keys]

    def cell(i: int, c: Clock) -> str:
        r = index[(*keys[i], c.name)]
        return f"{r['median_ms']:>10.1f}{r['min_ms']:>9.1f}{r['ratio_to_dwconv7x7']:>7.2f}"

    return side_by_side(left, f"{'shape':<14}{'method':<24}", clocks, f"{'median ms':>10}{'min ms':>9}{'vs 7x7':>7}", cell)


def plot(results: List[dict], clocks: List[Clock], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys(tuple(r["shape"]) for r in results))
    fig, axes = plt.subplots(1, len(shapes), figsize=(6 * len(shapes), 4), squeeze=False)
    for ax, shape in zip(axes[0], shapes):
        rows = [r for r in results if tuple(r["shape"]) == shape and r["method"] != "dwconv_global"]
        methods = list(dict.fromkeys(r["method"] for r in rows))
        width = 0.8 / len(clocks)
        for i, c in enumerate(clocks):
            values = [next(r["ratio_to_dwconv7x7"] for r in rows if r["method"] == m and r["clock"] == c.name) for m in methods]
            ax.bar([k + i * width for k in range(len(methods))], values, width, label=c.label)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks([k + width * (len(clocks) - 1) / 2 for k in range(len(methods))])
        ax.set_xticklabels(methods, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{'x'.join(map(str, shape))}: time / depthwise 7x7 (fwd+bwd)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> List[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, help="B,C,H,W")
    parser.add_argument("--kernels", nargs="+", default=["s4d", "s4", "s4:bilinear"],
                        help="S4ND kernels, optionally with a discretisation: s4d, s4, s4:bilinear")
    parser.add_argument("--paths", nargs="*", default=["toeplitz", "fft", "fft_nd"],
                        help="separable paths also timed one by one, for the first S4ND kernel")
    parser.add_argument("--nets", nargs="+", default=["magnet", "siren", "mlp", "gabor"])
    parser.add_argument("--d-state", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--global-repeats", type=int, default=1, help="rounds for dwconv_global (0: skip it)")
    parser.add_argument("--clocks", nargs="+", default=list(DEFAULT_CLOCKS),
                        help="clocks, each KIND@THREADS: wall@2 (elapsed, two threads), cpu@1 (CPU time of one thread)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and few rounds")
    parser.add_argument("--out", default="bench_nd.json")
    parser.add_argument("--plot", default=None, help="also write a PNG of the ratios to dwconv7x7")
    args = parser.parse_args(argv)
    if args.quick:
        args.shapes, args.rounds, args.global_repeats = ["2,8,12,12"], min(args.rounds, 3), min(args.global_repeats, 1)
    clocks = parse_clocks(args.clocks, args.device)
    torch.manual_seed(0)
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes]
    machine = machine_info(clocks, args.device)
    results = []
    with tqdm(total=0, desc="bench_nd", unit="step") as bar:
        for shape in shapes:
            methods = build_methods(shape, args)
            slow = {"dwconv_global": args.global_repeats}
            bar.total += len(methods) + sum(slow.get(n, args.rounds) for n in methods)
            bar.refresh()
            samples = time_methods(methods, clocks, args.rounds, slow, bar)
            auto = choose_separable_path(shape[2:], [2 * s - 1 for s in shape[2:]])
            for clock in clocks:
                base = statistics.median(samples[("dwconv7x7", clock.name)])
                for name in methods:
                    times = samples[(name, clock.name)]
                    med = statistics.median(times)
                    results.append(dict(
                        shape=list(shape), method=name, clock=clock.name, median_ms=med, min_ms=min(times),
                        rounds=len(times), ratio_to_dwconv7x7=med / base,
                        auto_path=auto if name.startswith("s4nd") else None,
                    ))
    machine["load_average_after"] = list(os.getloadavg())
    text = table(results, clocks)
    print(f"\ntorch {torch.__version__}, device {args.device}, load average {machine['load_average'][0]:.1f} -> "
          f"{machine['load_average_after'][0]:.1f}")
    print(text)
    for shape in shapes:
        print(f"auto path for {shape}: {choose_separable_path(shape[2:], [2 * s - 1 for s in shape[2:]])}")
    report = dict(
        benchmark="bench_nd",
        timed="forward + backward; S4ND rows: kernel generation + separable conv + D skip (activation=None, out_proj=None)",
        machine=machine, args=vars(args), table=text, results=results,
    )
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.out}")
    if args.plot:
        plot(results, clocks, args.plot)
        print(f"wrote {args.plot}")
    return results


if __name__ == "__main__":
    main()
