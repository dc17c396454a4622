"""The zero-shot resolution study of docs/benchmarks.md: run it, resume it, report it.

    python tools/resolution_study.py --out outputs/study --jobs 2             # hours on 2 CPU cores
    python tools/resolution_study.py --out outputs/study --jobs 2 --resume    # after an interruption
    python tools/resolution_study.py --out outputs/study --report             # tables and plot only

One sweep, ``OUT/main``, run by :func:`s4vision.engine.sweep.run_sweep` (what ``s4vision sweep``
runs): the models of :data:`CONFIGS` (one shared recipe, ``configs/mnist5k_*.yaml``) trained at
14 and 28 px with seeds 0, 1, 2 on the 3,500 ``train`` digits and tested on the 1,000 ``test``
digits at 7, 14, 28 and 56 px (56: the 28 px digits upsampled): as the images come, resized to
the training resolution, and for the ViT with FlexiViT patch resampling. Apart from one entry it
is ``s4vision sweep --configs <CONFIGS> --train-resolutions 14 28 --seeds 3 --variants native
resize flexi --out OUT/main``. That entry, ``s4nd_iso_micro_14to28``, is ``s4nd_iso_micro``
trained at 14 px for the first half of its epochs and at 28 px for the second (the S4ND paper's
progressive resizing), compared with the same model trained at 28 px throughout for as many
epochs. The 14 px runs come first, then the 28 px ones, every seed of a model before the next
model, cheapest first and the slowest (conv2d_iso_micro, CCNN) last: a study cut short has
whole 3-seed cells.

``--report`` (also printed after a run) writes ``OUT/study.md``, the tables of docs/benchmarks.md:
accuracy mean +- std per model, variant and train/test resolution; the training times; the
progressive-resizing comparison; the issue's expectations, checked; and the figures behind the
README's one-sentence verdict. The plot is ``OUT/main/sweep.png``. Config overrides given on the
command line apply to every run (``train.epochs=1 train.max_steps=2`` for a smoke test).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from s4vision.cli import run_reporting_errors
from s4vision.engine.config import load_config
from s4vision.engine.report import format_table
from s4vision.errors import InvalidValueError
from s4vision.engine.sweep import SweepEntry, entries_for_configs, load_sweep, plot_sweep, run_sweep, sweep_tables
from s4vision.engine.sweep import _cell as stats_cell

# Resolution-agnostic models and the baselines a timm user would reach for, in the order they
# run (every seed of one before the next): cheapest first; conv2d_iso_micro and CCNN, the slowest
# to train and test at 28 px, last.
# s4nd_iso_micro_bandlimit0.4: the shipped S4ND recipe with the band limit that scored best on
# the validation split at this budget (tools/tuning_study.py); the shipped default stays 1.0.
TUNED = "s4nd_iso_micro_bandlimit0.4"
AGNOSTIC = ("s4nd_iso_micro", TUNED, "s4nd_convnext_micro", "ccnn_micro")
BASELINES = ("conv2d_iso_micro", "vit_micro", "convnext_micro")
CONFIGS = tuple(f"mnist5k_{name}" for name in ("s4nd_convnext_micro", "vit_micro", "convnext_micro", "s4nd_iso_micro",
                                               "conv2d_iso_micro", "ccnn_micro"))
TRAIN_RESOLUTIONS = (14, 28)
TEST_RESOLUTIONS = (7, 14, 28, 56)
SEEDS = 3
PROGRESSIVE = "s4nd_iso_micro"
PROGRESSIVE_LABEL = f"{PROGRESSIVE}_14to28"


def study_entries(overrides: Sequence[str], only_14: Sequence[str] = ()) -> list[SweepEntry]:
    """The configs, with the progressive-resizing entry right after ``s4nd_iso_micro`` (the two
    sides of that comparison): 14 px for the first half of the epochs, 28 px for the rest; then
    ``s4nd_iso_micro`` with the band limit chosen on the validation split (:data:`TUNED`). The models in ``only_14`` are trained at 14 px only (the cut
    to make when the 28 px column does not fit the time there is)."""
    entries = entries_for_configs(CONFIGS)
    unknown = sorted(set(only_14) - {e.label for e in entries})
    if unknown:
        raise InvalidValueError(f"--train-14-only: not a model of the study: {', '.join(unknown)}")
    entries = [replace(e, train_resolutions=(14,)) if e.label in only_14 else e for e in entries]
    epochs = load_config(f"mnist5k_{PROGRESSIVE}", overrides).train.epochs
    progressive = SweepEntry(PROGRESSIVE_LABEL, f"mnist5k_{PROGRESSIVE}",
                             (f"train.progressive=[[0,14],[{epochs // 2},28]]",), train_resolutions=(28,))
    tuned = SweepEntry(TUNED, f"mnist5k_{PROGRESSIVE}", ("model.kwargs.bandlimit=0.4",))
    at = next(i for i, e in enumerate(entries) if e.label == PROGRESSIVE) + 1
    return [*entries[:at], progressive, tuned, *entries[at:]]


def run_study(out: Path, *, seeds: int, jobs: int, resume: bool, overrides: Sequence[str],
              only_14: Sequence[str] = ()) -> None:
    run_sweep(study_entries(overrides, only_14), TRAIN_RESOLUTIONS, TEST_RESOLUTIONS, seeds=range(seeds),
              variants=("native", "resize", "flexi"), overrides=overrides, output_dir=out / "main", resume=resume,
              jobs=jobs)


def _cell(stats: dict[str, Any] | None, digits: int = 1) -> str | None:
    return stats_cell(stats, digits, SEEDS)


def progressive_table(summary: dict[str, Any]) -> str:
    """Training time and accuracy: 28 px throughout against 14 -> 28 px, same epochs."""
    rows = []
    for name, label in (("28 px throughout", PROGRESSIVE), ("14 -> 28 px (progressive)", PROGRESSIVE_LABEL)):
        timing = summary["timing"][label][28]
        top1 = summary["results"][label][28]["native"]
        rows.append([name, _cell(timing["train_seconds"], 0), _cell(timing["cpu_seconds"], 0),
                     _cell(timing["val_top1"], 2), *(_cell(top1.get(res)) for res in TEST_RESOLUTIONS)])
    full, prog = (summary["timing"][label][28]["cpu_seconds"] for label in (PROGRESSIVE, PROGRESSIVE_LABEL))
    saved = f"progressive resizing saves {100 * (1 - prog['mean'] / full['mean']):.0f}% of the training CPU time" \
        if full and prog else "(CPU times missing: runs resumed midway)"
    headers = ["s4nd_iso_micro schedule", "train wall s", "train+val CPU s", "val top-1 %",
               *(f"test {res}px" + ("*" if res > 28 else "") for res in TEST_RESOLUTIONS)]
    return format_table(headers, rows, markdown=True) + f"\n\n{saved}"


def _best(summary: dict[str, Any], labels: Sequence[str], variant: str, train_res: int,
          test_res: int) -> tuple[str, dict[str, Any]] | None:
    """The label with the highest mean top-1 among ``labels`` (None where none can run)."""
    cells = [(label, summary["results"].get(label, {}).get(train_res, {}).get(variant, {}).get(test_res))
             for label in labels]
    cells = [(label, cell) for label, cell in cells if cell is not None]
    return max(cells, key=lambda lc: lc[1]["mean"]) if cells else None


def expectation_lines(summary: dict[str, Any]) -> list[str]:
    """The issue's expectations, checked on the means: every resolution-agnostic model ahead of
    every baseline that takes a new resolution as it comes, and within 1 point of the best model
    at its training resolution; and the gap to test-time resizing, whichever way it goes."""
    lines = []
    for train_res in summary["train_resolutions"]:
        for test_res in summary["test_resolutions"]:
            best_base = _best(summary, BASELINES, "native", train_res, test_res)
            best_resize = _best(summary, BASELINES, "resize", train_res, test_res)
            best_any = _best(summary, AGNOSTIC + BASELINES, "native", train_res, test_res)
            for label in AGNOSTIC:
                trained = summary["results"].get(label, {}).get(train_res)
                cell = None if trained is None else trained.get("native", {}).get(test_res)
                if cell is None:
                    why = "cannot run at this size" if trained else f"not trained at {train_res} px (cut or not run yet)"
                    lines.append(f"- train {train_res} / test {test_res}px: {label} {why}")
                    continue
                if test_res == train_res:
                    gap = cell["mean"] - best_any[1]["mean"]
                    verdict = "met" if gap >= -1 else "NOT met"
                    lines.append(f"- train {train_res} / test {test_res}px: {label} {_cell(cell)} vs best "
                                 f"{best_any[0]} {_cell(best_any[1])}: {gap:+.1f} points (within 1: {verdict})")
                    continue
                ahead = best_base is None or cell["mean"] > best_base[1]["mean"]
                base = f"{best_base[0]} {_cell(best_base[1])}" if best_base else "no baseline runs"
                resize = (f"; vs test-time resizing ({best_resize[0]}) {_cell(best_resize[1])}: "
                          f"{cell['mean'] - best_resize[1]['mean']:+.1f} points") if best_resize else ""
                lines.append(f"- train {train_res} / test {test_res}px: {label} {_cell(cell)} vs best baseline as it "
                             f"comes {base} ({'ahead: met' if ahead else 'NOT ahead'}){resize}")
    return lines


def report(out: Path) -> str:
    """Write ``OUT/study.md`` and ``OUT/main/sweep.png`` from the runs finished so far."""
    main = load_sweep(out / "main" / "sweep.json")
    plot_sweep(main, out / "main" / "sweep.png")
    parts = ["## Accuracy (test split, mean ± std over seeds)", sweep_tables(main, markdown=True),
             "## Expectations", "\n".join(expectation_lines(main))]
    if all(28 in main["timing"].get(label, {}) for label in (PROGRESSIVE, PROGRESSIVE_LABEL)):
        parts += ["## Progressive resizing", progressive_table(main)]
    if not main["complete"]:
        parts.insert(0, f"**Incomplete: {len(main['runs'])} runs finished so far.**")
    text = "\n\n".join(parts) + "\n"
    (out / "study.md").write_text(text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tools/resolution_study.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n" + __doc__.split("\n\n")[1])
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    parser.add_argument("--out", default="outputs/study", help="output directory (default: outputs/study)")
    parser.add_argument("--seeds", type=int, default=SEEDS, help=f"seeds 0 .. N-1 (default: {SEEDS})")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained side by side (default: 1)")
    parser.add_argument("--resume", action="store_true", help="reuse finished runs, resume interrupted ones")
    parser.add_argument("--train-14-only", action="append", default=[], metavar="MODEL",
                        help="train this model at 14 px only (repeatable; e.g. ccnn_micro, the slowest, when "
                             "time is short)")
    parser.add_argument("--report", action="store_true", help="only write the tables of the runs finished so far")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))

    def study() -> int:
        out = Path(args.out)
        if not args.report:
            run_study(out, seeds=args.seeds, jobs=args.jobs, resume=args.resume, overrides=args.overrides,
                      only_14=args.train_14_only)
        print(report(out))
        return 0

    return run_reporting_errors(study)


if __name__ == "__main__":
    raise SystemExit(main())
