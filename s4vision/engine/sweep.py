"""Resolution sweeps: train models at several resolutions and seeds, test each at several resolutions.

A sweep trains every entry (a config, or a model name on a base config) at every training
resolution with every seed, through the engine's :class:`~s4vision.engine.train.Trainer`, then
evaluates each trained model on a split (``test`` by default) at every test resolution, in up to
three ways (``variants``):

- ``native``: the test image at the test resolution, as it comes (zero-shot resolution change);
- ``resize``: the test image resized back to the training resolution before the model sees it
  (test-time resizing, the simplest thing a user can do instead);
- ``flexi``: ViTs only (models with a timm ``patch_embed``): the patch embedding resampled to
  ``patch * test / train`` pixels (timm's ``resample_patch_embed``, as in FlexiViT), so the model
  sees the token grid it was trained on; ``None`` where that is not a whole number of pixels.

A resolution a model cannot take (below its ``min_input_size``) is recorded as ``None``.

Layout of ``output_dir``::

    <label>/<train>px_seed<seed>/       a training run (see train.py) plus sweep_eval.json, the
                                        evaluations done so far (so a resumed sweep skips them)
    sweep.json                          every run, and mean +- std over seeds (:func:`load_sweep`)
    sweep.png                           accuracy against test resolution (:func:`plot_sweep`)

With ``resume``, finished runs are not retrained, evaluations already done are not redone, and
interrupted trainings continue from their last checkpoint: a sweep killed at any point and
started again with ``resume=True`` ends as if it had never stopped.
"""
from __future__ import annotations

import copy
import csv
import json
import math
import multiprocessing
import os
import platform
import shlex
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml

from .._checks import check_choice, check_positive_int
from .._io import atomic_write_json
from ..data.images import SubsetImageDataset, create_image_dataset
from ..errors import InvalidValueError
from .checkpoint import MODEL_FILE
from .config import load_config
from .distributed import resolve_device
from .evaluate import evaluate_resolutions, load_checkpoint_model
from .report import format_table
from .train import train

__all__ = ["VARIANTS", "SweepEntry", "entries_for_models", "entries_for_configs", "run_sweep", "summarize_runs",
           "load_sweep", "sweep_tables", "plot_sweep"]

VARIANTS = ("native", "resize", "flexi")
EVAL_CACHE = "sweep_eval.json"


@dataclass(frozen=True)
class SweepEntry:
    """One model of a sweep: its ``label``, the config it starts from (a file or a name in
    ``configs/``; ``None``: the defaults), the overrides that make it (``model.name=...``) and
    the training resolutions it is trained at (empty: every one of the sweep)."""

    label: str
    config: str | None = None
    overrides: tuple[str, ...] = ()
    train_resolutions: tuple[int, ...] = ()


def entries_for_models(models: Sequence[str], config: str | Path | None = None) -> list[SweepEntry]:
    """One entry per timm model name, each ``config`` with ``model.name`` set."""
    return [SweepEntry(name, None if config is None else str(config), (f"model.name={name}",)) for name in models]


def entries_for_configs(configs: Sequence[str | Path]) -> list[SweepEntry]:
    """One entry per config, labelled by its name without the dataset prefix
    (``mnist5k_vit_micro`` -> ``vit_micro``)."""
    entries = []
    for config in configs:
        stem, dataset = Path(str(config)).stem, load_config(config).data.dataset
        label = stem[len(dataset) + 1:] if stem.startswith(f"{dataset}_") else stem
        entries.append(SweepEntry(label, str(config)))
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        raise InvalidValueError(f"two configs of the sweep have the same label: {labels}")
    return entries


@dataclass(frozen=True)
class _Run:
    """One training of the sweep and what to evaluate it on."""

    label: str
    train_resolution: int
    seed: int
    run_dir: str
    config: str | None
    overrides: tuple[str, ...]
    test_resolutions: tuple[int, ...]
    variants: tuple[str, ...]
    split: str
    resume: bool

    @property
    def command(self) -> str:
        """The command line that trains this run alone."""
        return shlex.join(["s4vision", "train", self.config or "<defaults>", *self.overrides])


