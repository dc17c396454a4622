"""The exceptions s4vision raises on purpose.

Every error the package raises after checking its input derives from :class:`S4VisionError`
and from the built-in exception a caller would expect (``ValueError``, ``TypeError``,
``FileNotFoundError``), so ``except ValueError`` keeps working. The command line reports these
in one line with exit status 2 (1 for :class:`TrainingDivergedError`, a run that failed rather
than a mistake in the input); any other exception is a bug and shows its traceback.
"""
from __future__ import annotations

__all__ = ["S4VisionError", "InvalidValueError", "InvalidTypeError", "MissingFileError", "TrainingDivergedError"]


class S4VisionError(Exception):
    """Base class of the errors s4vision raises after validating its input."""


class InvalidValueError(S4VisionError, ValueError):
    """An argument, config value, file content or input shape that s4vision cannot accept."""


class InvalidTypeError(S4VisionError, TypeError):
    """An argument of the wrong type."""


class MissingFileError(S4VisionError, FileNotFoundError):
    """A file or directory s4vision was asked to read does not exist."""


class TrainingDivergedError(S4VisionError, FloatingPointError):
    """The training loss became NaN or infinite (the command line exits with status 1)."""
