"""Checkpoints: model weights as safetensors with a YAML sidecar, plus resumable training state.

A *model file* is ``<name>.safetensors`` whose safetensors metadata (key ``s4vision``, JSON)
names the architecture, its constructor arguments and the training resolution, so it is
self-describing; a ``<name>.yaml`` sidecar beside it holds the full experiment config and
metrics for people to read.

A *training checkpoint* is a directory ``<run>/checkpoints/step_<N>/`` holding the model file,
the EMA weights (if any), ``trainer_state.pt`` (optimiser, scheduler, grad scaler, RNG
states, epoch / batch / step counters) and, written last, ``manifest.json``: the size and
SHA-256 of every other file. It is written under a temporary name and renamed into place, so a
process killed at any moment (or a full disk) leaves either the previous checkpoint or the new
one, never a torn one. A checkpoint damaged afterwards (a truncated or altered file) fails
verification on load; :meth:`CheckpointManager.load_newest_intact` then falls back to the
newest intact one, with a warning naming the damaged one.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .._checks import check_positive_int
from .._io import atomic_write, atomic_write_json, atomic_write_text, fsync_dir
from ..errors import InvalidValueError, MissingFileError

__all__ = [
    "METADATA_KEY",
    "DamagedCheckpointError",
    "save_model_file",
    "read_model_metadata",
    "load_model_weights",
    "check_state_fits",
    "capture_rng_state",
    "restore_rng_state",
    "verify_checkpoint",
    "CheckpointManager",
]

METADATA_KEY = "s4vision"
TRAINER_STATE = "trainer_state.pt"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
MANIFEST = "manifest.json"
DAMAGED_PREFIX = ".damaged-"  # damaged checkpoints are moved aside under this prefix (hidden, not listed)


class DamagedCheckpointError(InvalidValueError):
    """A training checkpoint (or a file in it) is truncated, altered or unreadable."""


def _state_for_saving(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage (tied weights): give each its own copy.
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in state_dict.items()}


def save_model_file(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any],
                    sidecar: dict[str, Any] | None = None) -> Path:
    """Write weights to ``path`` (``.safetensors``) atomically, with ``metadata`` embedded.

    ``sidecar`` (config, metrics) goes to ``path`` with suffix ``.yaml``.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise InvalidValueError(f"model files end in .safetensors, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = _state_for_saving(state_dict)
    header = {METADATA_KEY: json.dumps(metadata, sort_keys=True)}
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=header))
    if sidecar is not None:
        atomic_write_text(path.with_suffix(".yaml"), yaml.safe_dump(sidecar, sort_keys=False))
    return path


def read_model_metadata(path: str | Path) -> dict[str, Any]:
    """The s4vision metadata embedded in a ``.safetensors`` file (``{}`` if it has none)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError) as err:
        raise InvalidValueError(f"{path} is not a readable safetensors file: {err}") from None
    return json.loads(raw) if raw else {}


def load_model_weights(model: nn.Module, path: str | Path, arch: str | None = None) -> dict[str, Any]:
    """Load the weights in ``path`` into ``model`` and return the file's metadata.

    Raises ``ValueError`` naming both architectures when the file was written for another
    one (by its metadata, or by missing / unexpected / mis-shaped tensors).
    """
    path = Path(path)
    metadata = read_model_metadata(path)
    saved_arch = metadata.get("arch")
    _check_arch(path, arch, saved_arch)  # before reading the whole file
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise InvalidValueError(f"{path} is not a readable safetensors file (truncated?): {err}") from None
    check_state_fits(model, state, path, arch=arch, saved_arch=saved_arch)
    model.load_state_dict(state)
    return metadata


def _check_arch(path: str | Path, arch: str | None, saved_arch: str | None) -> None:
    if arch is not None and saved_arch is not None and saved_arch != arch:
        raise InvalidValueError(f"checkpoint {path} holds a {saved_arch!r} model, not {arch!r}")


def check_state_fits(model: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, *,
                     arch: str | None = None, saved_arch: str | None = None) -> None:
    """Raise ``ValueError`` naming ``path`` and both architectures unless ``state`` has exactly
    the tensors of ``model``, with the same shapes (and ``saved_arch``, when known, is ``arch``)."""
    _check_arch(path, arch, saved_arch)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mis_shaped = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mis_shaped:
        problems = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped)):
            if keys:
                problems.append(f"{len(keys)} {label} (e.g. {keys[0]})")
        what = f"a {saved_arch!r} model" if saved_arch else "another architecture"
        raise InvalidValueError(f"checkpoint {path} does not fit {arch or type(model).__name__!r} "
                                f"(it looks like {what}): {', '.join(problems)}")


def capture_rng_state() -> dict[str, Any]:
    """Every RNG training touches: torch (CPU and CUDA), Python's ``random`` and NumPy."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # int64: torch 2.4 cannot pickle uint32 tensors (MT19937's key is uint32)
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def _file_digest(path: Path) -> dict[str, Any]:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return {"size": path.stat().st_size, "sha256": sha.hexdigest()}