def run_sweep(entries: Sequence[SweepEntry], train_resolutions: Sequence[int], test_resolutions: Sequence[int], *,
              seeds: Sequence[int] = (0,), variants: Sequence[str] = ("native",), split: str = "test",
              overrides: Sequence[str] = (), output_dir: str | Path = "outputs/sweep", resume: bool = False,
              jobs: int = 1) -> dict[str, Any]:
    """Train every entry at every training resolution with every seed; evaluate each on ``split``.

    ``overrides`` apply to every run (after the entry's own). ``jobs`` runs train side by side in
    separate processes (on a CPU, each with ``cores // jobs`` threads unless ``train.threads`` is
    overridden). Returns, and writes to ``output_dir/sweep.json`` after every finished run, the
    summary: ``runs`` (one record per training: accuracies per variant and test resolution,
    training seconds, validation accuracy, the command that reproduces it) and ``results``
    ``{label: {train_res: {variant: {test_res: {"mean", "std", "n"}}}}}`` (std over seeds, ddof 1).
    """
    if not entries or not train_resolutions or not test_resolutions or not seeds:
        raise InvalidValueError("a sweep needs at least one model, one training and one test resolution, and a seed")
    for variant in variants:
        check_choice("variant", variant, VARIANTS)
    check_positive_int("jobs", jobs)
    output_dir = Path(output_dir)
    cores = os.cpu_count() or 1
    threads = max(1, cores // jobs)
    runs = []
    for train_res in train_resolutions:  # every seed of a model before the next: a partial sweep has whole cells
        for entry in entries:
            for seed in seeds:
                if entry.train_resolutions and train_res not in entry.train_resolutions:
                    continue
                run_dir = output_dir / entry.label / f"{train_res}px_seed{seed}"
                run_overrides = (f"data.resolution={train_res}", "train.progressive=[]", f"train.threads={threads}",
                                 *entry.overrides, *overrides, f"train.seed={seed}", f"train.output_dir={run_dir}",
                                 "eval.resolutions=[]")
                runs.append(_Run(entry.label, int(train_res), int(seed), str(run_dir), entry.config, run_overrides,
                                 tuple(test_resolutions), tuple(variants), split, resume))
    configs = [load_config(run.config, run.overrides) for run in runs]  # every config error before anything trains
    threads = configs[0].train.threads or threads  # train.threads=N given among the overrides
    for run in runs:
        if not resume and Path(run.run_dir).exists() and any(Path(run.run_dir).iterdir()):
            raise InvalidValueError(f"{run.run_dir} already holds a run; pass --resume (resume=True) to reuse "
                                    "finished runs and continue interrupted ones, or choose another output directory")
    meta = {
        "entries": [asdict(e) for e in entries], "train_resolutions": [int(r) for r in train_resolutions],
        "test_resolutions": [int(r) for r in test_resolutions], "seeds": [int(s) for s in seeds],
        "variants": list(variants), "split": split, "overrides": list(overrides),
        "native_size": _native_size(runs[0]),
        "machine": f"{platform.machine()}, {cores} cores, {jobs} job(s) x {threads} thread(s)"
                   + (", CUDA" if torch.cuda.is_available() else ", CPU"),
        "torch": str(torch.__version__),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    records: dict[int, dict[str, Any]] = {}

    def finished(index: int, record: dict[str, Any]) -> None:
        records[index] = record
        done = [records[i] for i in sorted(records)]
        atomic_write_json(output_dir / "sweep.json", {**meta, "complete": len(done) == len(runs), "runs": done,
                                                      **summarize_runs(done)}, indent=2)

    if jobs == 1:
        for index, run in enumerate(runs):
            finished(index, _run_one(run, None))
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_run_one, run, index % jobs): index for index, run in enumerate(runs)}
            for future in as_completed(futures):
                finished(futures[future], future.result())
    summary = load_sweep(output_dir / "sweep.json")
    plot_sweep(summary, output_dir / "sweep.png")
    return summary


def _native_size(run: _Run) -> int | None:
    """Side of the dataset's own images (test images larger than that are upsampled)."""
    cfg = load_config(run.config, run.overrides)
    images = getattr(create_image_dataset(cfg.data.dataset, run.split, root=cfg.data.root), "images", None)
    return int(images.shape[-1]) if images is not None else None


# -- one run (in a worker process when jobs > 1) ---------------------------------------------------

