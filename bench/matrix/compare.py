"""Comparing two backbones: scores side by side with paired per-seed differences, and what each costs.

A difference is called beyond the seed noise when a paired t-test over the seeds both backbones ran gives
p < 0.05 (|mean difference| > t(0.975, n-1) x sd / sqrt(n)); with one seed nothing is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from tasks.io import atomic_write


def paired(frame: pd.DataFrame, new: str, against: str, column: str = "backbone") -> pd.DataFrame:
    """Per (task, the other of backbone/init, protocol): ``new`` and ``against`` (values of ``column``) as
    mean ± std, and the paired differences ``new - against`` over the seeds both ran.

    ``frame`` is :func:`bench.matrix.results.load_results`' frame; scores in percent. ``column="backbone"``
    compares two backbones (``ponderbench compare``), ``column="init"`` two initialisations (the leaderboard's
    gain of pre-training).
    """
    other = "init" if column == "backbone" else "backbone"
    ok = frame[(frame.status == "ok") & frame[column].isin([new, against])].assign(
        score=lambda d: d.main_value.astype(float) * 100)
    rows = []
    for (task, second, protocol), group in ok.groupby(["task", other, "protocol"], sort=True):
        by = group.pivot_table(index="seed", columns=column, values="score")
        row = {"task": task, other: second, "protocol": protocol}
        for name in (new, against):
            row[name] = _mean_std(by[name].dropna() if name in by else pd.Series(dtype=float))
        both = by.dropna() if {new, against} <= set(by.columns) else by.iloc[0:0]
        diff = (both[new] - both[against]) if len(both) else pd.Series(dtype=float)
        row["difference per seed"] = ", ".join(f"{d:+.1f}" for d in diff) or "–"
        row["mean difference"] = _mean_std(diff, signed=True)
        row["seeds"] = len(diff)
        row["beyond seed noise"] = _beyond_noise(diff.to_numpy())
        rows.append(row)
    columns = ["task", other, "protocol", new, against, "difference per seed", "mean difference", "seeds",
               "beyond seed noise"]
    return pd.DataFrame(rows, columns=columns)


def _mean_std(values: pd.Series, signed: bool = False) -> str:
    if len(values) == 0:
        return "–"
    mean = f"{values.mean():+.1f}" if signed else f"{values.mean():.1f}"
    return mean if len(values) < 2 else f"{mean} ± {values.std():.1f}"


def _beyond_noise(diff: np.ndarray) -> str:
    if len(diff) < 2:
        return "n/a (one seed)"
    sd = diff.std(ddof=1)
    if sd == 0:
        return "yes" if diff.mean() != 0 else "no"
    bound = stats.t.ppf(0.975, len(diff) - 1) * sd / np.sqrt(len(diff))
    return "yes" if abs(diff.mean()) > bound else "no"


def write_comparison(tables: dict[str, pd.DataFrame], out: Path) -> list[Path]:
    """Each table as Markdown and CSV in ``out``."""
    written = []
    for name, table in tables.items():
        for suffix, text in ((".md", table.to_markdown(index=False)), (".csv", table.to_csv(index=False))):
            path = out / f"{name}{suffix}"
            atomic_write(path, lambda tmp, text=text: tmp.write_text(text.rstrip("\n") + "\n"))
            written.append(path)
    return written
