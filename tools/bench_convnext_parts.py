"""Where S4ND-ConvNeXt inference spends its time, part by part, next to timm's ConvNeXt.

For each S4ND-ConvNeXt and the timm ConvNeXt of the same size, in one run: the stem, each
downsampling layer, the token mixer of one block per stage (S4ND against timm's 7x7 depthwise
convolution) and the whole forward pass, each fed the activation it sees in the model (batch
``--batch``, eval, ``torch.no_grad``). Every part is timed under every clock of ``--clocks``
(two-thread wall clock and one-thread CPU time by default, ``tools/_bench_clocks.py``), the
median of ``--rounds`` repetitions, rounds interleaved over parts, models and clocks. Part times
do not add up to the forward pass: the blocks' LayerNorm and MLP (the same in both models) are
left out, and a part timed on its own runs with warm caches.

``--kernel-generation`` also times, per S4ND layer of the S4ND models, what a training step
spends making its kernels: the per-axis kernels from the SSM parameters and their Toeplitz
matrices (as the layer forms them), forward and backward.

    python tools/bench_convnext_parts.py                  # ~1 minute on a 2-core CPU
    python tools/bench_convnext_parts.py --models s4nd_convnext_tiny --rounds 25
    python tools/bench_convnext_parts.py --kernel-generation --rounds 5
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import timm
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_clocks import DEFAULT_CLOCKS, machine_info, parse_clocks, side_by_side  # noqa: E402

import s4vision  # noqa: E402,F401  (registers the s4vision models)
from s4vision.layers import S4ND  # noqa: E402
from s4vision.ops import toeplitz_matrix  # noqa: E402

PAIRS = {"s4nd_convnext_atto": "convnext_atto", "s4nd_convnext_tiny": "convnext_tiny"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15, help="timed repetitions per part and clock (median kept)")
    p.add_argument("--clocks", nargs="+", default=list(DEFAULT_CLOCKS))
    p.add_argument("--kernel-generation", action="store_true",
                   help="also time each S4ND layer's kernel and matrix generation, forward + backward")
    p.add_argument("--out", default="bench_convnext_parts.json")
    return p.parse_args(argv)


def stage_inputs(model: torch.nn.Module, x: torch.Tensor) -> List[torch.Tensor]:
    """The input of each stage of a ConvNeXt (either family) for the image batch ``x``."""
    seen: Dict[int, torch.Tensor] = {}
    hooks = [stage.register_forward_pre_hook(lambda _m, args, i=i: seen.__setitem__(i, args[0]))
             for i, stage in enumerate(model.stages)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return [seen[i] for i in range(len(model.stages))]


def parts(model: torch.nn.Module, x: torch.Tensor) -> Dict[str, Tuple[Callable, torch.Tensor]]:
    """Named ``(module, input)`` pairs: stem, downsampling layers, one mixer per stage, model."""
    inputs = stage_inputs(model, x)
    named: Dict[str, Tuple[Callable, torch.Tensor]] = {"stem": (model.stem, x)}
    for i, stage in enumerate(model.stages):
        if i:
            named[f"downsample {i}"] = (stage.downsample, inputs[i])
        block = stage.blocks[0]
        with torch.no_grad():
            block_input = stage.downsample(inputs[i])
        named[f"mixer {i}"] = (block.mixer if hasattr(block, "mixer") else block.conv_dw, block_input)
    named["forward"] = (model, x)
    return named


def kernel_generation_steps(model: torch.nn.Module, x: torch.Tensor) -> Dict[str, Callable[[], None]]:
    """Per S4ND layer (by name), a call that makes its kernels and Toeplitz matrices for the input
    size it sees in the model and backpropagates through them, as a training step does."""
    seen: Dict[str, Tuple[int, ...]] = {}
    layers = {n: m for n, m in model.named_modules() if isinstance(m, S4ND)}
    hooks = [m.register_forward_pre_hook(lambda _m, args, n=n: seen.__setitem__(n, tuple(args[0].shape[2:])))
             for n, m in layers.items()]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    model.train()

    def step(layer: S4ND, sizes: Tuple[int, ...]) -> None:
        stride = layer.stride or (1,) * layer.ndim
        matrices = [toeplitz_matrix(k, L, s) for k, L, s in zip(layer.kernel_factors(sizes), sizes, stride)]
        sum(m.sum() for m in matrices).backward()

    return {n: (lambda layer=layers[n], sizes=seen[n]: step(layer, sizes)) for n in layers}


def time_kernel_generation(args, clocks, x: torch.Tensor) -> List[dict]:
    rows = []
    for name in args.models:
        steps = kernel_generation_steps(timm.create_model(name), x)
        times: Dict[Tuple[str, str], List[float]] = {}
        for fn in steps.values():  # warm-up
            for clock in clocks:
                clock.time(fn)
        for _ in tqdm(range(args.rounds), desc=f"kernel generation, {name}", unit="round"):
            for layer, fn in steps.items():
                for clock in clocks:
                    times.setdefault((layer, clock.name), []).append(clock.time(fn))
        for (layer, clock_name), values in times.items():
            rows.append(dict(model=name, layer=layer, clock=clock_name, ms=statistics.median(values) * 1e3))
    return rows


def main(argv=None) -> dict:
    args = parse_args(argv)
    clocks = parse_clocks(args.clocks)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.resolution, args.resolution)
    table: Dict[str, Dict[str, Tuple[Callable, torch.Tensor]]] = {}
    for name in args.models:
        for model_name in (name, PAIRS[name]):
            table[model_name] = parts(timm.create_model(model_name).eval(), x)
    times: Dict[Tuple[str, str, str], List[float]] = {}
    steps = sum(len(p) for p in table.values()) * len(clocks) * args.rounds
    with torch.no_grad(), tqdm(total=steps, desc="bench_convnext_parts", unit="call") as bar:
        for model_name, named in table.items():  # warm-up: eval kernel caches, allocator, thread pools
            for module, inp in named.values():
                for clock in clocks:
                    clock.time(lambda: module(inp))
        for _ in range(args.rounds):
            for model_name, named in table.items():
                for part, (module, inp) in named.items():
                    for clock in clocks:
                        times.setdefault((model_name, part, clock.name), []).append(clock.time(lambda: module(inp)))
                        bar.update(1)
    rows = []
    for name in args.models:
        for part in table[name]:
            for clock in clocks:
                ours = statistics.median(times[(name, part, clock.name)]) * 1e3
                theirs = statistics.median(times[(PAIRS[name], part, clock.name)]) * 1e3
                rows.append(dict(model=name, baseline=PAIRS[name], part=part, clock=clock.name,
                                 ms=ours, baseline_ms=theirs, ratio=ours / theirs))
    left = [f"{r['model']:<20}{r['part']:<14}" for r in rows if r["clock"] == clocks[0].name]
    by_key = {(r["model"], r["part"], r["clock"]): r for r in rows}
    keys = [(r["model"], r["part"]) for r in rows if r["clock"] == clocks[0].name]

    def cell(i: int, clock) -> str:
        r = by_key[keys[i] + (clock.name,)]
        return f"{r['ms']:>9.2f}{r['baseline_ms']:>9.2f}{r['ratio']:>7.2f}"

    text = side_by_side(left, f"{'model':<20}{'part':<14}", clocks, f"{'ms':>9}{'timm ms':>9}{'x timm':>7}", cell)
    machine = machine_info(clocks)
    print(f"batch {args.batch}, {args.resolution} px, median of {args.rounds}; mixers: S4ND vs timm's 7x7 depthwise conv")
    print(text)
    result = dict(benchmark="bench_convnext_parts", machine=machine, timm=timm.__version__, batch=args.batch,
                  resolution=args.resolution, rounds=args.rounds, table=text, results=rows)
    if args.kernel_generation:
        generation = time_kernel_generation(args, clocks, x)
        print("kernel and matrix generation per S4ND layer, forward + backward (a training step's share), median ms")
        for name in args.models:
            for clock in clocks:
                mine = sorted((r for r in generation if r["model"] == name and r["clock"] == clock.name),
                              key=lambda r: -r["ms"])
                total = sum(r["ms"] for r in mine)
                print(f"{name} {clock.label}: {total:.1f} ms over {len(mine)} layers; largest "
                      + ", ".join(f"{r['layer']} {r['ms']:.2f}" for r in mine[:4]))
        result["kernel_generation"] = generation
    Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