def _write_manifest(directory: Path) -> None:
    files = {p.name: _file_digest(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST}
    atomic_write_json(directory / MANIFEST, {"format": 1, "files": files}, indent=1)


def verify_checkpoint(checkpoint: str | Path) -> bool:
    """Check every file of a checkpoint directory against its ``manifest.json`` (sizes, then
    SHA-256). Returns ``True`` when verified, ``False`` for a checkpoint written before
    manifests existed (nothing to verify against); raises :class:`DamagedCheckpointError`
    naming the checkpoint and the file otherwise."""
    checkpoint = Path(checkpoint)
    manifest_path = checkpoint / MANIFEST
    if not manifest_path.is_file():
        if (checkpoint / TRAINER_STATE).is_file():
            return False  # an older checkpoint: loading it is the only check
        raise DamagedCheckpointError(f"checkpoint {checkpoint} is damaged: it has neither {MANIFEST} "
                                     f"nor {TRAINER_STATE}")
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DamagedCheckpointError(f"checkpoint {checkpoint} is damaged: unreadable {MANIFEST} ({err})") from None
    if TRAINER_STATE not in files or MODEL_FILE not in files:
        raise DamagedCheckpointError(f"checkpoint {checkpoint} is damaged: {MANIFEST} lists no {TRAINER_STATE} "
                                     f"or {MODEL_FILE}")
    for name, expected in files.items():
        path = checkpoint / name
        if not path.is_file():
            raise DamagedCheckpointError(f"checkpoint {checkpoint} is damaged: {name} is missing")
        size = path.stat().st_size
        if size != expected["size"]:
            raise DamagedCheckpointError(f"checkpoint {checkpoint} is damaged: {name} has {size} bytes, "
                                         f"{expected['size']} were written")
    for name, expected in files.items():
        if _file_digest(checkpoint / name)["sha256"] != expected["sha256"]:
            raise DamagedCheckpointError(f"checkpoint {checkpoint} is damaged: the content of {name} changed "
                                         "since it was written (SHA-256 mismatch)")
    return True


class CheckpointManager:
    """Training checkpoints in ``directory/step_<N>/``; the highest step is the latest.

    Writing: :meth:`save` fills a hidden temporary directory, writes ``manifest.json`` last and
    renames the directory into place. Reading: :meth:`load` verifies a checkpoint against its
    manifest; :meth:`load_newest_intact` falls back past damaged ones.
    """

    def __init__(self, directory: str | Path, keep: int = 2):
        self.directory = Path(directory)
        self.keep = check_positive_int("keep", keep)

    def checkpoints(self) -> list[Path]:
        """Checkpoint directories, oldest first (temporary and damaged ones start with a dot)."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.glob("step_*") if p.is_dir() and p.name.split("_")[1].isdigit()]
        return sorted(found, key=lambda p: int(p.name.split("_")[1]))

    def latest(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def remove_temporaries(self) -> None:
        """Delete what a killed writer left: ``.tmp-step_*`` directories. Only safe while no
        other process writes here (the trainer holds the run folder's lock)."""
        for tmp in self.directory.glob(".tmp-step_*"):
            shutil.rmtree(tmp, ignore_errors=True)

    def save(self, step: int, model_state: dict[str, torch.Tensor], metadata: dict[str, Any],
             trainer_state: dict[str, Any], sidecar: dict[str, Any] | None = None,
             ema_state: dict[str, torch.Tensor] | None = None) -> Path:
        """Write checkpoint ``step_<step>``, then delete all but the newest ``keep``.

        On any error (a full disk, ...) the temporary directory is removed and the error
        propagates: the checkpoints already there are untouched.
        """
        final = self.directory / f"step_{step:08d}"
        tmp = self.directory / f".tmp-step_{step:08d}"
        if tmp.exists():
            shutil.rmtree(tmp)
        try:
            tmp.mkdir(parents=True)
            save_model_file(tmp / MODEL_FILE, model_state, metadata, sidecar)
            if ema_state is not None:
                save_model_file(tmp / EMA_FILE, ema_state, {**metadata, "ema": True})
            atomic_write(tmp / TRAINER_STATE, lambda path: torch.save(trainer_state, path))
            _write_manifest(tmp)  # last: a checkpoint with a manifest is complete
            fsync_dir(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(self.directory)
        for old in self.checkpoints()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def load(checkpoint: Path, verify: bool = True
             ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, dict[str, Any]]:
        """``(model_state, ema_state or None, trainer_state)`` of a checkpoint directory.

        Verified against its manifest first (``verify=False`` skips that); a damaged or
        unreadable checkpoint raises :class:`DamagedCheckpointError` naming it and the file.
        """
        checkpoint = Path(checkpoint)
        if verify:
            verify_checkpoint(checkpoint)
        ema_path = checkpoint / EMA_FILE
        name = MODEL_FILE
        try:
            model_state = load_file(str(checkpoint / MODEL_FILE))
            name = EMA_FILE
            ema_state = load_file(str(ema_path)) if ema_path.is_file() else None
            name = TRAINER_STATE
            trainer_state = torch.load(checkpoint / TRAINER_STATE, map_location="cpu", weights_only=True)
        except Exception as err:  # the readers raise many types (SafetensorError, EOFError, pickle errors...)
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DamagedCheckpointError(f"checkpoint {checkpoint} is damaged: cannot read {name} ({reason})") from None
        return model_state, ema_state, trainer_state

    def load_newest_intact(self, move_damaged: bool = True) -> tuple[Path, tuple] | None:
        """The newest checkpoint that verifies and loads, as ``(path, load(path))``; ``None``
        when there is no checkpoint.

        Each damaged checkpoint met on the way gets a warning naming it and, with
        ``move_damaged``, is moved aside to ``.damaged-step_<N>`` (kept for inspection, no
        longer listed, so the resumed run's checkpoints are never pruned in its favour).
        Raises :class:`DamagedCheckpointError` when every checkpoint is damaged.
        """
        found = self.checkpoints()
        damaged = []
        for checkpoint in reversed(found):
            try:
                return checkpoint, self.load(checkpoint)
            except DamagedCheckpointError as err:
                damaged.append(checkpoint)
                moved = self._move_aside(checkpoint) if move_damaged else None
                where = f"; moved to {moved}" if moved else ""
                warnings.warn(f"{err}{where}; falling back to an older checkpoint", RuntimeWarning, stacklevel=2)
        if damaged:
            raise DamagedCheckpointError(f"every checkpoint in {self.directory} is damaged ({len(damaged)}); "
                                         "nothing to resume from: start a new run in another folder")
        return None

    def _move_aside(self, checkpoint: Path) -> Path | None:
        target = checkpoint.with_name(DAMAGED_PREFIX + checkpoint.name)
        n = 1
        while target.exists():
            n += 1
            target = checkpoint.with_name(f"{DAMAGED_PREFIX}{checkpoint.name}.{n}")
        try:
            os.replace(checkpoint, target)
        except OSError:
            return None
        return target
