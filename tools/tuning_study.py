"""The design choices behind ``configs/mnist5k_*.yaml``, scored on the validation split.

    python tools/tuning_study.py --out outputs/tuning                # about an hour on one CPU core
    python tools/tuning_study.py --out outputs/tuning --resume       # after an interruption
    python tools/tuning_study.py --out outputs/tuning --report       # table only

Every choice that the mnist5k recipe and ``s4nd_iso_micro`` make (the sharpness augmentation,
the band limit, the SSM step range, the alternative input filter) is one entry below: the shipped
config with one change. Each is trained at 14 px on the 3,500 ``train`` digits and scored on the
500 ``val`` digits at 7, 14, 28 and 56 px (56: the 28 px digits upsampled); the ``test`` digits
are never read. ``docs/benchmarks.md`` ("Tuning on the validation split") shows the table.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from s4vision.cli import run_reporting_errors
from s4vision.engine.sweep import SweepEntry, load_sweep, run_sweep, sweep_tables

S4ND = "mnist5k_s4nd_iso_micro"
CONV2D = "mnist5k_conv2d_iso_micro"
NO_SHARPNESS_AUGMENT = ("data.augment.antialias_prob=0", "data.augment.blur_prob=0")

# The shipped configs, then each with one change (labels name the change; S4ND's defaults are
# bandlimit 1.0 and dt 0.1-1, the S4ND paper's steps).
ENTRIES = (
    SweepEntry("s4nd", S4ND),
    SweepEntry("s4nd_no_sharpness_aug", S4ND, NO_SHARPNESS_AUGMENT),
    SweepEntry("s4nd_antialias0.3_blur0.5", S4ND, ("data.augment.antialias_prob=0.3", "data.augment.blur_prob=0.5")),
    SweepEntry("s4nd_bandlimit0.4", S4ND, ("model.kwargs.bandlimit=0.4",)),
    SweepEntry("s4nd_dt0.001-0.1", S4ND, ("model.kwargs.dt_min=0.001", "model.kwargs.dt_max=0.1")),
    SweepEntry("s4nd_no_sharpness_aug_input_blur0.9", S4ND, (*NO_SHARPNESS_AUGMENT, "model.kwargs.input_blur=0.9")),
    SweepEntry("conv2d", CONV2D),
    SweepEntry("conv2d_no_sharpness_aug", CONV2D, NO_SHARPNESS_AUGMENT),
)
TRAIN_RESOLUTION = 14
TEST_RESOLUTIONS = (7, 14, 28, 56)
SEEDS = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tools/tuning_study.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n" + __doc__.split("\n\n")[1])
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    parser.add_argument("--out", default="outputs/tuning", help="output directory (default: outputs/tuning)")
    parser.add_argument("--seeds", type=int, default=SEEDS, help=f"seeds 0 .. N-1 (default: {SEEDS})")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained side by side (default: 1)")
    parser.add_argument("--resume", action="store_true", help="reuse finished runs, resume interrupted ones")
    parser.add_argument("--report", action="store_true", help="only print the table of the runs finished so far")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))

    def study() -> int:
        out = Path(args.out)
        if args.report:
            summary = load_sweep(out / "sweep.json")
        else:
            summary = run_sweep(ENTRIES, (TRAIN_RESOLUTION,), TEST_RESOLUTIONS, seeds=range(args.seeds), split="val",
                                overrides=args.overrides, output_dir=out, resume=args.resume, jobs=args.jobs)
        print(sweep_tables(summary, markdown=True))
        return 0

    return run_reporting_errors(study)


if __name__ == "__main__":
    raise SystemExit(main())
