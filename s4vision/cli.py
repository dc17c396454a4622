"""The ``s4vision`` command line: train, eval, sweep, models, video.

Mistakes in the input (an unknown model, dataset or config key, a missing file, a resolution
a model cannot take) are the package's own errors (:class:`~s4vision.errors.S4VisionError`):
they print one line, ``error: ...``, and exit with status 2; a training whose loss diverged
prints one line and exits with status 1. Any other exception is a bug and shows its traceback.
Set ``S4VISION_DEBUG=1`` to see the traceback of the package's errors too.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path
from typing import Callable, Sequence

from ._io import atomic_write_json
from .errors import InvalidValueError, S4VisionError, TrainingDivergedError

__all__ = ["main", "build_parser", "run_reporting_errors"]


class _Formatter(argparse.HelpFormatter):
    """Wraps descriptions like argparse does, but keeps the example lines of epilogs as written."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=32)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


_formatter = _Formatter


def _epilog(text: str) -> str:
    return "examples:\n" + textwrap.indent(textwrap.dedent(text).strip(), "  ")


def _add_command(
    sub: argparse._SubParsersAction,
    name: str,
    summary: str,
    description: str,
    examples: str,
    func: Callable[[argparse.Namespace], int] | None = None,
) -> argparse.ArgumentParser:
    """Add subcommand ``name`` (``summary``: its line in the parent's help) with the shared
    formatter and an ``examples:`` epilog; ``func`` (if given) is what ``main`` runs for it."""
    p = sub.add_parser(name, help=summary, formatter_class=_formatter, description=description,
                       epilog=_epilog(examples))
    if func is not None:
        p.set_defaults(func=func)
    return p


# -- train --------------------------------------------------------------------------------------

def _cmd_train(args: argparse.Namespace) -> int:
    from .engine.config import load_config
    from .engine.train import train

    cfg = load_config(args.config, args.overrides)
    result = train(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    if result.zero_shot:
        from .engine.report import format_table

        print(format_table(["resolution", "top-1 %", "loss"],
                           [[f"{res}px", r.top1, r.loss] for res, r in result.zero_shot.items()]))
    print(f"weights: {result.model_file}")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = _add_command(
        sub, "train", "train a model from a YAML config", func=_cmd_train,
        description="Train a classifier. CONFIG is a YAML file (or the name of one in configs/); "
                    "key=value arguments override its entries (OmegaConf dot-list syntax). "
                    "Run with torchrun for several processes (DistributedDataParallel).",
        examples="""
            s4vision train configs/mnist5k_s4nd_iso_micro.yaml
            s4vision train mnist5k_s4nd_iso_micro train.epochs=3 optim.lr=1e-3
            s4vision train mnist5k_s4nd_iso_micro 'train.progressive=[[0,10],[3,14]]'
            s4vision train mnist5k_s4nd_iso_micro train.output_dir=runs/a --resume   # after a crash
            torchrun --nproc_per_node=2 -m s4vision.cli train mnist5k_s4nd_iso_micro
        """)
    p.add_argument("config", help="YAML config file or name in configs/")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=3")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in train.output_dir, to the batch")


# -- eval ---------------------------------------------------------------------------------------

def _cmd_eval(args: argparse.Namespace) -> int:
    from .engine.evaluate import evaluate_checkpoint
    from .engine.report import format_table

    summary = evaluate_checkpoint(args.checkpoint, args.resolutions, dataset=args.dataset, split=args.split,
                                  root=args.root, model_name=args.model, device=args.device,
                                  batch_size=args.batch_size, interpolation=args.interpolation,
                                  progress=not args.no_progress)
    trained = summary.get("train_resolution")
    print(f"{summary['arch']} on {summary['dataset']}/{summary['split']}"
          + (f", trained at {trained}px" if trained else ""))
    print(format_table(["resolution", "top-1 %", "loss", "images"],
                       [[f"{res}px", r["top1"], r["loss"], r["count"]] for res, r in summary["results"].items()]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.json, summary, indent=2)
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = _add_command(
        sub, "eval", "evaluate a checkpoint at several resolutions (zero-shot)", func=_cmd_eval,
        description="Evaluate CHECKPOINT (a .safetensors file, a run directory, or a pretrained name "
                    "such as s4nd_iso_micro.mnist5k) on a held-out split at each resolution, without "
                    "retraining. The architecture and dataset are read from the checkpoint.",
        examples="""
            s4vision eval runs/mnist5k_s4nd_iso_micro/model.safetensors --resolutions 14 28 56
            s4vision eval s4nd_iso_micro.mnist5k --resolutions 7 14 28 56 --json acc.json
            s4vision eval my.safetensors --model resnet10t --dataset digits --resolutions 8 16
        """)
    p.add_argument("checkpoint")
    p.add_argument("--resolutions", type=int, nargs="+", required=True, metavar="N", help="test resolutions in pixels")
    p.add_argument("--dataset", help="dataset name (default: the one the checkpoint was trained on)")
    p.add_argument("--split", default="test", help="split to evaluate (default: test, the held-out one)")
    p.add_argument("--root", help="dataset root for imagefolder / torchvision datasets")
    p.add_argument("--model", help="architecture, for files without s4vision metadata")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--interpolation", default="bilinear", choices=["bilinear", "bicubic"],
                   help="resampling filter (antialiased) used to reach each resolution")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


