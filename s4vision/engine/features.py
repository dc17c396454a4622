"""Per-frame feature extraction with any timm image model, cached to disk.

:func:`extract_features` decodes the frames of every video, runs a timm image
model over them in batches and stores one safetensors file per video plus a
JSON index; :class:`~s4vision.data.video_dataset.VideoFeatureDataset` reads
them back. Long temporal models (ViS4mer) train on these caches instead of
decoding video at every epoch.

Each video's file holds ``features`` -- ``(T, D)`` pooled features, or
``(T, N, D)`` tokens with ``tokens=True`` -- and ``frame_indices`` ``(T,)``.
Files are written to a temporary name and renamed, so an interrupted run never
leaves a partial file, and a rerun with ``resume=True`` skips finished videos.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import timm
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .._checks import check_positive_int
from .._io import atomic_write, atomic_write_json
from ..data.clips import UniformClipSampler, frame_span
from ..data.video import PathLike, SizeArg, VideoDecodeError, VideoReader, check_size
from ..data.video_dataset import VideoRecord, normalize_frames, read_annotations
from ..errors import InvalidValueError, MissingFileError
from ..layers.tokens import frame_tokens

__all__ = ["extract_features", "INDEX_NAME", "VIDEO_EXTENSIONS"]

INDEX_NAME = "index.json"
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")


def _list_videos(annotation_or_dir: Path) -> tuple[list[VideoRecord], Path]:
    """Records of an annotation CSV, or of every video file under a directory
    (label -1), and the root their keys are made relative to."""
    if annotation_or_dir.is_dir():
        paths = sorted(p for p in annotation_or_dir.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
        if not paths:
            raise InvalidValueError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {str(annotation_or_dir)!r}")
        return [VideoRecord(str(p), -1) for p in paths], annotation_or_dir
    if annotation_or_dir.is_file():
        records, _ = read_annotations(annotation_or_dir)
        return records, annotation_or_dir.parent
    raise MissingFileError(f"no such annotation file or directory: {str(annotation_or_dir)!r}")


def _cache_name(record: VideoRecord, root: Path) -> str:
    """A flat, readable file name for a video (and its time span)."""
    try:
        relative = Path(record.path).relative_to(root)
    except ValueError:
        relative = Path(record.path)
    name = re.sub(r"[^\w.-]+", "_", "__".join(relative.with_suffix("").parts)).strip("_")
    if record.start is not None or record.end is not None:
        name += f"@{record.start or 0:g}-{'end' if record.end is None else format(record.end, 'g')}"
    return name + ".safetensors"


def _create_model(model: str, pretrained: bool, checkpoint: PathLike | None, device: torch.device) -> torch.nn.Module:
    net = timm.create_model(model, pretrained=pretrained, num_classes=0)
    if checkpoint is not None:
        if not os.path.isfile(checkpoint):
            raise MissingFileError(f"no such checkpoint: {str(checkpoint)!r}")
        state = timm.models.load_state_dict(str(checkpoint))
        result = net.load_state_dict(state, strict=False)
        if result.missing_keys:
            raise InvalidValueError(
                f"checkpoint {str(checkpoint)!r} does not fit model {model!r}: missing "
                f"{result.missing_keys[:5]}{'...' if len(result.missing_keys) > 5 else ''}"
            )
        # Unexpected keys are the classifier that num_classes=0 removed (or similar heads).
    return net.eval().to(device)


def _input_size(size: SizeArg, data_config: dict) -> SizeArg:
    if size is None:
        return tuple(data_config["input_size"][1:])
    return check_size(size)


@torch.inference_mode()
def _video_features(
    net: torch.nn.Module,
    reader: VideoReader,
    indices: torch.Tensor,
    batch_size: int,
    tokens: bool,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
) -> torch.Tensor:
    chunks = []
    for start in range(0, len(indices), batch_size):
        frames = reader.get_frames(indices[start:start + batch_size])
        x = normalize_frames(frames, mean, std).to(device)
        if tokens:
            out = frame_tokens(net, x)
        else:
            out = net(x)
        chunks.append(out.float().cpu())
    return torch.cat(chunks)


def extract_features(
    annotation_or_dir: PathLike,
    out_dir: PathLike,
    model: str = "vit_tiny_patch16_224",
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    batch_size: int = 32,
    tokens: bool = False,
    pretrained: bool = False,
    checkpoint: PathLike | None = None,
    size: SizeArg = None,
    device: str | torch.device = "cpu",
    resume: bool = True,
) -> Path:
    """Run a timm image model over the frames of every video and cache the features.

    Args:
        annotation_or_dir: an annotation CSV (``path,label[,start,end]``, see
            :func:`~s4vision.data.video_dataset.read_annotations`) or a directory
            searched recursively for video files (their label is -1).
        out_dir: where the per-video ``.safetensors`` files and ``index.json`` go.
        model: any ``timm.create_model`` name; it is built with ``num_classes=0``.
        num_frames: take this many frames spread evenly over each video (or its
            annotated span); ``fps``: take frames at this rate instead. Neither:
            every frame.
        batch_size: frames per forward pass.
        tokens: keep the tokens of ``forward_features``, ``(T, N, D)`` (a CNN's
            ``h * w`` positions), instead of the pooled ``(T, D)``.
        pretrained: load timm's pretrained weights (downloads them).
        checkpoint: a local weights file (``.safetensors``/``.pth``) to load into the
            model; keys of a classifier head are ignored.
        size: frame size fed to the model: an int resizes the short side, a
            ``(height, width)`` pair sets both; None uses the model's default input size.
        device: where the model runs.
        resume: skip videos whose features are already cached by an earlier run
            with the same settings; False recomputes everything.

    Returns:
        The path of ``index.json``, which holds the ``settings``, every video
        under ``videos`` (``path``, ``label``, ``start``, ``end``, ``features``
        file name, ``shape``) and under ``failed`` the videos that could not be
        decoded (``path``, ``reason``); a warning lists those too.

    Raises:
        ValueError: contradictory arguments, or ``resume`` into a cache made with
            different settings.
    """
    if num_frames is not None and fps is not None:
        raise InvalidValueError(f"give at most one of num_frames and fps, got num_frames={num_frames}, fps={fps}")
    check_positive_int("batch_size", batch_size)
    sampler = None if num_frames is None and fps is None else UniformClipSampler(num_frames, fps=fps)
    records, root = _list_videos(Path(annotation_or_dir))
    names = [_cache_name(r, root) for r in records]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidValueError(f"videos map to the same cache file (duplicate lines?): {duplicates[:5]}")

    device = torch.device(device)
    net = _create_model(model, pretrained, checkpoint, device)
    data_config = timm.data.resolve_data_config(model=net)
    frame_size = _input_size(size, data_config)
    settings = {
        "model": model, "pretrained": pretrained,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "tokens": tokens, "num_frames": num_frames, "fps": fps,
        "size": list(frame_size) if isinstance(frame_size, tuple) else frame_size,
        "mean": list(data_config["mean"]), "std": list(data_config["std"]),
    }

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index_path = out_dir / INDEX_NAME
    previous: dict[str, dict] = {}
    if resume and index_path.exists():
        index = json.loads(index_path.read_text())
        if index.get("settings") != settings:
            raise InvalidValueError(
                f"{str(index_path)!r} was made with other settings ({index.get('settings')}); "
                "use another out_dir or resume=False"
            )
        previous = {entry["features"]: entry for entry in index.get("videos", [])}
    elif not resume:
        for name in names:  # so that a later resume cannot take them for this run's output
            (out_dir / name).unlink(missing_ok=True)

    entries: list[dict] = []
    failed: list[dict] = []

    def write_index() -> None:
        atomic_write_json(index_path, {"settings": settings, "videos": entries, "failed": failed}, indent=1)

    write_index()  # the settings are on disk before any feature file
    try:
        for record, name in tqdm(list(zip(records, names)), desc=f"extracting {model} features", unit="video"):
            path = out_dir / name
            if resume and path.exists():  # complete: files only appear by atomic rename
                entries.append(previous.get(name) or _entry(record, name, _cached_shape(path)))
                continue
            try:
                features, indices = _extract_one(net, record, frame_size, sampler, batch_size, tokens, data_config, device)
            except (FileNotFoundError, VideoDecodeError, ValueError) as e:
                failed.append({"path": record.path, "reason": f"{type(e).__name__}: {e}"})
                continue
            _save_features(path, features, indices)
            entries.append(_entry(record, name, list(features.shape)))
    finally:
        write_index()
    if failed:
        listing = "\n".join(f"  {f['path']}: {f['reason']}" for f in failed[:10])
        warnings.warn(
            f"{len(failed)} of {len(records)} videos could not be decoded and have no features "
            f"(listed under 'failed' in {index_path}):\n{listing}",
            RuntimeWarning,
            stacklevel=2,
        )
    return index_path


def _extract_one(
    net: torch.nn.Module,
    record: VideoRecord,
    frame_size: SizeArg,
    sampler: UniformClipSampler | None,
    batch_size: int,
    tokens: bool,
    data_config: dict,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``(T, D)`` or ``(T, N, D)`` of one video and the frame indices ``(T,)``."""
    with VideoReader(record.path, size=frame_size) as reader:
        if sampler is None:
            indices = torch.arange(*frame_span(len(reader), reader.fps, record.start, record.end))
        else:
            indices = sampler(len(reader), reader.fps, start=record.start, end=record.end)[0]
        features = _video_features(
            net, reader, indices, batch_size, tokens, data_config["mean"], data_config["std"], device
        )
    return features, indices


def _entry(record: VideoRecord, name: str, shape: list[int]) -> dict:
    return {
        "path": record.path, "label": record.label, "start": record.start, "end": record.end,
        "features": name, "shape": shape,
    }


def _cached_shape(path: Path) -> list[int]:
    with safe_open(str(path), framework="pt") as f:
        return list(f.get_slice("features").get_shape())


def _save_features(path: Path, features: torch.Tensor, indices: torch.Tensor) -> None:
    tensors = {"features": features.contiguous(), "frame_indices": indices.long().contiguous()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))
