"""Video annotation files: which video, which label, which time span.

:func:`read_annotations` reads four layouts into :class:`VideoRecord` objects (a path, a
class index and an optional span in seconds):

``csv`` (s4vision's own)
    ``path,label[,start,end]`` per line; ``label`` a class index or a class name; ``start`` /
    ``end`` an optional span in seconds (either may be empty). A first line ``path,label,...``
    is a header; blank lines and lines starting with ``#`` are ignored.
``kinetics`` (the Kinetics-400/600/700 CSV files)
    ``label,youtube_id,time_start,time_end,split[,is_cc]`` with a header. The clip is looked up
    as ``<root>/<label>/<youtube_id>_<start:06d>_<end:06d>.<ext>`` (the official downloader's
    layout), then ``<root>/<youtube_id>_<start:06d>_<end:06d>.<ext>``, then the untrimmed
    ``<root>/<youtube_id>.<ext>`` with the span ``[time_start, time_end)``.
``lvu`` (the per-task files of the LVU benchmark, ``lvu_1.0/<task>/<split>.csv``)
    A header line, then space-separated fields: the class index first and the YouTube id
    second to last (``<label> <name> <youtube_id> <imdb_id>``); the video is
    ``<root>/<youtube_id>.<ext>``. The regression tasks (view count, like ratio) are refused.
``coin`` (COIN's ``COIN.json``, ActivityNet-style)
    ``{"database": {youtube_id: {"class", "subset", "recipe_type", "annotation": [...]}}}``;
    the label is the task (``class``) of the whole video; the video is
    ``<root>/<recipe_type>/<youtube_id>.<ext>`` (the official download script's layout) or
    ``<root>/<youtube_id>.<ext>``.

``format="auto"`` tells them apart by their content. ``subset`` keeps the rows of one split
(Kinetics' ``split`` column, COIN's ``subset``: ``train``/``val``/``test`` are understood as
``training``/``testing``). Paths are relative to ``root`` (default: the annotation file's folder).

Class names. Labels that are names are mapped to indices by ``classes`` when given (the
training split's, or a checkpoint's): a name outside it raises :class:`UnknownClassError`
naming the file, the line and the name. Without ``classes`` the sorted distinct names are the
classes. Bare integer labels (``csv``, ``lvu`` without names) are indices; with ``classes`` they
must be below ``len(classes)``.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .._checks import check_choice
from ..errors import InvalidValueError, MissingFileError
from .video import PathLike

__all__ = [
    "VideoRecord",
    "UnknownClassError",
    "ANNOTATION_FORMATS",
    "VIDEO_EXTENSIONS",
    "detect_format",
    "read_annotations",
]

ANNOTATION_FORMATS = ("auto", "csv", "kinetics", "lvu", "coin")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
_SUBSET_ALIASES = {"train": ("train", "training"), "val": ("val", "validate", "validation", "testing"),
                   "test": ("test", "testing")}


@dataclass(frozen=True)
class VideoRecord:
    """One annotated video; ``path`` is resolved against the root, ``label`` is a class index,
    ``start``/``end`` an optional span in seconds."""

    path: str
    label: int
    start: float | None = None
    end: float | None = None


class UnknownClassError(InvalidValueError):
    """An annotation names a class the model (or the training split) does not know."""


@dataclass
class _Row:
    path: str
    label: str
    start: float | None
    end: float | None
    where: str  # "file:line" for messages
    name: str | None = None  # a class name given beside an integer label (LVU)


def detect_format(annotation_file: PathLike) -> str:
    """The layout of an annotation file (see the module docstring), from its content."""
    path = Path(annotation_file)
    if path.suffix.lower() == ".json":
        return "coin"
    with open(path, newline="") as f:
        for line in f:
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if "youtube_id" in text and "," in text:
                return "kinetics"
            return "lvu" if "," not in text and len(text.split()) >= 3 else "csv"
    return "csv"


def read_annotations(
    annotation_file: PathLike,
    root: PathLike | None = None,
    *,
    format: str = "auto",
    subset: str | None = None,
    classes: Sequence[str] | None = None,
) -> tuple[list[VideoRecord], list[str] | None]:
    """Read an annotation file in any of :data:`ANNOTATION_FORMATS`.

    Returns the records and the class names: ``classes`` when given, else the sorted distinct
    names (``None`` when every label is a bare integer: the labels are the indices).
    """
    annotation_file = Path(annotation_file)
    if not annotation_file.is_file():
        raise MissingFileError(f"no such annotation file: {str(annotation_file)!r}")
    check_choice("annotation format", format, ANNOTATION_FORMATS)
    layout = detect_format(annotation_file) if format == "auto" else format
    if subset is not None and layout in ("csv", "lvu"):
        raise InvalidValueError(f"{annotation_file}: the {layout} layout has no subsets (one file per split); "
                                f"got subset={subset!r}")
    root = annotation_file.parent if root is None else Path(root)
    readers = {"csv": _read_csv, "kinetics": _read_kinetics, "lvu": _read_lvu, "coin": _read_coin}
    rows = readers[layout](annotation_file, root, subset)
    if not rows:
        which = f" in subset {subset!r}" if subset else ""
        raise InvalidValueError(f"annotation file {str(annotation_file)!r} lists no videos{which}")
    return _label_rows(rows, annotation_file, classes)


def _label_rows(rows: list[_Row], annotation_file: Path,
                classes: Sequence[str] | None) -> tuple[list[VideoRecord], list[str] | None]:
    integers = all(re.fullmatch(r"\d+", row.label) for row in rows)
    if integers:
        indices = [int(row.label) for row in rows]
        names = _names_beside_integers(rows)
        if classes is not None:
            for row, index in zip(rows, indices):
                if index >= len(classes):
                    raise UnknownClassError(f"{row.where}: class index {index} is out of range for the "
                                            f"{len(classes)} known classes")
            resolved = list(classes)
        else:
            resolved = names
    else:
        known = list(classes) if classes is not None else sorted({row.label for row in rows})
        lookup = {name: i for i, name in enumerate(known)}
        indices = []
        for row in rows:
            if row.label not in lookup:
                shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
                raise UnknownClassError(f"{row.where}: unknown class {row.label!r} (known classes: {shown})")
            indices.append(lookup[row.label])
        resolved = known
    records = [VideoRecord(row.path, index, row.start, row.end) for row, index in zip(rows, indices)]
    return records, resolved


def _names_beside_integers(rows: list[_Row]) -> list[str] | None:
    """Class names by index when every row names its class (LVU), else ``None``."""
    if not all(row.name for row in rows):
        return None
    names: dict[int, str] = {}
    for row in rows:
        index = int(row.label)
        if names.setdefault(index, row.name) != row.name:
            raise InvalidValueError(f"{row.where}: class {index} is called {row.name!r} here but "
                                    f"{names[index]!r} before")
    return [names.get(i, str(i)) for i in range(max(names) + 1)]


def _parse_time(text: str, what: str, where: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InvalidValueError(f"{where}: {what} must be a number of seconds, got {text!r}") from None
    if value < 0:
        raise InvalidValueError(f"{where}: {what} must be >= 0 seconds, got {value}")
    return value


def _check_span(start: float | None, end: float | None, where: str) -> None:
    if start is not None and end is not None and end <= start:
        raise InvalidValueError(f"{where}: end ({end}) must come after start ({start})")


def _find_video(candidates: Sequence[Path]) -> Path | None:
    """The first existing file among ``candidates`` (each tried with every video extension
    when it has none)."""
    for candidate in candidates:
        options = [candidate] if candidate.suffix else [candidate.with_suffix(ext) for ext in VIDEO_EXTENSIONS]
        for option in options:
            if option.is_file():
                return option
    return None


def _data_lines(annotation_file: Path):
    """``(line number, text)`` of the non-blank, non-comment lines."""
    with open(annotation_file, newline="") as f:
        for number, line in enumerate(f, start=1):
            text = line.strip()
            if text and not text.startswith("#"):
                yield number, text


def _read_csv(annotation_file: Path, root: Path, subset: str | None) -> list[_Row]:
    rows = []
    with open(annotation_file, newline="") as f:
        for line_number, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if not rows and row[0].strip().lower() == "path":
                continue  # header
            where = f"{annotation_file}:{line_number}"
            if not 2 <= len(row) <= 4:
                raise InvalidValueError(f"{where}: expected 'path,label[,start,end]', got {len(row)} fields: {row}")
            path, label = row[0].strip(), row[1].strip()
            if not path or not label:
                raise InvalidValueError(f"{where}: empty path or label in {row}")
            start = _parse_time(row[2], "start", where) if len(row) > 2 else None
            end = _parse_time(row[3], "end", where) if len(row) > 3 else None
            _check_span(start, end, where)
            rows.append(_Row(str(root / path), label, start, end, where))
    return rows


def _in_subset(value: str, subset: str | None) -> bool:
    if subset is None:
        return True
    value, subset = value.strip().lower(), subset.strip().lower()
    return value == subset or value in _SUBSET_ALIASES.get(subset, ())


def _read_kinetics(annotation_file: Path, root: Path, subset: str | None) -> list[_Row]:
    rows = []
    with open(annotation_file, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"label", "youtube_id", "time_start", "time_end"} - set(reader.fieldnames or ())
        if missing:
            raise InvalidValueError(f"{annotation_file}: a Kinetics annotation file needs the columns label, "
                                    f"youtube_id, time_start, time_end; missing {sorted(missing)}")
        for line_number, row in enumerate(reader, start=2):
            where = f"{annotation_file}:{line_number}"
            if not _in_subset(row.get("split") or "", subset):
                continue
            label, video_id = (row["label"] or "").strip(), (row["youtube_id"] or "").strip()
            if not label or not video_id:
                raise InvalidValueError(f"{where}: empty label or youtube_id")
            start = _parse_time(row["time_start"] or "", "time_start", where)
            end = _parse_time(row["time_end"] or "", "time_end", where)
            _check_span(start, end, where)
            trimmed = f"{video_id}_{int(start or 0):06d}_{int(end or 0):06d}"
            clip = _find_video([root / label / trimmed, root / trimmed])
            if clip is not None:
                rows.append(_Row(str(clip), label, None, None, where))  # already cut to the span
                continue
            full = _find_video([root / video_id])
            if full is not None:
                rows.append(_Row(str(full), label, start, end, where))
            else:  # reported as missing when the dataset probes its files
                rows.append(_Row(str(root / label / f"{trimmed}.mp4"), label, None, None, where))
    return rows


def _read_lvu(annotation_file: Path, root: Path, subset: str | None) -> list[_Row]:
    rows = []
    lines = list(_data_lines(annotation_file))
    header = lines[0][1].lower() if lines else ""
    if any(word in header for word in ("view", "like")):
        raise InvalidValueError(f"{annotation_file}: the LVU regression tasks (view count, like ratio) are not "
                                f"classification (header {lines[0][1]!r})")
    for line_number, text in lines[1:]:  # the first line is the header
        where = f"{annotation_file}:{line_number}"
        fields = text.split()
        if len(fields) < 3:
            raise InvalidValueError(f"{where}: expected '<label> ... <youtube_id> <imdb_id>', got {text!r}")
        label = fields[0]
        if not re.fullmatch(r"\d+", label):
            raise InvalidValueError(f"{where}: LVU label {label!r} is not a class index (the regression tasks, "
                                    "view count and like ratio, are not classification)")
        video_id = fields[-2]
        path = _find_video([root / video_id]) or root / f"{video_id}.mp4"
        rows.append(_Row(str(path), label, None, None, where, name=fields[1] if len(fields) == 4 else None))
    return rows


def _read_coin(annotation_file: Path, root: Path, subset: str | None) -> list[_Row]:
    try:
        database = json.loads(annotation_file.read_text())["database"]
        items = list(database.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise InvalidValueError(f"{annotation_file} is not a COIN/ActivityNet-style annotation file with a "
                                f"'database' object ({type(err).__name__}: {err})") from None
    rows = []
    for video_id, entry in items:
        where = f"{annotation_file}:{video_id}"
        if not isinstance(entry, dict) or not entry.get("class"):
            raise InvalidValueError(f"{where}: the entry has no 'class' (the video's task)")
        if not _in_subset(str(entry.get("subset", "")), subset):
            continue
        folder = root / str(entry["recipe_type"]) if "recipe_type" in entry else root
        path = _find_video([folder / video_id, root / video_id]) or folder / f"{video_id}.mp4"
        rows.append(_Row(str(path), str(entry["class"]), None, None, where))
    return rows
