"""The ``s4vision`` command line: train, eval, predict, sweep, models, video.

Mistakes in the input (an unknown model, dataset or config key, a missing file, a resolution
a model cannot take) are the package's own errors (:class:`~s4vision.errors.S4VisionError`):
they print one line, ``error: ...``, and exit with status 2; a training whose loss diverged
prints one line and exits with status 1. Any other exception is a bug and shows its traceback.
Set ``S4VISION_DEBUG=1`` to see the traceback of the package's errors too.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Callable, Sequence

from ._io import atomic_write_json, check_writable_file
from .errors import InvalidValueError, MissingFileError, S4VisionError, TrainingDivergedError

__all__ = ["main", "build_parser", "run_reporting_errors"]

_VIDEO_EVAL_OPTIONS = ("data", "subset", "format", "clips", "windows", "stride", "report", "skip_bad")


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


def _add_config_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config-dir", action="append", default=[], metavar="DIR",
                   help="look up config names here first (repeatable; also $S4VISION_CONFIG_PATH, "
                        "then s4vision's own configs)")


# -- train --------------------------------------------------------------------------------------

def _cmd_train(args: argparse.Namespace) -> int:
    from .engine.config import load_config, resolve_config_path
    from .engine.train import train

    cfg = load_config(resolve_config_path(args.config, args.config_dir), args.overrides)
    if args.resume and not Path(cfg.train.output_dir).is_dir():
        raise MissingFileError(f"--resume: train.output_dir {cfg.train.output_dir} does not exist, so there is no run "
                               "to resume; check the path, or drop --resume to start a new run there")
    result = train(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    held_out = next((row["eval_top1"] for row in reversed(result.history) if "eval_top1" in row), None)
    if held_out is not None:
        print(f"held-out top-1: {held_out:.2f}%")
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
                    "key=value arguments override its entries (OmegaConf dot-list syntax); every value "
                    "is range-checked before anything starts. task=image trains image models; "
                    "task=video_features a temporal head (model.name=vis4mer) on features cached by "
                    "'s4vision video extract-features' (video.train, video.eval: the caches); "
                    "task=video_clips a clip model (s4nd_convnext3d_*) or a frame encoder (model.encoder) "
                    "plus a temporal head on clips decoded from annotated videos (video.train, video.eval: "
                    "annotation files, in s4vision's CSV, Kinetics, LVU or COIN layout). "
                    "Run with torchrun for several processes (DistributedDataParallel). "
                    "A run locks train.output_dir: a second run into the same folder refuses to start "
                    "(naming the holder's PID); a killed run releases the lock. "
                    "Unreadable images in an imagefolder stop the run at start-up with their list "
                    "(data.bad_images=skip leaves them out instead). "
                    "See docs/reliability.md for what a kill, a full disk or a damaged file can do.",
        examples="""
            s4vision train configs/mnist5k_s4nd_iso_micro.yaml
            s4vision train mnist5k_s4nd_iso_micro train.epochs=3 optim.lr=1e-3
            s4vision train mnist5k_s4nd_iso_micro 'train.progressive=[[0,10],[3,14]]'
            s4vision train mnist5k_s4nd_iso_micro train.output_dir=runs/a --resume   # after a crash
            s4vision train mnist5k_s4nd_iso_micro train.output_dir=runs/a --resume train.epochs=20   # extend it
            torchrun --nproc_per_node=2 -m s4vision.cli train mnist5k_s4nd_iso_micro
            s4vision train lrmnist_vis4mer_features     # ViS4mer on cached frame features
            s4vision train lrmnist_vis4mer_clips        # frame encoder + ViS4mer on decoded clips
        """)
    p.add_argument("config", help="YAML config file, or the name of one in a config directory")
    _add_config_dir(p)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=3")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest intact checkpoint in train.output_dir, to the batch "
                        "(damaged checkpoints are skipped with a warning; a folder that does not exist "
                        "is refused). Raising train.epochs extends a run: the learning-rate schedule is "
                        "re-planned for the new length from the step reached, with a printed notice")


# -- eval ---------------------------------------------------------------------------------------

def _checkpoint_task(checkpoint: str) -> str:
    """The task a checkpoint was trained for (``image`` for pretrained names and files
    without s4vision metadata), read without building the model."""
    from .engine.checkpoint import MODEL_FILE, read_model_metadata

    path = Path(checkpoint)
    if path.is_dir() and (path / MODEL_FILE).is_file():
        path = path / MODEL_FILE
    if not path.is_file():
        return "image"
    return read_model_metadata(path).get("task", "image")


def _cmd_eval(args: argparse.Namespace) -> int:
    from .engine.report import format_table

    if args.json:  # before the evaluation, not after it
        check_writable_file(args.json, "--json file")
    if _checkpoint_task(args.checkpoint) != "image":
        return _eval_video(args)
    given = [f"--{name.replace('_', '-')}" for name in _VIDEO_EVAL_OPTIONS if getattr(args, name) not in (None, False)]
    if given:
        raise InvalidValueError(f"{args.checkpoint} is an image model; {', '.join(given)} are for video checkpoints "
                                "(images: --resolutions, --dataset, --split, --root)")
    if not args.resolutions:
        raise InvalidValueError(f"{args.checkpoint} is an image model: give --resolutions N [N ...] to evaluate at")
    from .engine.evaluate import evaluate_checkpoint

    summary = evaluate_checkpoint(args.checkpoint, args.resolutions, dataset=args.dataset, split=args.split,
                                  root=args.root, model_name=args.model, device=args.device,
                                  batch_size=args.batch_size or 250, interpolation=args.interpolation,
                                  progress=not args.no_progress)
    trained = summary.get("train_resolution")
    print(f"{summary['arch']} on {summary['dataset']}/{summary['split']}"
          + (f", trained at {trained}px" if trained else ""))
    print(format_table(["resolution", "top-1 %", "loss", "images"],
                       [[f"{res}px", r["top1"], r["loss"], r["count"]] for res, r in summary["results"].items()]))
    if args.json:
        atomic_write_json(args.json, summary, indent=2)
    return 0


def _eval_video(args: argparse.Namespace) -> int:
    from .engine.report import format_table
    from .engine.video_eval import evaluate_video_checkpoint

    image_only = [flag for flag, value in (("--resolutions", args.resolutions), ("--dataset", args.dataset),
                                           ("--model", args.model)) if value]
    if image_only:
        raise InvalidValueError(f"{args.checkpoint} is a video model; {', '.join(image_only)} are for image "
                                "checkpoints (videos: --data, --clips, --windows, ...)")
    report_dir = args.report or str((Path(args.checkpoint) if Path(args.checkpoint).is_dir()
                                     else Path(args.checkpoint).parent) / "eval")
    check_writable_file(Path(report_dir) / "report.json", "--report folder")
    report = evaluate_video_checkpoint(args.checkpoint, args.data, subset=args.subset, root=args.root,
                                       format=args.format, clips=args.clips, windows=args.windows, stride=args.stride,
                                       device=args.device, batch_size=args.batch_size or 8,
                                       skip_bad=args.skip_bad, progress=not args.no_progress, report_dir=report_dir)
    protocol = report["protocol"]
    how = (f"{protocol['eval_clips']} clip(s) per video, {protocol['eval_windows']}" if protocol["num_frames"]
           else "whole sequences")
    print(f"{report['arch']} on {report['data']} ({report['count']} videos; {how}; trained at "
          f"{protocol['fps']:.3g} fps)")
    print(format_table(["top-1 %", "top-5 %", "loss", "videos"],
                       [[report["top1"], report["top5"], report["loss"], report["count"]]]))
    per_class = report["per_class"]
    if len(per_class) <= 30:
        print(format_table(["class", "top-1 %", "videos"],
                           [[name, r["top1"], r["count"]] for name, r in per_class.items()]))
    print(f"report: {report['files']['report']}, confusion matrix: {report['files']['confusion']}")
    if args.json:
        atomic_write_json(args.json, report, indent=2)
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = _add_command(
        sub, "eval", "evaluate a checkpoint: images at several resolutions, videos by the multi-clip protocol",
        func=_cmd_eval,
        description="Evaluate CHECKPOINT (a .safetensors file, a run directory, or a pretrained name "
                    "such as s4nd_iso_micro.mnist5k). Image models: on a held-out split at each resolution, "
                    "without retraining; the architecture, dataset and dataset root are read from the "
                    "checkpoint; a dataset whose classes differ from the model's is refused. Video models: "
                    "on the held-out data the run was validated on (or --data), with the multi-clip protocol "
                    "(several clips per video, uniform or sliding windows, logits averaged); prints top-1, "
                    "top-5 and per-class accuracy and writes report.json and confusion.png (--report).",
        examples="""
            s4vision eval runs/mnist5k_s4nd_iso_micro/model.safetensors --resolutions 14 28 56
            s4vision eval s4nd_iso_micro.mnist5k --resolutions 7 14 28 56 --json acc.json
            s4vision eval my.safetensors --model resnet10t --dataset digits --resolutions 8 16
            s4vision eval runs/lrmnist_vis4mer_features                 # its validation figures again
            s4vision eval runs/lrmnist_vis4mer_clips --data data/lrmnist/val.csv --clips 4
        """)
    p.add_argument("checkpoint")
    p.add_argument("--resolutions", type=int, nargs="+", metavar="N", help="images: test resolutions in pixels")
    p.add_argument("--dataset", help="images: dataset name (default: the one the checkpoint was trained on)")
    p.add_argument("--split", default="test", help="images: split to evaluate (default: test, the held-out one)")
    p.add_argument("--root", help="dataset root (images: imagefolder / torchvision datasets; videos: the folder "
                                  "the annotation's paths are relative to); default: the one the checkpoint records")
    p.add_argument("--model", help="images: architecture, for files without s4vision metadata")
    p.add_argument("--data", help="videos: an annotation file (clip models) or a feature cache (feature heads); "
                                  "default: the held-out data of the training run")
    p.add_argument("--subset", help="videos: the split inside a Kinetics / COIN annotation file")
    p.add_argument("--format", choices=["auto", "csv", "kinetics", "lvu", "coin"],
                   help="videos: the annotation layout (default: as trained, auto-detected)")
    p.add_argument("--clips", type=int, metavar="N", help="videos: clips per video, logits averaged (default: as "
                                                          "validated in training, video.eval_clips)")
    p.add_argument("--windows", choices=["uniform", "sliding"],
                   help="videos: clips at uniform positions, or sliding windows covering each video")
    p.add_argument("--stride", type=float, metavar="SECONDS", help="videos: seconds between sliding windows")
    p.add_argument("--report", metavar="DIR", help="videos: where report.json and confusion.png go "
                                                   "(default: eval/ beside the checkpoint)")
    p.add_argument("--skip-bad", action="store_true", help="videos: leave out unreadable videos (with a warning) "
                                                          "instead of stopping")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--batch-size", type=int, default=None, help="images or clips per forward pass (default: 250 "
                                                                 "images, 8 clips)")
    p.add_argument("--interpolation", default="bilinear", choices=["bilinear", "bicubic"],
                   help="images: resampling filter (antialiased) used to reach each resolution")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


# -- predict ------------------------------------------------------------------------------------

def _cmd_predict(args: argparse.Namespace) -> int:
    from .engine.predict import predict
    from .engine.report import format_table

    if args.top_k < 1:
        raise InvalidValueError(f"--top-k must be a positive integer, got {args.top_k}")

    def show(path: Path, seconds: float, running) -> None:
        name, probability = running.top(1)[0]
        print(f"{path.name} {seconds:9.2f} s  {name} ({probability:.3f})", flush=True)

    results = predict(args.checkpoint, args.inputs, device=args.device, chunk=args.chunk, stream=args.stream,
                      skip_bad=args.skip_bad, on_update=show if args.stream and not args.json else None)
    if args.json:
        print(json.dumps([r.to_dict(args.top_k) for r in results], indent=1))
        return 0
    rows = []
    for r in results:
        top = r.top(args.top_k)
        rows.append([r.input, top[0][0], round(top[0][1], 4), ", ".join(f"{n} ({p:.3f})" for n, p in top[1:]) or "-"])
    print(format_table(["input", "class", "probability", f"next {args.top_k - 1}"], rows))
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = _add_command(
        sub, "predict", "predict the classes of image or video files with a checkpoint", func=_cmd_predict,
        description="Apply CHECKPOINT (a model file, a run directory or a pretrained name) to image files, video "
                    "files or directories of them (searched recursively): prints the top-k classes with their "
                    "probabilities as a table, or JSON with --json. Videos are cut as the model was trained "
                    "(clips, frame rate; logits averaged over a video's clips) and decoded --chunk frames at a "
                    "time, so memory does not grow with a video's length. --stream (a causal temporal head) "
                    "runs over the whole video as it plays and prints the running prediction; its final "
                    "logits equal the offline forward. Unreadable files stop the command with their list "
                    "before anything is predicted, unless --skip-bad.",
        examples="""
            s4vision predict s4nd_iso_micro.mnist5k digit.png more_digits/
            s4vision predict runs/lrmnist_vis4mer_features data/lrmnist/val --top-k 3
            s4vision predict runs/lrmnist_vis4mer_features long_video.mp4 --stream
            s4vision predict runs/lrmnist_vis4mer_clips clip.mp4 --json
        """)
    p.add_argument("checkpoint")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, or directories of them")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="classes shown per input (default: 5)")
    p.add_argument("--json", action="store_true", help="print JSON (top-k and all logits per input) instead")
    p.add_argument("--stream", action="store_true", help="videos: run a causal head over the whole video chunk by "
                                                        "chunk, printing the running prediction")
    p.add_argument("--chunk", type=int, default=256, metavar="FRAMES", help="frames decoded at a time (default: 256)")
    p.add_argument("--skip-bad", action="store_true", help="leave out unreadable inputs (with a warning)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")

# -- sweep --------------------------------------------------------------------------------------

DEFAULT_SWEEP_MODELS = ("s4nd_iso_micro", "conv2d_iso_micro", "ccnn_micro")


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .engine.sweep import entries_for_configs, entries_for_models, run_sweep, sweep_tables

    if args.configs and args.models:
        raise InvalidValueError("give either --configs (one config per model) or --models (on --config), not both")
    entries = (entries_for_configs(args.configs) if args.configs
               else entries_for_models(args.models or DEFAULT_SWEEP_MODELS, args.config))
    summary = run_sweep(entries, args.train_resolutions, args.test_resolutions, seeds=range(args.seeds),
                        variants=args.variants, split=args.split, overrides=args.overrides, output_dir=args.out,
                        resume=args.resume, jobs=args.jobs)
    print(sweep_tables(summary))
    print(f"results: {Path(args.out) / 'sweep.json'}, plot: {Path(args.out) / 'sweep.png'}")
    return 0


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = _add_command(
        sub, "sweep", "train-resolution x test-resolution accuracy tables, over seeds", func=_cmd_sweep,
        description="Train each model at each training resolution with each seed (--configs: one config "
                    "per model; or --models on one --config, plus overrides), evaluate every result on "
                    "--split at each test resolution, as it comes and (--variants) with test-time "
                    "resizing or FlexiViT patch resampling; prints mean +- std over seeds and writes "
                    "OUT/sweep.json and OUT/sweep.png. --resume reuses finished runs and evaluations.",
        examples="""
            s4vision sweep train.epochs=2
            s4vision sweep --models s4nd_iso_micro conv2d_iso_micro --train-resolutions 7 14 \\
                --test-resolutions 7 14 28 56 --out outputs/sweep train.epochs=4
            s4vision sweep --configs mnist5k_s4nd_iso_micro mnist5k_vit_micro --train-resolutions 14 28 \\
                --seeds 3 --variants native resize flexi --jobs 2 --out outputs/study --resume
        """)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    p.add_argument("--configs", nargs="+", metavar="CONFIG", help="one config per model (files or names in configs/)")
    p.add_argument("--config", default="mnist5k_s4nd_iso_micro",
                   help="base YAML config for --models (default: mnist5k_s4nd_iso_micro)")
    p.add_argument("--models", nargs="+", metavar="NAME",
                   help=f"model names on --config (default: {' '.join(DEFAULT_SWEEP_MODELS)})")
    p.add_argument("--train-resolutions", type=int, nargs="+", default=[7, 14, 28], metavar="N")
    p.add_argument("--test-resolutions", type=int, nargs="+", default=[7, 14, 28, 56], metavar="N")
    p.add_argument("--seeds", type=int, default=1, metavar="N", help="train with seeds 0 .. N-1 (default: 1)")
    p.add_argument("--variants", nargs="+", default=["native"], choices=["native", "resize", "flexi"],
                   help="native: the test image as it comes; resize: resized to the training resolution; "
                        "flexi: ViT patch embedding resampled (default: native)")
    p.add_argument("--split", default="test", help="split the results are measured on (default: test)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained side by side (default: 1)")
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
    with warnings.catch_warnings():  # the summary below says it in one line
        warnings.filterwarnings("ignore", message=r"\d+ of \d+ videos could not be decoded")
        index = extract_features(args.annotation_or_dir, args.out_dir, model=args.model, num_frames=args.num_frames,
                                 fps=args.fps, batch_size=args.batch_size, tokens=args.tokens,
                                 pretrained=args.pretrained, checkpoint=args.checkpoint, size=size,
                                 device=args.device, resume=not args.no_resume, skip_failed=args.skip_failed,
                                 short=args.short, root=args.root, format=args.format, subset=args.subset)
    content = json.loads(Path(index).read_text())
    done, failed = len(content["videos"]), len(content["failed"])
    skipped = f"; {failed} could not be decoded and were skipped (listed under 'failed')" if failed else ""
    settings = content.get("settings", {})
    weights = settings.get("weights")
    if weights == "random":
        weights = f"random (seed {settings.get('init_seed')})"
    elif weights == "checkpoint":
        weights = f"checkpoint {settings.get('checkpoint')}"
    print(f"features of {done} of {done + failed} videos in {args.out_dir}{skipped}; encoder weights: {weights}; "
          f"index: {index}")
    return 0


def _cmd_make_benchmark(args: argparse.Namespace) -> int:
    from ._checks import check_choice
    from .data.video_benchmark import SPLITS, make_benchmark

    for split in args.split:  # every split is checked before any file is written
        check_choice("split", split, SPLITS)
    if len(set(args.split)) != len(args.split):
        raise InvalidValueError(f"--split lists a split twice: {' '.join(args.split)}")
    for split in args.split:
        out = make_benchmark(args.out_dir, args.num_videos, args.num_frames, fps=args.fps, size=args.size,
                             head_seconds=args.head_seconds, seed=args.seed, split=split)
        print(f"{split}: {out}")
    return 0


def _cmd_video_demo(args: argparse.Namespace) -> int:
    from .video_demo import run_from_args

    return run_from_args(args)


def _add_video(sub: argparse._SubParsersAction) -> None:
    video = _add_command(sub, "video", "video tools: feature extraction, benchmark generation",
                         description="Video tools. See 's4vision video COMMAND --help'.",
                         examples="""
                             s4vision video make-benchmark data/lrmnist --num-videos 200 --num-frames 64 --split train val
                             s4vision video extract-features data/lrmnist/train.csv feats/train --model test_convnext
                         """)
    vsub = video.add_subparsers(dest="video_command", metavar="COMMAND", required=True)

    p = _add_command(
        vsub, "extract-features", "cache per-frame features of a timm image model", func=_cmd_extract_features,
        description="Run a timm image model over the frames of every video (an annotation file in s4vision's "
                    "CSV, Kinetics, LVU or COIN layout, or a directory searched recursively) and cache (T, D) "
                    "features and the frames' timestamps per video in OUT_DIR, with OUT_DIR/index.json. The "
                    "encoder's weights are --pretrained (timm's, or a model-zoo name.tag offline), a --checkpoint, "
                    "or else a random initialisation (seed 0): a warning says so and the index records it "
                    "(settings.weights).",
        examples="""
            s4vision video extract-features data/lrmnist/train.csv feats/train --model resnet18 --pretrained
            s4vision video extract-features data/lrmnist/train.csv feats/train --model s4nd_iso_micro.mnist5k --pretrained --size 32
            s4vision video extract-features videos/ feats/ --fps 2 --size 224 --checkpoint w.safetensors
            s4vision video extract-features kinetics/train.csv feats/k400 --root kinetics/videos --subset train
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
    p.add_argument("--no-resume", action="store_true",
                   help="recompute features already cached (by default cached files are verified and "
                        "damaged or stale ones redone)")
    p.add_argument("--skip-failed", action="store_true",
                   help="exit 0 even when some videos cannot be decoded (they are listed in index.json); "
                        "by default any failure gives exit status 2 after the others are done")
    p.add_argument("--short", default="reject", choices=["reject", "loop", "pad"],
                   help="a video with fewer frames than --num-frames: reject it (listed as failed), loop it, or "
                        "pad it with its last frame (default: reject)")
    p.add_argument("--root", help="folder the annotation file's video paths are relative to (default: its own)")
    p.add_argument("--format", default="auto", choices=["auto", "csv", "kinetics", "lvu", "coin"],
                   help="annotation layout (default: auto-detected)")
    p.add_argument("--subset", help="the split inside a Kinetics or COIN annotation file (e.g. train, val)")

    p = _add_command(
        vsub, "make-benchmark", "write the long-range moving-MNIST video benchmark", func=_cmd_make_benchmark,
        description="Write mp4 clips whose label is (first digit + last digit) % 10, with distractor "
                    "digits in between, plus OUT_DIR/<split>.csv annotations. The splits are train and val "
                    "(val draws digit images never shown in train); every argument is checked before any "
                    "file is written.",
        examples="""
            s4vision video make-benchmark data/lrmnist --num-videos 200 --num-frames 256
            s4vision video make-benchmark data/lrmnist --num-videos 50 --num-frames 1024 --split val --seed 1
            s4vision video make-benchmark data/lrmnist --num-videos 200 --num-frames 64 --split train val
        """)
    p.add_argument("out_dir")
    p.add_argument("--num-videos", type=int, required=True)
    p.add_argument("--num-frames", type=int, required=True)
    p.add_argument("--fps", type=float, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--head-seconds", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", nargs="+", default=["train"], metavar="SPLIT",
                   help="one or more of train, val (default: train)")

    p = _add_command(
        vsub, "demo", "a head trained at 8 fps, tested at 4, 8 and 16 fps (a few minutes, offline)",
        func=_cmd_video_demo,
        description="The frame-rate experiment, small: write moving-MNIST clips (training at 8 fps, held-out at "
                    "4, 8 and 16 fps), train a frame encoder, extract features with timestamps, train a "
                    "continuous-time ViS4mer and a Transformer with learned positions at 8 fps, and test both at "
                    "each frame rate. Prints a table, writes OUT_DIR/results.json and OUT_DIR/frame_rate.png. "
                    "No network; about 4 minutes on an idle 2-core CPU.",
        examples="""
            s4vision video demo
            s4vision video demo --out-dir outputs/video_demo_long --train-clips 4000 --epochs 20
        """)
    from .video_demo import add_arguments as _add_demo_arguments

    _add_demo_arguments(p)


