"""Benchmark ``linear_scan`` backends against each other and ``torch``'s associative_scan.

For each dtype and sequence length L, with ``--rows`` independent rows (batch x channels):

- ``loop``: the reference Python loop. It costs the same per step at every L, so for L above
  ``--loop-steps`` it is timed on the first ``--loop-steps`` steps and scaled by L / steps (the
  table marks these rows "extrapolated").
- ``torch``: the chunked PyTorch backend.
- ``assoc_scan``: ``torch._higher_order_ops.associative_scan`` on ``(a, b)`` pairs, eagerly, and
  ``assoc_scan+compile`` under ``torch.compile`` (compile time reported separately) unless
  ``--no-compile``. Skipped when this torch lacks it; failures are reported, not hidden.
- ``triton``: the Triton kernel, CUDA only.
- ``b.clone()``: allocating and writing an output of b's size, the floor under any out-of-place
  scan (on some VMs the page faults of a fresh allocation are most of it).

Reported: time, elements per second, speed-up over the loop, and the effective bandwidth
(bytes of a and b read plus h written, divided by time) with, on a GPU, its fraction of the
device's peak memory bandwidth (``--peak-gbs``, else looked up from the device name).

    python tools/bench_scan.py                         # CPU: loop, torch, assoc_scan
    python tools/bench_scan.py --device cuda --no-compile
    python tools/bench_scan.py --lengths 1024 4096 --dtypes float32 --a-kinds const --out bench_scan_small.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Callable, Optional

import torch
from tqdm import tqdm

from s4vision.ops import linear_scan

# Peak memory bandwidth in GB/s of common GPUs, matched against torch.cuda.get_device_name().
# More specific names first.
GPU_PEAK_GBS = [
    ("H200", 4800.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),
    ("GH200", 4000.0),
    ("B200", 8000.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),
    ("L40S", 864.0),
    ("L40", 864.0),
    ("L4", 300.0),
    ("A10G", 600.0),
    ("A10", 600.0),
    ("V100", 900.0),
    ("T4", 320.0),
    ("RTX 4090", 1008.0),
    ("RTX 3090", 936.0),
    ("RTX A6000", 768.0),
]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "complex64": torch.complex64}


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1024, help="independent rows (batch x channels)")
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    p.add_argument("--dtypes", nargs="+", default=["float32", "complex64"], choices=sorted(DTYPES))
    p.add_argument("--a-kinds", nargs="+", choices=["full", "const"], default=["full", "const"],
                   help="a of shape (rows, L), and/or (rows, 1): constant in time, as in S4 streaming")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=7, help="timed runs per measurement (median reported)")
    p.add_argument("--loop-steps", type=int, default=4096, help="longest sequence the loop is timed on")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile of associative_scan")
    p.add_argument("--peak-gbs", type=float, default=None, help="device memory bandwidth in GB/s")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="cpu: this process's CPU time (with --threads 1, what an idle machine's wall clock "
                        "would show; robust when other jobs share the cores). CPU device only")
    p.add_argument("--out", default="bench_scan.json", help="JSON results path")
    p.add_argument("--plot", default="bench_scan.png", help="PNG of time against L ('' to skip)")
    return p.parse_args(argv)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCK = time.perf_counter


def time_call(fn: Callable[[], object], device: torch.device, repeats: int, budget_s: float = 10.0) -> float:
    """Median seconds per call after one warm-up call; slow calls get fewer repeats."""
    start = CLOCK()
    fn()
    synchronize(device)
    warm_up = CLOCK() - start
    times = []
    for _ in range(max(1, min(repeats, int(budget_s / max(warm_up, 1e-9))))):
        start = CLOCK()
        fn()
        synchronize(device)
        times.append(CLOCK() - start)
    return statistics.median(times)


def _combine(x, y):
    a1, b1 = x
    a2, b2 = y
    return a1 * a2, a2 * b1 + b2


def associative_scan_fn(device: torch.device, compiled: bool) -> Optional[Callable]:
    try:
        from torch._higher_order_ops.associative_scan import associative_scan
    except ImportError:
        return None
    # "pointwise" lowers to a Triton scan on CUDA; the CPU backend only supports "generic".
    mode = "pointwise" if device.type == "cuda" else "generic"

    def scan(a, b):
        return associative_scan(_combine, (a, b), dim=-1, combine_mode=mode)[1]

    return torch.compile(scan, dynamic=False) if compiled else scan


def make_inputs(rows: int, length: int, dtype: torch.dtype, a_kind: str, device: torch.device):
    a_len = length if a_kind == "full" else 1
    a = 0.5 + 0.49 * torch.rand(rows, a_len, device=device)
    b = torch.randn(rows, length, device=device)
    if dtype.is_complex:
        a = a * torch.exp(1j * torch.rand(rows, a_len, device=device))
        b = b + 1j * torch.randn(rows, length, device=device)
    return a.to(dtype), b.to(dtype)


def peak_bandwidth(device: torch.device, override: Optional[float]) -> Optional[float]:
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((gbs for key, gbs in GPU_PEAK_GBS if key in name), None)


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def bench_one(method: str, a: torch.Tensor, b: torch.Tensor, args, device) -> dict:
    rows, length = b.shape
    record = {"method": method, "note": ""}
    if method == "loop":
        steps = min(length, args.loop_steps)
        seconds = time_call(lambda: linear_scan(a[:, :steps] if a.shape[-1] > 1 else a, b[:, :steps], backend="loop"),
                            device, max(1, args.repeats // 3))
        if steps < length:
            seconds *= length / steps
            record["note"] = f"extrapolated from {steps} steps"
    elif method == "b.clone()":
        seconds = time_call(b.clone, device, args.repeats)
    elif method in ("torch", "triton"):
        seconds = time_call(lambda: linear_scan(a, b, backend=method), device, args.repeats)
    else:  # assoc_scan, assoc_scan+compile
        compiled = method.endswith("compile")
        fn = associative_scan_fn(device, compiled)
        if fn is None:
            return {**record, "seconds": None, "note": "not available in this torch"}
        a_full = a.expand(rows, length)
        try:
            start = CLOCK()
            fn(a_full, b)
            synchronize(device)
            first = CLOCK() - start
            seconds = time_call(lambda: fn(a_full, b), device, args.repeats)
        except Exception as exc:  # report why it is unusable rather than hide it
            return {**record, "seconds": None, "note": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}
        if compiled:
            record["note"] = f"first call (compile) {first:.1f} s"
    record["seconds"] = seconds
    return record


def print_table(results: list[dict], args, device: torch.device) -> None:
    """One line per measurement; adds ``speedup_vs_loop`` to each record."""
    loop_time = {(r["a_kind"], r["dtype"], r["length"]): r["seconds"] for r in results if r["method"] == "loop"}
    header = (f"{'a':<6} {'dtype':<10} {'L':>6} {'method':<19} {'time ms':>10} {'Melem/s':>9} {'vs loop':>8} "
              f"{'GB/s':>7} {'of peak':>8}  note")
    print(f"\nlinear_scan, {args.rows} rows, {args.clock} clock, device: {machine_description(device)}")
    print(header)
    print("-" * len(header))
    for r in results:
        lead = f"{r['a_kind']:<6} {r['dtype']:<10} {r['length']:>6} {r['method']:<19}"
        if r["seconds"] is None:
            print(f"{lead} {'-':>10} {'-':>9} {'-':>8} {'-':>7} {'-':>8}  {r['note']}")
            continue
        loop = loop_time.get((r["a_kind"], r["dtype"], r["length"]))
        r["speedup_vs_loop"] = loop / r["seconds"] if loop else None
        speedup = f"{r['speedup_vs_loop']:.1f}x" if loop else "-"
        fraction = f"{100 * r['peak_fraction']:.1f}%" if r.get("peak_fraction") else "-"
        print(f"{lead} {1e3 * r['seconds']:>10.2f} {r['elements_per_s'] / 1e6:>9.1f} {speedup:>8} "
              f"{r['gb_per_s']:>7.2f} {fraction:>8}  {r['note']}")


def plot(results: list[dict], path: str) -> None:
    """Time against L, one panel per (a kind, dtype), one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["a_kind"], r["dtype"]) for r in results})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, (a_kind, dtype) in zip(axes[0], panels):
        rows = [r for r in results if (r["a_kind"], r["dtype"]) == (a_kind, dtype) and r["seconds"]]
        for method in dict.fromkeys(r["method"] for r in rows):
            points = [(r["length"], 1e3 * r["seconds"]) for r in rows if r["method"] == method]
            ax.plot(*zip(*points), marker="o", label=method)
        ax.set(xscale="log", yscale="log", xlabel="L", ylabel="ms", title=f"a {a_kind}, {dtype}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.clock == "cpu":
        if device.type != "cpu":
            raise SystemExit("--clock cpu measures CPU time and only makes sense with --device cpu")
        global CLOCK
        CLOCK = time.process_time
    peak = peak_bandwidth(device, args.peak_gbs)
    methods = ["loop", "b.clone()", "torch", "assoc_scan"] + ([] if args.no_compile else ["assoc_scan+compile"])
    if device.type == "cuda":
        methods.append("triton")

    results = []
    jobs = [(k, d, L, m) for k in args.a_kinds for d in args.dtypes for L in args.lengths for m in methods]
    inputs = {}
    for a_kind, dtype_name, length, method in tqdm(jobs, desc="bench_scan", unit="run"):
        key = (a_kind, dtype_name, length)
        if key not in inputs:
            inputs.clear()
            inputs[key] = make_inputs(args.rows, length, DTYPES[dtype_name], a_kind, device)
        a, b = inputs[key]
        record = bench_one(method, a, b, args, device)
        record.update(dtype=dtype_name, length=length, rows=args.rows, a_kind=a_kind)
        if record["seconds"]:
            elements = args.rows * length
            moved = a.numel() * a.element_size() + 2 * b.numel() * b.element_size()  # read a, b; write h
            record["elements_per_s"] = elements / record["seconds"]
            record["gb_per_s"] = moved / record["seconds"] / 1e9
            record["peak_fraction"] = record["gb_per_s"] / peak if peak else None
        results.append(record)

    print_table(results, args, device)
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")

    meta = {
        "device": machine_description(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "peak_gbs": peak,
        "args": vars(args),
    }
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
