"""Benchmark of the 1D kernel core: kernel generation and FFT vs direct convolution.

Prints a table and writes JSON. Times are medians over repeats, wall clock, one process.

    python tools/bench_kernels.py --out bench_kernels.json
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import torch.nn.functional as F

from s4vision.kernels import ssm_kernel
from s4vision.ops import fft_conv


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--d-state", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--conv-channels", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--direct-max-len", type=int, default=16384,
                        help="skip F.conv1d above this length (quadratic cost)")
    parser.add_argument("--out", default="bench_kernels.json")
    args = parser.parse_args()

    rows = []
    with torch.no_grad():
        for kind in ("s4d", "s4"):
            gen = ssm_kernel(kind, args.d_model, args.d_state)
            for L in args.lengths:
                t = median_time(lambda: gen._kernel(L, 1.0), args.repeats)
                rows.append(dict(bench=f"{kind} kernel (H={args.d_model}, N={args.d_state})", L=L, ms=1e3 * t))
        H = args.conv_channels
        for L in args.lengths:
            u = torch.randn(args.batch, H, L)
            k = torch.randn(H, L) / L**0.5
            t_fft = median_time(lambda: fft_conv(u, k), args.repeats)
            row = dict(bench=f"causal conv (B={args.batch}, H={H}, Lk=L)", L=L, ms=1e3 * t_fft)
            if L <= args.direct_max_len:
                weight = k.flip(-1)[:, None]
                t_direct = median_time(lambda: F.conv1d(F.pad(u, (L - 1, 0)), weight, groups=H), 1)
                row.update(direct_ms=1e3 * t_direct, speedup=t_direct / t_fft)
            rows.append(row)

    print(f"{'benchmark':<42} {'L':>7} {'ms':>10} {'conv1d ms':>11} {'speedup':>8}")
    for r in rows:
        direct = f"{r['direct_ms']:11.1f}" if "direct_ms" in r else f"{'skipped':>11}"
        speed = f"{r['speedup']:7.1f}x" if "speedup" in r else f"{'':>8}"
        print(f"{r['bench']:<42} {r['L']:>7} {r['ms']:10.2f} {direct} {speed}")
    meta = dict(machine=platform.processor() or platform.machine(), threads=torch.get_num_threads(),
                torch=torch.__version__)
    with open(args.out, "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
