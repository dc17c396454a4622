"""Checkpoints: model weights as safetensors with a YAML sidecar, plus resumable training state.

A *model file* is ``<name>.safetensors`` whose safetensors metadata (key ``s4vision``, JSON)
names the architecture, its constructor arguments and the training resolution, so it is
self-describing; a ``<name>.yaml`` sidecar beside it holds the full experiment config and
metrics for people to read.

A *training checkpoint* is a directory ``<run>/checkpoints/step_<N>/`` holding the model file,
the EMA weights (if any) and ``trainer_state.pt`` (optimiser, scheduler, grad scaler, RNG
states, epoch / batch / step counters). It is written under a temporary name and renamed into
place, so a process killed at any moment leaves either the previous checkpoint or the new one,
never a torn one.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .._checks import check_positive_int
from .._io import atomic_write, atomic_write_text, fsync_dir
from ..errors import InvalidValueError, MissingFileError

__all__ = [
    "METADATA_KEY",
    "save_model_file",
    "read_model_metadata",
    "load_model_weights",
    "capture_rng_state",
    "restore_rng_state",
    "CheckpointManager",
]

METADATA_KEY = "s4vision"
TRAINER_STATE = "trainer_state.pt"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"


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
    if arch is not None and saved_arch is not None and saved_arch != arch:
        raise InvalidValueError(f"checkpoint {path} holds a {saved_arch!r} model, not {arch!r}")
    state = load_file(str(path))
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
    model.load_state_dict(state)
    return metadata


def capture_rng_state() -> dict[str, Any]:
    """Every RNG training touches: torch (CPU and CUDA), Python's ``random`` and NumPy."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


class CheckpointManager:
    """Training checkpoints in ``directory/step_<N>/``; the highest complete step is the latest."""

    def __init__(self, directory: str | Path, keep: int = 2):
        self.directory = Path(directory)
        self.keep = check_positive_int("keep", keep)

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (temporary directories start with a dot)."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.glob("step_*") if (p / TRAINER_STATE).is_file()]
        return sorted(found, key=lambda p: int(p.name.split("_")[1]))

    def latest(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def save(self, step: int, model_state: dict[str, torch.Tensor], metadata: dict[str, Any],
             trainer_state: dict[str, Any], sidecar: dict[str, Any] | None = None,
             ema_state: dict[str, torch.Tensor] | None = None) -> Path:
        final = self.directory / f"step_{step:08d}"
        tmp = self.directory / f".tmp-step_{step:08d}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_model_file(tmp / MODEL_FILE, model_state, metadata, sidecar)
        if ema_state is not None:
            save_model_file(tmp / EMA_FILE, ema_state, {**metadata, "ema": True})
        torch.save(trainer_state, tmp / TRAINER_STATE)
        fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(self.directory)
        for old in self.checkpoints()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def load(checkpoint: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, dict[str, Any]]:
        """``(model_state, ema_state or None, trainer_state)`` of a checkpoint directory."""
        model_state = load_file(str(checkpoint / MODEL_FILE))
        ema_path = checkpoint / EMA_FILE
        ema_state = load_file(str(ema_path)) if ema_path.is_file() else None
        trainer_state = torch.load(checkpoint / TRAINER_STATE, map_location="cpu", weights_only=True)
        return model_state, ema_state, trainer_state

