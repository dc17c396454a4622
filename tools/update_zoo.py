"""Refresh the model zoo from demo runs (see README.md#model-zoo).

Trains the demo's models on mnist5k at 14x14 and evaluates them at every test resolution
(:func:`s4vision.demo.run_demo`), or takes a finished demo output directory (``--from``), then
copies each model's weights into ``model_zoo/<model>.mnist5k.safetensors`` and rewrites its
entry in ``model_zoo/manifest.yaml``: sha256, size, parameter count, held-out top-1 accuracy
at each resolution, the config, the command that produced the weights, the machine and the
torch version. Entries of other files are kept. ``tests/models/test_zoo.py`` re-evaluates
every file against the recorded accuracy.

    python tools/update_zoo.py --models s4nd_iso_micro conv2d_iso_micro ccnn_micro --out outputs/zoo
    python tools/update_zoo.py --from outputs/demo --command "python -m s4vision.demo --out outputs/demo"
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from s4vision._io import atomic_write_text
from s4vision.cli import run_reporting_errors
from s4vision.demo import add_run_arguments, run_demo
from s4vision.errors import InvalidValueError, MissingFileError
from s4vision.models.zoo import MANIFEST, ZOO_DIR, load_manifest, sha256sum

TAG = "mnist5k"
HEADER = ("# Checkpoints we trained ourselves (see README.md#model-zoo). Each entry records the command\n"
          "# that produced it and its held-out top-1 accuracy (%) at each test resolution;\n"
          "# tests/models/test_zoo.py re-evaluates every file against these numbers.\n")


def load_demo_results(directory: str | Path) -> dict[str, Any]:
    """The ``results.json`` of a demo output directory, with each run's ``weights`` pointing at
    ``<directory>/<model>/model.safetensors``."""
    directory = Path(directory)
    path = directory / "results.json"
    if not path.is_file():
        raise MissingFileError(f"no demo results in {directory} (expected {path})")
    results = json.loads(path.read_text())
    for name, run in results["models"].items():
        run["weights"] = str(directory / name / "model.safetensors")
    return results


def zoo_entries(results: dict[str, Any], command: str) -> list[dict[str, Any]]:
    """Copy each run's weights into the zoo; the manifest's entries with theirs replaced."""
    if results["quick"]:
        raise InvalidValueError("refusing to put --quick runs into the model zoo")
    ZOO_DIR.mkdir(exist_ok=True)
    entries = {e["file"]: e for e in load_manifest().get("checkpoints", [])}
    for name, run in results["models"].items():
        if not Path(run["weights"]).is_file():
            raise MissingFileError(f"weights of {name} not found: {run['weights']}")
        filename = f"{name}.{TAG}.safetensors"
        target = ZOO_DIR / filename
        shutil.copyfile(run["weights"], target)
        entries[filename] = {
            "model": name, "tag": TAG, "file": filename, "sha256": sha256sum(target),
            "bytes": target.stat().st_size, "params": run["params"],
            "dataset": "mnist5k", "train_split": "train (4,000 images)", "eval_split": "test (1,000 held-out images)",
            "train_resolution": results["train_resolution"],
            "accuracy": {int(r): float(a) for r, a in run["top1"].items()},
            "config": run["config"], "command": command,
            "machine": results["machine"], "torch": results["torch"],
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
    add_run_arguments(parser, out="outputs/zoo")
    parser.add_argument("--from", dest="from_dir", metavar="DIR",
                        help="take the finished demo runs in DIR (its results.json) instead of training")
    parser.add_argument("--command", help="with --from: the command that produced DIR, recorded in the manifest")
    args = parser.parse_args(argv)
    if args.from_dir and not args.command:
        parser.error("--from needs --command, the command that produced the runs (it is recorded in the manifest)")
    if args.command and not args.from_dir:
        parser.error("--command goes with --from; a training run records its own command")

    def update() -> int:
        if args.from_dir:
            results, command = load_demo_results(args.from_dir), args.command
        else:
            results = run_demo(args.models, args.out, resolutions=args.resolutions, device=args.device,
                               overrides=args.overrides, jobs=args.jobs)
            command = shlex.join(["python", "tools/update_zoo.py", *argv])
        entries = zoo_entries(results, command)
        print(f"{write_manifest(entries)}: {', '.join(results['models'])} updated")
        return 0

    return run_reporting_errors(update)


if __name__ == "__main__":
    raise SystemExit(main())
