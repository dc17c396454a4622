"""Locating and verifying pretrained weight files, above all the checkpoints of our model zoo.

``model_zoo/`` (shipped inside the package, see :mod:`s4vision._resources`) holds the checkpoints
we trained ourselves and ``manifest.yaml``, which lists each with its sha256. A model's
``pretrained_cfg`` points at its file with :func:`zoo_file`, and the model builder calls
:func:`verify_checkpoint` on every local weights file before timm reads it: a missing, damaged
or (for zoo files) altered file fails with its name instead of a bare reader error.

The sha256 applies to zoo files only: a file is a zoo file when it lies in the zoo directory of
this installation and the manifest lists its name. A user's own weights saved elsewhere under a
zoo file name are the user's, and are only checked for being readable.
"""
from __future__ import annotations

import hashlib
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .._resources import shipped_dir
from ..errors import InvalidValueError, MissingFileError

__all__ = [
    "ZOO_DIR", "MANIFEST", "zoo_file", "load_manifest", "manifest_entry", "sha256sum", "verify_checkpoint",
    "check_weights_readable",
]

ZOO_DIR = shipped_dir("model_zoo")
MANIFEST = ZOO_DIR / "manifest.yaml"

# What torch.save's legacy (non-zip) format starts with: pickle protocol 2 and its magic number.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def zoo_file(filename: str) -> str:
    """Absolute path of ``filename`` inside the model zoo directory."""
    return str(ZOO_DIR / filename)


@lru_cache(maxsize=1)
def _manifest_cached(path: str, mtime: float) -> dict[str, Any]:
    with open(path) as f:
        return yaml.safe_load(f) or {}


def load_manifest() -> dict[str, Any]:
    """The parsed ``manifest.yaml`` (``{"checkpoints": [...]}``); empty if there is none."""
    if not MANIFEST.exists():
        return {"checkpoints": []}
    return _manifest_cached(str(MANIFEST), MANIFEST.stat().st_mtime)


def _is_in_zoo(path: Path) -> bool:
    return path.resolve().parent == ZOO_DIR.resolve()


def manifest_entry(path: str | Path) -> dict[str, Any] | None:
    """The manifest entry of the zoo file ``path``, or ``None`` when ``path`` is not a zoo file
    (not in the zoo directory, or not listed in the manifest), whatever its name."""
    path = Path(path)
    if not _is_in_zoo(path):
        return None
    for entry in load_manifest().get("checkpoints", []):
        if entry["file"] == path.name:
            return entry
    return None


def sha256sum(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checkpoint(path: str | Path) -> None:
    """Raise unless ``path`` is a readable weights file (:func:`check_weights_readable`) and, if it
    is a zoo file, its sha256 is the manifest's.

    Raises:
        MissingFileError: no such file (a zoo file: naming its entry and expected sha256).
        InvalidValueError: a zoo file whose sha256 differs, or a damaged file (naming it).
    """
    path = Path(path)
    entry = manifest_entry(path)
    if not path.is_file():
        if entry is not None:
            raise MissingFileError(
                f"model zoo entry {entry['model']}.{entry['tag']}: its file {path} is missing from this "
                f"installation (expected sha256 {entry['sha256']}); reinstall s4vision")
        raise MissingFileError(f"pretrained weights file not found: {path}")
    if entry is not None:
        actual = sha256sum(path)
        if actual != entry["sha256"]:
            raise InvalidValueError(
                f"model zoo file {path} ({entry['model']}.{entry['tag']}) is corrupted: sha256 {actual} "
                f"does not match the manifest's {entry['sha256']}")
    check_weights_readable(path)


def check_weights_readable(path: str | Path) -> None:
    """Raise ``InvalidValueError`` naming ``path`` if it is not an intact weights file.

    A ``.safetensors`` file must have a valid header that covers the whole file; any other file
    must be a ``torch.save`` archive whose members all pass their CRC check (which catches
    truncation and flipped bits anywhere), or start like the legacy ``torch.save`` format.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as err:  # SafetensorError, or OSError from the memory map
            raise InvalidValueError(f"cannot read weights file {path}: not a valid safetensors file "
                                    f"(damaged or truncated?): {err}") from None
        return
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
                pickled = any(name.endswith("/data.pkl") or name == "data.pkl" for name in archive.namelist())
        except Exception as err:  # BadZipFile, or a damaged member name
            raise InvalidValueError(f"weights file {path} is damaged: {err}") from None
        if bad is not None:
            raise InvalidValueError(f"weights file {path} is damaged: member {bad} fails its CRC check")
        if not pickled:
            raise InvalidValueError(f"weights file {path} is a zip archive but not a torch.save checkpoint")
        return
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_TORCH_MAGIC))
    if head != _LEGACY_TORCH_MAGIC:
        raise InvalidValueError(f"weights file {path} is damaged or not a weights file: neither a torch.save "
                                "checkpoint (a zip archive, possibly truncated) nor a .safetensors file")
