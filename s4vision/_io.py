"""Atomic file writes: a reader (or a process killed halfway) sees the old file or the new one.

Every file s4vision writes that another step reads back (model files, their YAML sidecars,
feature caches and their index, benchmark annotations, the model-zoo manifest) goes through
:func:`atomic_write`: the content is written to a temporary file in the same directory,
flushed to disk, and renamed over the target with ``os.replace``, which is atomic on POSIX
and Windows. On any error the temporary file is removed and the target is left as it was.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Union

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "fsync_dir", "check_writable_file"]

PathLike = Union[str, os.PathLike]


def atomic_write(path: PathLike, write: Callable[[Path], Any]) -> Path:
    """Create or replace ``path`` atomically: ``write(tmp)`` fills a temporary file beside it.

    ``write`` receives the temporary file's path (``.<name>.<pid>.tmp`` in ``path``'s
    directory, which must exist) and writes the whole content there, by any means (``open``,
    ``safetensors.torch.save_file``, ...). The file is then fsynced, renamed over ``path``,
    and the directory fsynced. Returns ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    return atomic_write(path, write)


def atomic_write_json(path: PathLike, payload: Any, *, indent: int | None = None) -> Path:
    """Write ``payload`` as JSON (``json.dumps(payload, indent=indent)``) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(payload, indent=indent))


def check_writable_file(path: PathLike, what: str = "output file") -> Path:
    """Make sure ``path`` can be written *before* the work that produces it starts: its folder
    is created if needed and a temporary file is created and removed there. Raises
    :class:`~s4vision.errors.InvalidValueError` naming ``what`` and the path otherwise."""
    from .errors import InvalidValueError

    path = Path(path)
    if path.is_dir():
        raise InvalidValueError(f"{what} {path} is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(f".{path.name}.{os.getpid()}.probe")
        with open(probe, "w"):
            pass
        probe.unlink()
    except OSError as err:
        raise InvalidValueError(f"cannot write {what} {path}: {err.strerror or err}") from None
    return path


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: PathLike) -> None:
    """Flush a directory's entries (a rename inside it) to disk; a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
