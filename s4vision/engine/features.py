"""Per-frame feature extraction with any timm image model, cached to disk.

:func:`extract_features` decodes the frames of every video, runs a timm image
model over them in batches and stores one safetensors file per video plus a
JSON index; :class:`~s4vision.data.video_dataset.VideoFeatureDataset` reads
them back. Long temporal models (ViS4mer) train on these caches instead of
decoding video at every epoch.

Each video's file holds ``features`` -- ``(T, D)`` pooled features, or
``(T, N, D)`` tokens with ``tokens=True`` -- ``frame_indices`` ``(T,)`` and
``timestamps`` ``(T,)`` (seconds, from the decoder: continuous-time heads take
them), and records in its metadata the video, span and settings it was made
from and the SHA-256 of its tensors. The index records every video's label,
class names, feature shape and frame rate, and how the encoder's weights were
chosen (``settings["weights"]``: ``pretrained``, ``checkpoint`` or ``random``;
a randomly initialised encoder is seeded by ``settings["init_seed"]``, so its
features can be reproduced, and is announced with a warning). Files are written to a temporary name and renamed,
so an interrupted run never leaves a partial file; a rerun with ``resume=True``
reuses a cached file only when it reads back whole, matches its video and the
settings, and its checksum holds (a truncated, altered or stale file is redone).

A video that cannot be decoded does not stop the others; at the end
:class:`FeatureExtractionError` lists the failures, unless ``skip_failed=True``
(then a warning does).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .._checks import check_positive_int
from .._io import atomic_write, atomic_write_json
from ..data.annotations import VIDEO_EXTENSIONS, VideoRecord, read_annotations
from ..data.clips import UniformClipSampler
from ..data.video import PathLike, SizeArg, VideoDecodeError, VideoReader, check_size
from ..data.video_dataset import normalize_frames, record_span
from ..errors import InvalidValueError, MissingFileError, S4VisionError
from ..layers.tokens import frame_tokens
from .runlock import RunLock

__all__ = ["extract_features", "FeatureExtractionError", "FrameEncoder", "INDEX_NAME", "VIDEO_EXTENSIONS",
           "RANDOM_INIT_SEED"]

INDEX_NAME = "index.json"
RANDOM_INIT_SEED = 0  # a randomly initialised encoder is created under this seed (reproducible features)
_PROVENANCE_KEY = "s4vision_features"


class FeatureExtractionError(S4VisionError, RuntimeError):
    """Some videos could not be decoded; the others' features are cached and indexed.

    Attributes: ``failed`` (``{"path", "reason"}`` per video), ``total``, ``index_path``.
    """

    def __init__(self, failed: list[dict], total: int, index_path: Path):
        self.failed, self.total, self.index_path = failed, total, index_path
        super().__init__(_failure_summary(failed, total, index_path,
                                          "; pass skip_failed=True (--skip-failed) to accept this"))


def _failure_summary(failed: list[dict], total: int, index_path: Path, hint: str = "") -> str:
    listing = "\n".join(f"  {f['path']}: {f['reason']}" for f in failed[:10])
    more = f"\n  ... and {len(failed) - 10} more" if len(failed) > 10 else ""
    return (f"{len(failed)} of {total} videos could not be decoded and have no features "
            f"(listed under 'failed' in {index_path}{hint}):\n{listing}{more}")


def _list_videos(annotation_or_dir: Path, root: PathLike | None, format: str,
                 subset: str | None) -> tuple[list[VideoRecord], Path, list[str] | None]:
    """Records of an annotation file, or of every video file under a directory (label -1),
    the root their keys are made relative to, and the class names."""
    if annotation_or_dir.is_dir():
        paths = sorted(p for p in annotation_or_dir.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
        if not paths:
            raise InvalidValueError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {str(annotation_or_dir)!r}")
        return [VideoRecord(str(p), -1) for p in paths], annotation_or_dir, None
    if annotation_or_dir.is_file():
        records, classes = read_annotations(annotation_or_dir, root, format=format, subset=subset)
        return records, Path(root) if root is not None else annotation_or_dir.parent, classes
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


class FrameEncoder:
    """A timm image model turned into a per-frame feature extractor, as ``extract-features``
    builds it (and ``predict`` rebuilds it from an index's ``settings``).

    Weights: ``pretrained`` (timm's, or a ``name.tag`` from the model zoo), ``checkpoint`` (a
    local file; a classifier head in it is ignored) or neither: a random initialisation under
    seed :data:`RANDOM_INIT_SEED` (a warning says so; the choice is recorded as
    ``settings["weights"]``).

    Calling it on ``uint8`` frames ``(T, H, W, 3)`` at :attr:`frame_size` gives features
    ``(T, D)`` (or tokens ``(T, N, D)``), float32 on the CPU.
    """

    def __init__(self, model: str, *, pretrained: bool = False, checkpoint: PathLike | None = None,
                 size: SizeArg = None, tokens: bool = False, batch_size: int = 32,
                 device: str | torch.device = "cpu", warn_random: bool = True):
        check_positive_int("batch_size", batch_size)
        if pretrained and checkpoint is not None:
            raise InvalidValueError("give at most one of pretrained and checkpoint (the encoder's weights)")
        self.device = torch.device(device)
        self.tokens, self.batch_size = tokens, batch_size
        self.weights = "pretrained" if pretrained else "checkpoint" if checkpoint is not None else "random"
        if checkpoint is not None and not os.path.isfile(checkpoint):
            raise MissingFileError(f"no such checkpoint: {str(checkpoint)!r}")
        if self.weights == "random":
            if warn_random:
                warnings.warn(f"no pretrained weights and no checkpoint: the features come from a randomly "
                              f"initialised {model} (seed {RANDOM_INIT_SEED}); pass --pretrained or --checkpoint for "
                              "a trained encoder (recorded as weights=random in the index)", UserWarning, stacklevel=3)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_INIT_SEED)
                net = timm.create_model(model, pretrained=False, num_classes=0)
        else:
            net = timm.create_model(model, pretrained=pretrained, num_classes=0)
        if checkpoint is not None:
            state = timm.models.load_state_dict(str(checkpoint))
            result = net.load_state_dict(state, strict=False)
            if result.missing_keys:
                raise InvalidValueError(
                    f"checkpoint {str(checkpoint)!r} does not fit model {model!r}: missing "
                    f"{result.missing_keys[:5]}{'...' if len(result.missing_keys) > 5 else ''}"
                )
            # Unexpected keys are the classifier that num_classes=0 removed (or similar heads).
        self.net = net.eval().to(self.device)
        data_config = timm.data.resolve_data_config(model=net)
        self.frame_size = _input_size(size, data_config)
        self.mean, self.std = list(data_config["mean"]), list(data_config["std"])
        self.settings = {
            "model": model, "pretrained": pretrained, "weights": self.weights,
            "checkpoint": None if checkpoint is None else str(Path(checkpoint).resolve()),
            "init_seed": RANDOM_INIT_SEED if self.weights == "random" else None,
            "tokens": tokens, "size": list(self.frame_size) if isinstance(self.frame_size, tuple) else self.frame_size,
            "mean": self.mean, "std": self.std,
        }

    @classmethod
    def from_settings(cls, settings: dict, *, batch_size: int = 32, device: str | torch.device = "cpu") -> "FrameEncoder":
        """The encoder an index's ``settings`` describe (the same weights: pretrained, the
        recorded checkpoint, or the same seeded random initialisation)."""
        size = settings.get("size")
        return cls(settings["model"], pretrained=settings.get("weights") == "pretrained" or settings.get("pretrained", False),
                   checkpoint=settings.get("checkpoint"), size=tuple(size) if isinstance(size, list) else size,
                   tokens=settings.get("tokens", False), batch_size=batch_size, device=device, warn_random=False)

    @property
    def num_features(self) -> int:
        return int(self.net.num_features)

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        chunks = []
        for chunk in frames.split(self.batch_size):
            x = normalize_frames(chunk, self.mean, self.std).to(self.device)
            out = frame_tokens(self.net, x) if self.tokens else self.net(x)
            chunks.append(out.float().cpu())
        return torch.cat(chunks)


def _input_size(size: SizeArg, data_config: dict) -> SizeArg:
    if size is None:
        return tuple(data_config["input_size"][1:])
    return check_size(size)


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
    skip_failed: bool = False,
    short: str = "reject",
    root: PathLike | None = None,
    format: str = "auto",
    subset: str | None = None,
) -> Path:
    """Run a timm image model over the frames of every video and cache the features.

    Args:
        annotation_or_dir: an annotation file (s4vision's CSV, Kinetics, LVU or COIN, see
            :func:`~s4vision.data.annotations.read_annotations`) or a directory searched
            recursively for video files (their label is -1).
        out_dir: where the per-video ``.safetensors`` files and ``index.json`` go.
        model: any ``timm.create_model`` name (``name.tag`` for pretrained weights such as
            the model zoo's); it is built with ``num_classes=0``.
        num_frames: take this many frames spread evenly over each video (or its
            annotated span); ``fps``: take frames at this rate instead. Neither:
            every frame.
        batch_size: frames per forward pass.
        tokens: keep the tokens of ``forward_features``, ``(T, N, D)`` (a CNN's
            ``h * w`` positions), instead of the pooled ``(T, D)``.
        pretrained: load the model's pretrained weights (timm's download, or the zoo's file).
        checkpoint: a local weights file (``.safetensors``/``.pth``) to load into the
            model; keys of a classifier head are ignored. Neither: a seeded random
            initialisation, with a warning (``settings["weights"] == "random"``).
        size: frame size fed to the model: an int resizes the short side, a
            ``(height, width)`` pair sets both; None uses the model's default input size.
        device: where the model runs.
        resume: skip videos whose features are already cached by an earlier run
            with the same settings (each cached file is verified first: a damaged
            or stale one is redone); False recomputes everything.
        skip_failed: accept videos that cannot be decoded (a warning lists them)
            instead of raising :class:`FeatureExtractionError` at the end.
        short: a video with fewer frames than ``num_frames``: ``"reject"`` (listed as
            failed), ``"loop"`` or ``"pad"`` (see :mod:`s4vision.data.clips`).
        root, format, subset: where the videos are and how to read the annotation file.

    Returns:
        The path of ``index.json``, which holds the ``settings``, the ``classes`` (names, or
        null for integer labels), every video under ``videos`` (``path``, ``label``,
        ``start``, ``end``, ``features`` file name, ``shape``, ``fps``: the rate of its
        feature steps) and under ``failed`` the videos that could not be decoded (``path``,
        ``reason``).

    Raises:
        ValueError: contradictory arguments, or ``resume`` into a cache made with
            different settings.
        FeatureExtractionError: some videos could not be decoded (after all the
            others are done and indexed), unless ``skip_failed``.
    """
    if num_frames is not None and fps is not None:
        raise InvalidValueError(f"give at most one of num_frames and fps, got num_frames={num_frames}, fps={fps}")
    check_positive_int("batch_size", batch_size)
    sampler = None if num_frames is None and fps is None else UniformClipSampler(num_frames, fps=fps, short=short)
    records, root, classes = _list_videos(Path(annotation_or_dir), root, format, subset)
    names = [_cache_name(r, root) for r in records]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidValueError(f"videos map to the same cache file (duplicate lines?): {duplicates[:5]}")

    encoder = FrameEncoder(model, pretrained=pretrained, checkpoint=checkpoint, size=size, tokens=tokens,
                           batch_size=batch_size, device=device)
    settings = {**encoder.settings, "num_frames": num_frames, "fps": fps, "short": short}

    out_dir = Path(out_dir)
    with RunLock(out_dir, what="feature folder"):  # one extraction writes into a folder at a time
        index_path = out_dir / INDEX_NAME
        if resume and index_path.exists():
            try:
                index = json.loads(index_path.read_text())
            except (OSError, ValueError) as err:
                index = {"settings": settings}
                warnings.warn(f"cannot read {index_path} ({err}); rebuilding it from the cached files that verify",
                              RuntimeWarning, stacklevel=2)
            if index.get("settings") != settings:
                raise InvalidValueError(
                    f"{str(index_path)!r} was made with other settings ({index.get('settings')}); "
                    "use another out_dir or resume=False"
                )
        elif not resume:
            for name in names:  # so that a later resume cannot take them for this run's output
                (out_dir / name).unlink(missing_ok=True)

        entries: list[dict] = []
        failed: list[dict] = []
        redone: list[str] = []

        def write_index() -> None:
            atomic_write_json(index_path, {"settings": settings, "classes": classes, "videos": entries,
                                           "failed": failed}, indent=1)

        write_index()  # the settings are on disk before any feature file
        try:
            for record, name in tqdm(list(zip(records, names)), desc=f"extracting {model} features", unit="video"):
                path = out_dir / name
                provenance = _provenance(record, settings)
                if resume and path.exists():
                    verified = _verified_entry(path, provenance)
                    if verified is not None:
                        entries.append(_entry(record, name, *verified))
                        continue
                    redone.append(name)
                try:
                    tensors = _extract_one(encoder, record, sampler)
                except (FileNotFoundError, VideoDecodeError, ValueError) as e:
                    failed.append({"path": record.path, "reason": f"{type(e).__name__}: {e}"})
                    continue
                _save_features(path, tensors, provenance)
                entries.append(_entry(record, name, list(tensors["features"].shape), _rate(tensors["timestamps"])))
        finally:
            write_index()
        if redone:
            shown = ", ".join(redone[:5]) + (" ..." if len(redone) > 5 else "")
            warnings.warn(f"{len(redone)} cached feature files in {out_dir} were damaged or stale and were redone: "
                          f"{shown}", RuntimeWarning, stacklevel=2)
        if failed:
            if not skip_failed:
                raise FeatureExtractionError(failed, len(records), index_path)
            warnings.warn(_failure_summary(failed, len(records), index_path), RuntimeWarning, stacklevel=2)
        return index_path


def _extract_one(encoder: FrameEncoder, record: VideoRecord,
                 sampler: UniformClipSampler | None) -> dict[str, torch.Tensor]:
    """``features`` ``(T, D)`` or ``(T, N, D)``, ``frame_indices`` and ``timestamps`` ``(T,)``
    of one video (frames decoded and encoded ``encoder.batch_size`` at a time)."""
    with VideoReader(record.path, size=encoder.frame_size) as reader:
        span = record_span(record, len(reader), reader.fps)  # warns when the annotation ends past the video
        if sampler is None:
            indices = torch.arange(*span)
            times = reader.timestamps(indices)
        else:
            clip = sampler.clips(len(reader), reader.fps, start=record.start, end=record.end)[0]
            indices = clip.indices
            times = clip.times.clone()
            times[clip.own_times] = reader.timestamps(indices)[clip.own_times]
        chunks = [encoder(reader.get_frames(part)) for part in indices.split(encoder.batch_size)]
    return {"features": torch.cat(chunks), "frame_indices": indices.long(), "timestamps": times.double()}


def _rate(timestamps: torch.Tensor) -> float | None:
    """Feature steps per second: the inverse of the mean gap (``None`` for a single step)."""
    if len(timestamps) < 2 or not timestamps[-1] > timestamps[0]:
        return None
    return round((len(timestamps) - 1) / float(timestamps[-1] - timestamps[0]), 6)


def _entry(record: VideoRecord, name: str, shape: list[int], fps: float | None) -> dict:
    return {
        "path": record.path, "label": record.label, "start": record.start, "end": record.end,
        "features": name, "shape": shape, "fps": fps,
    }


def _provenance(record: VideoRecord, settings: dict) -> dict:
    """What a cache file was made from: its video, span and the extraction settings."""
    return {"video": record.path, "start": record.start, "end": record.end, "settings": settings}


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    sha = hashlib.sha256()
    for key in sorted(tensors):
        sha.update(key.encode())
        sha.update(tensors[key].contiguous().view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def _verified_entry(path: Path, provenance: dict) -> tuple[list[int], float | None] | None:
    """``(shape, rate)`` of the cached features in ``path`` if the file reads back whole, was
    made from ``provenance`` and its checksum holds; ``None`` if it must be redone."""
    try:
        with safe_open(str(path), framework="pt") as f:
            recorded = json.loads((f.metadata() or {}).get(_PROVENANCE_KEY, "null"))
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError):
        return None
    if not isinstance(recorded, dict) or recorded.get("sha256") != _digest(tensors):
        return None
    if {k: v for k, v in recorded.items() if k != "sha256"} != json.loads(json.dumps(provenance)):
        return None
    features, indices, times = (tensors.get(k) for k in ("features", "frame_indices", "timestamps"))
    if features is None or indices is None or times is None or not features.shape[0] == indices.shape[0] == times.shape[0]:
        return None
    return list(features.shape), _rate(times)


def _save_features(path: Path, tensors: dict[str, torch.Tensor], provenance: dict) -> None:
    tensors = {key: value.contiguous() for key, value in tensors.items()}
    metadata = {_PROVENANCE_KEY: json.dumps({**provenance, "sha256": _digest(tensors)})}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
