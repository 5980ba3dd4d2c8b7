"""A training run's log, ``metrics.jsonl`` in its folder: one JSON row per logging interval (step, epoch, the
mean of each loss term, learning rate, optimiser steps per second), one per evaluation (its scores), and one when
the run resumed. Rows are appended and flushed one by one, so a kill loses at most the row being written; a resume
keeps the rows up to its checkpoint's step and drops the rest.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pandas as pd

from tasks.errors import DataFormatError
from tasks.io import atomic_write

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"


class RunLog:
    """Writes a run's ``metrics.jsonl`` (nothing when ``path`` is None)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def begin(self, resumed_at: int | None) -> None:
        """A fresh log, or, when resuming at step ``resumed_at``, the old one cut back to that step."""
        if self.path is None:
            return
        kept = []
        if resumed_at is not None and self.path.is_file():
            kept = [row for row in _rows(self.path, tolerate_tail=True) if row["step"] <= resumed_at]
            kept.append({"event": "resume", "step": resumed_at})
        atomic_write(self.path, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in kept)))

    def train(self, **row: float) -> None:
        self._append({"event": "train", **row})

    def evaluation(self, step: int, scores: dict[str, object]) -> None:
        """The scalar scores of an evaluation after ``step`` steps (per-class lists stay in the record)."""
        self._append({"event": "eval", "step": step,
                      **{k: v for k, v in scores.items() if isinstance(v, int | float) and not isinstance(v, bool)}})

    def _append(self, row: dict[str, object]) -> None:
        if self.path is None:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(clean) + "\n")
            f.flush()


def _rows(path: Path, tolerate_tail: bool) -> list[dict]:
    lines = path.read_text().splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "step" not in row:
                raise ValueError("not a row with a step")
        except ValueError as exc:
            if number == len(lines) and tolerate_tail:  # the row a kill interrupted
                log.warning("%s: line %d is cut short (the run was killed while writing it); dropped", path, number)
                break
            raise DataFormatError(path, f"line {number} is not a run-log row ({exc})") from None
        rows.append(row)
    return rows


def read_run_log(path: str | Path) -> pd.DataFrame:
    """A run log as a table, one row per line (columns: event, step, and what each event holds)."""
    return pd.DataFrame(_rows(Path(path), tolerate_tail=True))