# -- sweep --------------------------------------------------------------------------------------

DEFAULT_SWEEP_MODELS = ("s4nd_iso_micro", "conv2d_iso_micro", "ccnn_micro")


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .engine.sweep import run_sweep, sweep_tables

    summary = run_sweep(args.models, args.train_resolutions, args.test_resolutions, config=args.config,
                        overrides=args.overrides, output_dir=args.out, resume=args.resume)
    print(sweep_tables(summary))
    print(f"results: {Path(args.out) / 'sweep.json'}")
    return 0


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = _add_command(
        sub, "sweep", "train-resolution x test-resolution accuracy table for several models", func=_cmd_sweep,
        description="Train each model at each training resolution (from --config plus overrides) and "
                    "evaluate every result at each test resolution; prints one table per model and "
                    "writes OUT/sweep.json.",
        examples="""
            s4vision sweep train.epochs=2
            s4vision sweep --models s4nd_iso_micro conv2d_iso_micro --train-resolutions 7 14 \\
                --test-resolutions 7 14 28 56 --out outputs/sweep train.epochs=4
        """)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    p.add_argument("--config", default="mnist5k_s4nd_iso_micro",
                   help="base YAML config (default: mnist5k_s4nd_iso_micro)")
    p.add_argument("--models", nargs="+", default=list(DEFAULT_SWEEP_MODELS), metavar="NAME")
    p.add_argument("--train-resolutions", type=int, nargs="+", default=[7, 14, 28], metavar="N")
    p.add_argument("--test-resolutions", type=int, nargs="+", default=[7, 14, 28, 56], metavar="N")
    p.add_argument("--out", default="outputs/sweep", help="output directory (default: outputs/sweep)")
    p.add_argument("--resume", action="store_true", help="reuse finished runs and resume interrupted ones")


# -- models -------------------------------------------------------------------------------------

def _cmd_models(args: argparse.Namespace) -> int:
    from .engine.factory import count_parameters, list_s4vision_models
    from .engine.report import format_table

    names = list_s4vision_models()
    pretrained = list_s4vision_models(pretrained=True)
    rows = []
    for name in names:
        tags = [p.split(".", 1)[1] for p in pretrained if p.split(".")[0] == name and "." in p]
        rows.append([name, f"{count_parameters(name) / 1e6:.3f}M", ", ".join(tags) or "-"])
    print(format_table(["model", "params", "pretrained"], rows))
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    _add_command(sub, "models", "list the registered s4vision models with parameter counts", func=_cmd_models,
                 description="List the timm models s4vision registers, their parameter counts "
                             "(default constructor arguments) and pretrained tags.",
                 examples="s4vision models")


# -- video --------------------------------------------------------------------------------------

def _cmd_extract_features(args: argparse.Namespace) -> int:
    from .engine.features import extract_features

    if args.size is not None and len(args.size) not in (1, 2):
        raise InvalidValueError(f"--size takes one or two integers, got {args.size}")
    size = None if args.size is None else (args.size[0] if len(args.size) == 1 else tuple(args.size))
    index = extract_features(args.annotation_or_dir, args.out_dir, model=args.model, num_frames=args.num_frames,
                             fps=args.fps, batch_size=args.batch_size, tokens=args.tokens,
                             pretrained=args.pretrained, checkpoint=args.checkpoint, size=size,
                             device=args.device, resume=not args.no_resume)
    print(f"index: {index}")
    return 0


def _cmd_make_benchmark(args: argparse.Namespace) -> int:
    from .data.video_benchmark import make_benchmark

    for split in args.split:
        out = make_benchmark(args.out_dir, args.num_videos, args.num_frames, fps=args.fps, size=args.size,
                             head_seconds=args.head_seconds, seed=args.seed, split=split)
        print(f"{split}: {out}")
    return 0


