"""Refresh the model zoo from a multi-seed sweep (see README.md#model-zoo).

Trains the zoo's models (``configs/mnist5k_<model>.yaml``) on the mnist5k ``train`` split at
14x14 with several seeds and evaluates each on the ``test`` split at every test resolution
(:func:`s4vision.engine.sweep.run_sweep`), or takes a finished sweep directory (``--from``, such
as the resolution study's). Then, for each model, copies the weights of its seed-0 run into
``model_zoo/<model>.mnist5k.safetensors`` and rewrites its entry in ``model_zoo/manifest.yaml``:
sha256, size, parameter count, that checkpoint's test top-1 at each resolution (what
``tests/models/test_zoo.py`` re-checks), the mean and standard deviation over the seeds, its
validation top-1, the config, the command that produced the sweep and the one that retrains the
checkpoint alone, the machine and the torch version. Entries of other files are kept.

    python tools/update_zoo.py --models s4nd_iso_micro conv2d_iso_micro ccnn_micro --seeds 3 --jobs 2 --out outputs/zoo
    python tools/update_zoo.py --from outputs/study/main --command "s4vision sweep --configs ... --out outputs/study/main"
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from s4vision._io import atomic_write_text
from s4vision.cli import run_reporting_errors
from s4vision.engine.sweep import entries_for_configs, load_sweep, run_sweep
from s4vision.errors import InvalidValueError, MissingFileError
from s4vision.models.zoo import MANIFEST, ZOO_DIR, load_manifest, sha256sum

TAG = "mnist5k"
TRAIN_RESOLUTION = 14
MODELS = ("s4nd_iso_micro", "conv2d_iso_micro", "ccnn_micro")
TEST_RESOLUTIONS = (7, 14, 28, 56)
HEADER = ("# Checkpoints we trained ourselves (see README.md#model-zoo). Each entry records the commands\n"
          "# that produced it, its own test top-1 accuracy (%) at each test resolution (56 px: the 28 px\n"
          "# digits upsampled) and the mean and std over the seeds of its sweep;\n"
          "# tests/models/test_zoo.py re-evaluates every file against its own numbers.\n")


def load_sweep_results(directory: str | Path) -> dict[str, Any]:
    """The ``sweep.json`` of a sweep directory (refusing smoke-test runs). The sweep may still be
    running: :func:`zoo_entries` needs only the 14 px runs of the zoo's models, every seed."""
    path = Path(directory) / "sweep.json"
    if not path.is_file():
        raise MissingFileError(f"no sweep results in {directory} (expected {path})")
    summary = load_sweep(path)
    for record in summary["runs"]:
        config = yaml.safe_load((Path(record["run_dir"]) / "config.yaml").read_text())
        if config["train"]["max_steps"] is not None:
            raise InvalidValueError(f"refusing to put smoke-test runs into the model zoo ({record['run_dir']} "
                                    f"stopped at train.max_steps={config['train']['max_steps']})")
    return summary


def zoo_entries(summary: dict[str, Any], command: str, models: Sequence[str] = MODELS) -> list[dict[str, Any]]:
    """Copy each model's seed-0 weights into the zoo; the manifest's entries with theirs replaced."""
    if summary["split"] != "test":
        raise InvalidValueError(f"the zoo records test-split accuracy; this sweep measured {summary['split']!r}")
    chosen = {}
    for name in models:  # every model checked before any file is replaced
        runs = sorted((r for r in summary["runs"] if r["label"] == name and r["train_resolution"] == TRAIN_RESOLUTION),
                      key=lambda r: r["seed"])
        if [r["seed"] for r in runs] != sorted(summary["seeds"]):
            raise InvalidValueError(f"the sweep has {name} runs trained at {TRAIN_RESOLUTION}px for seeds "
                                    f"{[r['seed'] for r in runs]}, not for all of {summary['seeds']}; finish it first")
        weights = Path(runs[0]["run_dir"]) / "model.safetensors"
        if not weights.is_file():
            raise MissingFileError(f"weights of {name} not found: {weights}")
        chosen[name] = (runs, weights)
    ZOO_DIR.mkdir(exist_ok=True)
    entries = {e["file"]: e for e in load_manifest().get("checkpoints", [])}
    for name, (runs, weights) in chosen.items():
        first = runs[0]
        filename = f"{name}.{TAG}.safetensors"
        target = ZOO_DIR / filename
        shutil.copyfile(weights, target)
        stats = summary["results"][name][TRAIN_RESOLUTION]["native"]
        entries[filename] = {
            "model": name, "tag": TAG, "file": filename, "sha256": sha256sum(target),
            "bytes": target.stat().st_size, "params": first["params"], "dataset": "mnist5k",
            "train_split": "train (3,500 images)", "selection_split": "val (500 images)",
            "eval_split": "test (1,000 images)", "train_resolution": TRAIN_RESOLUTION, "seed": first["seed"],
            "accuracy": {int(r): float(a) for r, a in first["top1"]["native"].items()},
            "seeds": len(runs),
            "accuracy_mean": {int(r): s["mean"] for r, s in stats.items() if s is not None},
            "accuracy_std": {int(r): s["std"] for r, s in stats.items() if s is not None},
            "val_top1": first["val_top1"],
            "config": f"configs/{TAG}_{name}.yaml", "command": command, "train_command": first["command"],
            "machine": summary["machine"], "torch": summary["torch"],
        }
    return list(entries.values())


def write_manifest(entries: list[dict[str, Any]]) -> Path:
    """Replace ``model_zoo/manifest.yaml`` (atomically) by ``entries`` under the usual header."""
    return atomic_write_text(MANIFEST, HEADER + yaml.safe_dump({"checkpoints": entries}, sort_keys=False))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python tools/update_zoo.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="examples:\n" + __doc__.rsplit("\n\n", 1)[1])
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    parser.add_argument("--models", nargs="+", default=list(MODELS), metavar="NAME")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1; seed 0's weights ship (default: 3)")
    parser.add_argument("--out", default="outputs/zoo", help="sweep directory (default: outputs/zoo)")
    parser.add_argument("--resolutions", type=int, nargs="+", default=list(TEST_RESOLUTIONS), metavar="N")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained side by side (default: 1)")
    parser.add_argument("--resume", action="store_true", help="reuse finished runs of --out, resume interrupted ones")
    parser.add_argument("--from", dest="from_dir", metavar="DIR",
                        help="take the finished sweep in DIR (its sweep.json) instead of training")
    parser.add_argument("--command", help="with --from: the command that produced DIR, recorded in the manifest")
    args = parser.parse_args(argv)
    if args.from_dir and not args.command:
        parser.error("--from needs --command, the command that produced the sweep (it is recorded in the manifest)")
    if args.command and not args.from_dir:
        parser.error("--command goes with --from; a training run records its own command")

    def update() -> int:
        if args.from_dir:
            summary, command = load_sweep_results(args.from_dir), args.command
        else:
            run_sweep(entries_for_configs([f"{TAG}_{name}" for name in args.models]), [TRAIN_RESOLUTION],
                      args.resolutions, seeds=range(args.seeds), split="test", overrides=args.overrides,
                      output_dir=args.out, resume=args.resume, jobs=args.jobs)
            summary, command = load_sweep_results(args.out), shlex.join(["python", "tools/update_zoo.py", *argv])
        entries = zoo_entries(summary, command, args.models)
        print(f"{write_manifest(entries)}: {', '.join(args.models)} updated")
        return 0

    return run_reporting_errors(update)


if __name__ == "__main__":
    raise SystemExit(main())
