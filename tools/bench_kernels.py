"""Benchmark of the 1D kernel core: kernel generation and FFT vs direct convolution.

Kernel generation: the causal kernel of ``H`` SSMs for ``L`` taps, forward only, for S4D (ZOH),
S4-DPLR with ZOH (dense exponential and Krylov products) and S4-DPLR with the bilinear Cauchy
kernel; then the causal depthwise convolution with a full-length kernel, ``fft_conv`` next to
``F.conv1d`` (skipped above ``--direct-max-len``, where its quadratic cost takes minutes). Every
row is timed under every clock of ``--clocks`` (``tools/_bench_clocks.py``; default two-thread
wall clock and one-thread CPU time), medians of interleaved repeats. Prints a table, writes JSON.

    python tools/bench_kernels.py --out bench_kernels.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_clocks import DEFAULT_CLOCKS, Clock, machine_info, parse_clocks  # noqa: E402

from s4vision.kernels import ssm_kernel  # noqa: E402
from s4vision.ops import fft_conv  # noqa: E402

GENERATORS = {"s4d": dict(kernel="s4d"), "s4 zoh": dict(kernel="s4", disc="zoh"), "s4 bilinear": dict(kernel="s4")}


def median_times(fn: Callable[[], object], clocks: List[Clock], repeats: int) -> Dict[str, float]:
    """Median milliseconds per clock, the clocks interleaved repeat by repeat."""
    for clock in clocks:  # warm-up
        clock.time(fn)
    samples = {c.name: [] for c in clocks}
    for _ in range(repeats):
        for clock in clocks:
            samples[clock.name].append(1e3 * clock.time(fn))
    return {name: statistics.median(times) for name, times in samples.items()}


def main(argv=None) -> List[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--d-state", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--conv-channels", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--generators", nargs="+", default=list(GENERATORS), choices=list(GENERATORS))
    parser.add_argument("--clocks", nargs="+", default=list(DEFAULT_CLOCKS))
    parser.add_argument("--direct-max-len", type=int, default=16384,
                        help="skip F.conv1d above this length (quadratic cost)")
    parser.add_argument("--out", default="bench_kernels.json")
    args = parser.parse_args(argv)
    clocks = parse_clocks(args.clocks)

    rows = []
    with torch.no_grad():
        for name in args.generators:
            gen = ssm_kernel(d_model=args.d_model, d_state=args.d_state, **GENERATORS[name])
            for L in args.lengths:
                ms = median_times(lambda: gen(L, 1.0), clocks, args.repeats)
                rows.append(dict(bench=f"{name} kernel (H={args.d_model}, N={args.d_state})", L=L, ms=ms))
        H = args.conv_channels
        for L in args.lengths:
            u = torch.randn(args.batch, H, L)
            k = torch.randn(H, L) / L**0.5
            row = dict(bench=f"causal conv (B={args.batch}, H={H}, Lk=L)", L=L,
                       ms=median_times(lambda: fft_conv(u, k), clocks, args.repeats))
            if L <= args.direct_max_len:
                weight = k.flip(-1)[:, None]
                row["direct_ms"] = median_times(lambda: F.conv1d(F.pad(u, (L - 1, 0)), weight, groups=H), clocks, 1)
            rows.append(row)

    header = f"{'benchmark':<42} {'L':>7}" + "".join(f" | {c.name + ' ms':>11} {'conv1d ms':>11}" for c in clocks)
    print(header)
    for r in rows:
        line = f"{r['bench']:<42} {r['L']:>7}"
        for c in clocks:
            direct = f"{r['direct_ms'][c.name]:11.1f}" if "direct_ms" in r else f"{'-':>11}"
            line += f" | {r['ms'][c.name]:11.2f} {direct}"
        print(line)
    with open(args.out, "w") as f:
        json.dump(dict(machine=machine_info(clocks), args=vars(args), rows=rows), f, indent=2)
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