def _run_one(run: _Run, position: int | None) -> dict[str, Any]:
    cfg = load_config(run.config, run.overrides)
    run_dir = Path(run.run_dir)
    cpu_seconds = None
    if not (run_dir / MODEL_FILE).is_file():
        interrupted = (run_dir / "checkpoints").is_dir()
        started = time.process_time()
        train(cfg, resume=run.resume, progress_position=position)
        cpu_seconds = None if interrupted else round(time.process_time() - started, 1)
    cache_path = run_dir / EVAL_CACHE
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    if cpu_seconds is not None:
        cache["cpu_seconds"] = cpu_seconds
    evaluations = cache.setdefault("evaluations", {}).setdefault(run.split, {})
    model, info = load_checkpoint_model(run_dir, device=resolve_device(cfg.train.device))
    data = None
    for variant in run.variants:
        if variant == "flexi" and not _has_patch_embed(model):
            continue
        done = evaluations.setdefault(variant, {})
        for res in run.test_resolutions:
            if str(res) in done:
                continue
            if data is None:
                data = create_image_dataset(info["dataset"], run.split, root=cfg.data.root, in_chans=info["in_chans"])
                if cfg.data.eval_limit is not None:
                    data = SubsetImageDataset(data, cfg.data.eval_limit)
            top1 = _evaluate_variant(model, data, variant, res, run.train_resolution, cfg)
            done[str(res)] = None if top1 is None else round(top1, 2)
            atomic_write_json(cache_path, cache, indent=2)  # each evaluation is kept at once
    atomic_write_json(cache_path, cache, indent=2)
    sidecar = yaml.safe_load((run_dir / MODEL_FILE).with_suffix(".yaml").read_text())
    return {
        "label": run.label, "train_resolution": run.train_resolution, "seed": run.seed, "run_dir": run.run_dir,
        "command": run.command, "params": sum(p.numel() for p in model.parameters()),
        "epochs": sidecar["epochs"], "steps": sidecar["steps"],
        "train_seconds": round(_training_seconds(run_dir), 1), "cpu_seconds": cache.get("cpu_seconds"),
        "eval_split": cfg.data.eval_split, "val_top1": sidecar.get("held_out_top1"),
        "top1": {variant: {int(res): top1 for res, top1 in by_res.items() if int(res) in run.test_resolutions}
                 for variant, by_res in evaluations.items() if variant in run.variants},
    }


def _training_seconds(run_dir: Path) -> float:
    """Wall seconds of the training epochs, as the engine logged them (evaluations excluded)."""
    with open(run_dir / "log.csv", newline="") as f:
        return sum(float(row["seconds"]) for row in csv.DictReader(f))


def _has_patch_embed(model: torch.nn.Module) -> bool:
    return hasattr(getattr(model, "patch_embed", None), "patch_size") and hasattr(model, "set_input_size")


def _evaluate_variant(model: torch.nn.Module, data, variant: str, res: int, train_res: int, cfg) -> float | None:
    """Top-1 % of ``model`` on ``data`` at ``res`` under ``variant``; ``None`` where it cannot run."""
    resize_to = None
    if variant == "resize" and res != train_res:
        resize_to = train_res
    elif variant == "flexi" and res != train_res:
        model = _flexi_model(model, res, train_res)
        if model is None:
            return None
    try:
        result = evaluate_resolutions(model, data, [res], device=resolve_device(cfg.train.device),
                                      batch_size=cfg.data.eval_batch_size, interpolation=cfg.data.interpolation,
                                      resize_to=resize_to)
    except InvalidValueError:  # below the model's minimum input size
        return None
    return result[res].top1


def _flexi_model(model: torch.nn.Module, res: int, train_res: int) -> torch.nn.Module | None:
    """A copy of a timm ViT whose patch embedding is resampled to ``patch * res / train_res``
    pixels (FlexiViT's PI-resize), so that ``res`` images give the training token grid."""
    patch = model.patch_embed.patch_size
    scaled = [p * res / train_res for p in patch]
    if any(s < 1 or not float(s).is_integer() for s in scaled):
        return None
    flexi = copy.deepcopy(model)
    flexi.set_input_size(img_size=(res, res), patch_size=tuple(int(s) for s in scaled))
    return flexi


# -- summaries ------------------------------------------------------------------------------------

def _stats(values: Sequence[float | None]) -> dict[str, Any] | None:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of the values that exist."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": round(mean, 2), "std": round(std, 2), "n": len(values)}


