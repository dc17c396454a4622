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

Repeats are interleaved across methods (each round times every method once), so a change in
machine load affects all of them alike; the median of the rounds is reported, and ratios to
``dwconv7x7`` are taken within the run.

    python tools/bench_nd.py                      # both shapes, writes bench_nd.json
    python tools/bench_nd.py --quick              # tiny shapes, smoke test
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from tqdm import tqdm

from s4vision.layers import S4ND, FlexConv
from s4vision.ops import choose_separable_path

DEFAULT_SHAPES = ["16,64,32,32", "8,96,56,56"]


def training_step(module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        module(x).backward(grad)

    return step


def depthwise(weight: torch.Tensor, padding) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: F.conv2d(x, weight, padding=padding, groups=weight.shape[0])


def build_methods(shape, args) -> Dict[str, Callable[[], None]]:
    B, C, H, W = shape
    x = torch.randn(shape, requires_grad=True)
    grad = torch.randn(shape)
    methods = {"dwconv7x7": training_step(depthwise(torch.randn(C, 1, 7, 7, requires_grad=True), 3), x, grad)}
    if args.global_repeats > 0:
        global_weight = torch.randn(C, 1, 2 * H - 1, 2 * W - 1, requires_grad=True)
        methods["dwconv_global"] = training_step(depthwise(global_weight, (H - 1, W - 1)), x, grad)
    for spec in args.kernels:
        kernel, _, disc = spec.partition(":")
        disc = disc or "zoh"
        name = f"s4nd_{kernel}" + (f"_{disc}" if disc != "zoh" else "")
        layer = S4ND(C, 2, d_state=args.d_state, kernel=kernel, disc=disc, activation=None, out_proj=None, l_max=(H, W))
        methods[name] = training_step(layer, x, grad)
        for path in args.paths if spec == args.kernels[0] else ():
            forced = S4ND(C, 2, d_state=args.d_state, kernel=kernel, disc=disc, activation=None, out_proj=None, l_max=(H, W),
                          conv_path=path)
            forced.load_state_dict(layer.state_dict())
            methods[f"{name}[{path}]"] = training_step(forced, x, grad)
    pointwise = torch.nn.Conv2d(C, C, 1)
    methods["pointwise"] = training_step(pointwise, x, grad)
    for net in args.nets:
        methods[f"flexconv_{net}"] = training_step(FlexConv(C, 2, kernel_net=net, out_proj=None), x, grad)
    return methods


def time_methods(
    methods: Dict[str, Callable[[], None]], rounds: int, slow: Dict[str, int], bar: tqdm, clock: Callable[[], float]
) -> Dict[str, List[float]]:
    samples: Dict[str, List[float]] = {name: [] for name in methods}
    for fn in methods.values():  # warm-up (allocator, oneDNN primitives, thread pools)
        fn()
        bar.update(1)
    for r in range(rounds):
        for name, fn in methods.items():
            if r >= slow.get(name, rounds):
                continue
            start = clock()
            fn()
            samples[name].append(1e3 * (clock() - start))
            bar.update(1)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, help="B,C,H,W")
    parser.add_argument("--kernels", nargs="+", default=["s4d", "s4", "s4:bilinear"],
                        help="S4ND kernels, optionally with a discretisation: s4d, s4, s4:bilinear")
    parser.add_argument("--paths", nargs="*", default=["toeplitz", "fft", "fft_nd"],
                        help="separable paths also timed one by one, for the first S4ND kernel")
    parser.add_argument("--nets", nargs="+", default=["magnet", "siren", "mlp", "gabor"])
    parser.add_argument("--d-state", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--global-repeats", type=int, default=2, help="rounds for dwconv_global (0: skip it)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: perf_counter; cpu: process CPU time, robust to other jobs on a shared "
                             "machine but only meaningful with --threads 1")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and few rounds")
    parser.add_argument("--out", default="bench_nd.json")
    args = parser.parse_args()
    if args.quick:
        args.shapes, args.rounds, args.global_repeats = ["2,8,12,12"], 3, 1

    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu counts the CPU time of every thread; use it with --threads 1")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes]
    load_before = os.getloadavg()
    results = []
    with tqdm(total=0, desc="bench_nd", unit="step") as bar:
        for shape in shapes:
            methods = build_methods(shape, args)
            slow = {"dwconv_global": args.global_repeats}
            bar.total += len(methods) + sum(slow.get(n, args.rounds) for n in methods)
            bar.refresh()
            samples = time_methods(methods, args.rounds, slow, bar, clock)
            base = statistics.median(samples["dwconv7x7"])
            auto = choose_separable_path(shape[2:], [2 * s - 1 for s in shape[2:]])
            for name, times in samples.items():
                med = statistics.median(times)
                results.append(dict(
                    shape=list(shape), method=name, median_ms=med, min_ms=min(times), rounds=len(times),
                    ratio_to_dwconv7x7=med / base, auto_path=auto if name.startswith("s4nd") else None,
                ))
    load_after = os.getloadavg()

    print(f"\ntorch {torch.__version__}, {args.threads} threads, {args.clock} clock, load average {load_before[0]:.1f} -> {load_after[0]:.1f}")
    print(f"{'shape':<18}{'method':<28}{'median ms':>10}{'min ms':>10}{'vs 7x7':>8}")
    for row in results:
        shape = "x".join(str(s) for s in row["shape"])
        print(f"{shape:<18}{row['method']:<28}{row['median_ms']:>10.1f}{row['min_ms']:>10.1f}{row['ratio_to_dwconv7x7']:>8.2f}")
    for shape in shapes:
        auto = choose_separable_path(shape[2:], [2 * s - 1 for s in shape[2:]])
        print(f"auto path for {shape}: {auto}")

    report = dict(
        benchmark="bench_nd",
        timed="forward + backward; S4ND rows: kernel generation + separable conv + D skip (activation=None, out_proj=None)",
        machine=dict(platform=platform.platform(), processor=platform.processor(), cpu_count=os.cpu_count(),
                     threads=args.threads, clock=args.clock, torch=torch.__version__, load_average=[load_before, load_after]),
        args=vars(args),
        results=results,
    )
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