def _add_video(sub: argparse._SubParsersAction) -> None:
    video = _add_command(sub, "video", "video tools: feature extraction, benchmark generation",
                         description="Video tools. See 's4vision video COMMAND --help'.",
                         examples="""
                             s4vision video make-benchmark data/lrmnist --num-videos 200 --num-frames 256
                             s4vision video extract-features data/lrmnist/train.csv feats/ --num-frames 64
                         """)
    vsub = video.add_subparsers(dest="video_command", metavar="COMMAND", required=True)

    p = _add_command(
        vsub, "extract-features", "cache per-frame features of a timm image model", func=_cmd_extract_features,
        description="Run a timm image model over the frames of every video (an annotation CSV or a "
                    "directory searched recursively) and cache (T, D) features per video in OUT_DIR.",
        examples="""
            s4vision video extract-features data/lrmnist/train.csv feats/train --model resnet18 --num-frames 64
            s4vision video extract-features videos/ feats/ --fps 2 --size 224 --checkpoint w.safetensors
        """)
    p.add_argument("annotation_or_dir")
    p.add_argument("out_dir")
    p.add_argument("--model", default="vit_tiny_patch16_224", help="timm model name")
    p.add_argument("--num-frames", type=int, help="frames spread evenly over each video")
    p.add_argument("--fps", type=float, help="take frames at this rate instead")
    p.add_argument("--batch-size", type=int, default=32, help="frames per forward pass")
    p.add_argument("--tokens", action="store_true", help="keep the spatial tokens, (T, N, D)")
    p.add_argument("--pretrained", action="store_true", help="timm's pretrained weights (downloads)")
    p.add_argument("--checkpoint", help="local weights file to load into the model")
    p.add_argument("--size", type=int, nargs="+", metavar="N", help="short side, or height width")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-resume", action="store_true", help="recompute features already cached")

    p = _add_command(
        vsub, "make-benchmark", "write the long-range moving-MNIST video benchmark", func=_cmd_make_benchmark,
        description="Write mp4 clips whose label is (first digit + last digit) % 10, with distractor "
                    "digits in between, plus OUT_DIR/<split>.csv annotations.",
        examples="""
            s4vision video make-benchmark data/lrmnist --num-videos 200 --num-frames 256
            s4vision video make-benchmark data/lrmnist --num-videos 50 --num-frames 1024 --split test --seed 1
        """)
    p.add_argument("out_dir")
    p.add_argument("--num-videos", type=int, required=True)
    p.add_argument("--num-frames", type=int, required=True)
    p.add_argument("--fps", type=float, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--head-seconds", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", nargs="+", default=["train"], help="one or more splits (default: train)")


# -- entry point --------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s4vision", formatter_class=_formatter,
        description="State-space (S4ND) and continuous-kernel (CCNN) vision models: train, evaluate "
                    "at unseen resolutions, sweep, list models, and video tools.",
        epilog=_epilog("""
            s4vision models
            s4vision train mnist5k_s4nd_iso_micro train.epochs=3
            s4vision eval runs/mnist5k_s4nd_iso_micro/model.safetensors --resolutions 14 28 56
            s4vision sweep --models s4nd_iso_micro conv2d_iso_micro train.epochs=2
            s4vision video make-benchmark data/lrmnist --num-videos 100 --num-frames 256
            python -m s4vision.demo            # the zero-shot resolution demo (make demo)
        """) + "\n\nRun 's4vision COMMAND --help' for a command's options.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"s4vision {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_train, _add_eval, _add_sweep, _add_models, _add_video):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options (`train cfg --resume a=1`): argparse leaves them over.
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    func: Callable[[argparse.Namespace], int] = args.func
    return run_reporting_errors(lambda: func(args))


def run_reporting_errors(command: Callable[[], int]) -> int:
    """Run ``command()`` and return its exit status, reporting the package's own errors.

    An :class:`~s4vision.errors.S4VisionError` prints ``error: <one line>`` and gives status 2
    (1 for :class:`~s4vision.errors.TrainingDivergedError`); Ctrl-C gives 130. Any other
    exception propagates with its traceback: it is a bug. With ``S4VISION_DEBUG`` set, the
    package's errors propagate too.
    """
    if os.environ.get("S4VISION_DEBUG"):
        return command()
    try:
        return command()
    except S4VisionError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 1 if isinstance(err, TrainingDivergedError) else 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    if isinstance(err, FileNotFoundError) and err.filename and str(err.filename) not in text:
        text = f"{text}: {err.filename}"
    return " ".join(text.split())


if __name__ == "__main__":
    raise SystemExit(main())
