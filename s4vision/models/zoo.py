"""Locating and verifying the checkpoints of our own model zoo (``model_zoo/`` in the repo).

``model_zoo/manifest.yaml`` lists every checkpoint we trained ourselves with its sha256; a
model's ``pretrained_cfg`` points at the file with :func:`zoo_file`, and its entrypoint calls
:func:`verify_checkpoint` before timm loads it, so a missing or corrupted file fails loudly.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from ..errors import InvalidValueError, MissingFileError

__all__ = ["ZOO_DIR", "MANIFEST", "zoo_file", "load_manifest", "manifest_entry", "sha256sum", "verify_checkpoint"]

ZOO_DIR = Path(__file__).resolve().parents[2] / "model_zoo"
MANIFEST = ZOO_DIR / "manifest.yaml"


def zoo_file(filename: str) -> str:
    """Absolute path of ``filename`` inside the model zoo directory."""
    return str(ZOO_DIR / filename)


@lru_cache(maxsize=1)
def _manifest_cached(mtime: float) -> dict[str, Any]:
    with open(MANIFEST) as f:
        return yaml.safe_load(f) or {}


def load_manifest() -> dict[str, Any]:
    """The parsed ``manifest.yaml`` (``{"checkpoints": [...]}``); empty if there is none."""
    if not MANIFEST.exists():
        return {"checkpoints": []}
    return _manifest_cached(MANIFEST.stat().st_mtime)


def manifest_entry(path: str | Path) -> dict[str, Any] | None:
    """The manifest entry whose ``file`` is ``path`` (by file name), or ``None``."""
    name = Path(path).name
    for entry in load_manifest().get("checkpoints", []):
        if Path(entry["file"]).name == name:
            return entry
    return None


def sha256sum(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checkpoint(path: str | Path) -> None:
    """Raise if a zoo checkpoint is missing or its sha256 differs from the manifest.

    Files that are not listed in the manifest (a user's own checkpoint) are not checked.
    """
    entry = manifest_entry(path)
    expected = entry["sha256"] if entry else None
    if not Path(path).is_file():
        hint = f" (expected sha256 {expected})" if expected else ""
        raise MissingFileError(f"checkpoint file not found: {path}{hint}")
    if expected is None:
        return
    actual = sha256sum(path)
    if actual != expected:
        raise InvalidValueError(
            f"checkpoint {path} is corrupted: sha256 {actual} does not match the manifest's {expected}"
        )