def summarize_runs(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over seeds: ``results`` (top-1 per label, training resolution, variant and test
    resolution) and ``timing`` (training wall and CPU seconds, validation top-1, per label and
    training resolution)."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["label"], int(record["train_resolution"])), []).append(record)
    results: dict[str, Any] = {}
    timing: dict[str, Any] = {}
    for (label, train_res), group in groups.items():
        variants = {v for r in group for v in r["top1"]}
        results.setdefault(label, {})[train_res] = {
            variant: {int(res): _stats([r["top1"].get(variant, {}).get(res) for r in group])
                      for res in sorted({int(k) for r in group for k in r["top1"].get(variant, {})})}
            for variant in [v for v in VARIANTS if v in variants]
        }
        timing.setdefault(label, {})[train_res] = {
            key: _stats([r.get(key) for r in group]) for key in ("train_seconds", "cpu_seconds", "val_top1")
        }
        timing[label][train_res]["params"] = group[0]["params"]
    return {"results": results, "timing": timing}


def load_sweep(path: str | Path) -> dict[str, Any]:
    """A ``sweep.json`` with its resolution keys turned back into integers."""
    summary = json.loads(Path(path).read_text())
    for record in summary["runs"]:
        record["top1"] = {v: {int(r): a for r, a in by.items()} for v, by in record["top1"].items()}
    summary.update(summarize_runs(summary["runs"]))
    return summary


def _cell(stats: dict[str, Any] | None, digits: int = 1, seeds: int = 1) -> str | None:
    """``mean ± std``, with ``(n=k)`` where fewer than ``seeds`` runs are in (a sweep cut short)."""
    if stats is None:
        return None
    text = f"{stats['mean']:.{digits}f}" if stats["n"] == 1 else f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"
    return text + (f" (n={stats['n']})" if stats["n"] < seeds else "")


def sweep_tables(summary: dict[str, Any], markdown: bool = False) -> str:
    """One accuracy table per training resolution (rows: model and variant, columns: test
    resolution; mean ± std over seeds, ``-`` where the model cannot run), then the training times."""
    tests = summary["test_resolutions"]
    native = summary.get("native_size")
    upsampled = [te for te in tests if native and te > native]
    seeds = len(summary.get("seeds", [])) or 1
    blocks = []
    for train_res in summary["train_resolutions"]:
        rows = []
        for label, by_train in summary["results"].items():
            for variant, by_test in by_train.get(train_res, {}).items():
                name = label if variant == "native" else f"{label} + {variant}"
                rows.append([name, *(_cell(by_test.get(te), seeds=seeds) for te in tests)])
        if not rows:
            continue
        headers = [f"trained at {train_res}px", *(f"{te}px" + ("*" if te in upsampled else "")
                                                  + (" (train)" if te == train_res else "") for te in tests)]
        blocks.append(format_table(headers, rows, markdown=markdown))
    note = f"{summary['split']} top-1 %, mean ± std over {seeds} seed(s)" if seeds > 1 else f"{summary['split']} top-1 %"
    if upsampled:
        note += f"; * the {native}px images upsampled (the data holds no finer detail)"
    time_rows = [[label, f"{train_res}px", timing.get("params"), _cell(timing["train_seconds"], 0, seeds),
                  _cell(timing["cpu_seconds"], 0, seeds), _cell(timing["val_top1"], 2, seeds)]
                 for label, by_train in summary["timing"].items() for train_res, timing in by_train.items()]
    blocks.append(format_table(["model", "trained at", "params", "train wall s", "train+val CPU s",
                                "val top-1 % (train res)"], time_rows, markdown=markdown))
    return "\n\n".join(blocks) + f"\n\n{note}"


def plot_sweep(summary: dict[str, Any], path: str | Path) -> Path:
    """Accuracy against test resolution, one panel per training resolution: one colour per model,
    solid as it comes, dashed with test-time resizing, dotted with FlexiViT patch resampling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trains = summary["train_resolutions"]
    tests = summary["test_resolutions"]
    fig, axes = plt.subplots(1, len(trains), figsize=(5.5 * len(trains), 4.5), dpi=120, squeeze=False)
    colours = {label: f"C{i}" for i, label in enumerate(summary["results"])}
    styles = {"native": "-", "resize": "--", "flexi": ":"}
    native = summary.get("native_size")
    for ax, train_res in zip(axes[0], trains):
        for label, by_train in summary["results"].items():
            for variant, by_test in by_train.get(train_res, {}).items():
                points = [(te, s) for te, s in sorted(by_test.items()) if s is not None]
                if not points:
                    continue
                ax.errorbar([te for te, _ in points], [s["mean"] for _, s in points],
                            yerr=[s["std"] for _, s in points], color=colours[label], linestyle=styles[variant],
                            marker="o", markersize=3, capsize=2,
                            label=label if variant == "native" else f"{label} + {variant}")
        ax.axvline(train_res, color="grey", linestyle=":", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(tests, [f"{te}" + ("*" if native and te > native else "") for te in tests])
        ax.set_ylim(0, 100)
        ax.set_xlabel("test resolution (px)" + (f"; * upsampled from {native}px" if native and max(tests) > native
                                                 else ""))
        ax.set_ylabel(f"{summary['split']} top-1 (%)")
        ax.set_title(f"trained at {train_res}x{train_res}")
        ax.grid(True, alpha=0.3)
    legend = {}  # every model and variant of every panel, once (a panel may lack some)
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
