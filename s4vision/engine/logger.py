"""Per-epoch metrics to a CSV file (and to TensorBoard when it is installed)."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from .._io import atomic_write_text
from ..errors import InvalidValueError

__all__ = ["MetricLogger"]


class MetricLogger:
    """One row per epoch in ``<dir>/log.csv`` (rewritten atomically); scalars mirrored to TensorBoard if available.

    ``truncate_from(epoch)`` drops rows of ``epoch`` and later: a resumed run rewrites the
    epochs it replays instead of duplicating them.
    """

    FIELDS = ("epoch", "step", "resolution", "lr", "train_loss", "train_top1", "eval_loss", "eval_top1", "seconds")

    def __init__(self, directory: str | Path, tensorboard: bool = True):
        self.path = Path(directory) / "log.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(self.path.parent / "tensorboard"))

    def _rows(self) -> list[dict[str, str]]:
        """The rows on disk; a row torn by an older writer or by hand (a missing field, an
        epoch that is not a number) is dropped."""
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as f:
            return [r for r in csv.DictReader(f)
                    if None not in r and None not in r.values() and str(r.get("epoch", "")).isdigit()]

    def _write(self, rows: list[dict[str, Any]]) -> None:
        table = io.StringIO()
        writer = csv.DictWriter(table, fieldnames=self.FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, table.getvalue())

    def truncate_from(self, epoch: int) -> None:
        if self.path.is_file():
            self._write([r for r in self._rows() if int(r["epoch"]) < epoch])

    def last_row(self) -> dict[str, Any] | None:
        """The last row logged, values as numbers (empty fields left out), or ``None``."""
        rows = self._rows()
        return {k: float(v) for k, v in rows[-1].items() if v not in ("", None)} if rows else None

    def log(self, row: dict[str, Any]) -> None:
        """Append ``row``. The file is rewritten atomically, so a kill never leaves a torn row."""
        unknown = set(row) - set(self.FIELDS)
        if unknown:
            raise InvalidValueError(f"unknown log fields {sorted(unknown)}; valid: {', '.join(self.FIELDS)}")
        self._write([*self._rows(), {k: _fmt(v) for k, v in row.items()}])
        if self._tb is not None:
            for key, value in row.items():
                if key not in ("epoch", "step") and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, global_step=row.get("step", 0))
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value