# -- entry point --------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s4vision", formatter_class=_formatter,
        description="State-space (S4ND) and continuous-kernel (CCNN) vision models: train image and video "
                    "classifiers, evaluate (at unseen resolutions; videos by the multi-clip protocol), predict "
                    "files, sweep, list models, and video tools.",
        epilog=_epilog("""
            s4vision models
            s4vision train mnist5k_s4nd_iso_micro train.epochs=3
            s4vision eval runs/mnist5k_s4nd_iso_micro/model.safetensors --resolutions 14 28 56
            s4vision predict s4nd_iso_micro.mnist5k digit.png
            s4vision sweep --models s4nd_iso_micro conv2d_iso_micro train.epochs=2
            s4vision video make-benchmark data/lrmnist --num-videos 100 --num-frames 256
            python -m s4vision.demo            # the zero-shot resolution demo (make demo)
        """) + "\n\nRun 's4vision COMMAND --help' for a command's options.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"s4vision {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_train, _add_eval, _add_predict, _add_sweep, _add_models, _add_video):
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
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return run_reporting_errors(lambda: func(args))


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """s4vision's own warnings as ``warning: <message>`` lines (no source line); others as usual."""
    if os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep):
        print(f"warning: {message}", file=file or sys.stderr)
    else:
        (file or sys.stderr).write(warnings.formatwarning(message, category, filename, lineno, line))


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
