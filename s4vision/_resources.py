"""The data that ships inside the package: experiment configs and the model zoo.

``configs/`` and ``model_zoo/`` sit at the top of the repository; ``s4vision/_data/`` links to
them in a checkout, and the sdist and wheel carry them as package data. Code finds them through
:mod:`importlib.resources`, so the same lookup works in a checkout, an editable install and a
wheel installed anywhere.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import InvalidValueError

__all__ = ["shipped_dir"]

SHIPPED = ("configs", "model_zoo")


def shipped_dir(name: str) -> Path:
    """The directory of shipped data ``name`` (``"configs"`` or ``"model_zoo"``) in this installation.

    The path is returned even when the directory is absent (a damaged installation): the code
    that reads a file from it reports the missing file by name.
    """
    if name not in SHIPPED:
        raise InvalidValueError(f"no shipped data directory {name!r}; there are {', '.join(SHIPPED)}")
    return Path(str(resources.files("s4vision") / "_data" / name))
