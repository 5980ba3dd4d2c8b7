"""Leaderboard tables from the run records (pure pandas): deterministic, refusing ambiguous inputs.

Tables: one per task (backbone x init: mean +- std over seeds, n), an overall pivot (rows backbone + init,
columns tasks, main scores), the gain of ``ponder`` pre-training over ``scratch`` per backbone and task, and
the run status counts. The paper's numbers appear as a marked reference row, never as a result. Scores are
shown in percent. Each table is written as Markdown, CSV and HTML, plus a PNG per task and one overall.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.matrix.records import RecordError, read_records  # noqa: E402
from tasks.io import atomic_write  # noqa: E402
from tasks.spec import get_task  # noqa: E402

REFERENCE = "PonderV2 paper (reference)"
KEY = ["task", "task_version", "backbone", "init", "protocol", "seed"]


class LeaderboardError(ValueError):
    """Records that cannot be tabulated without guessing (mixed task versions, duplicates)."""


def records_frame(results: Path) -> pd.DataFrame:
    """One row per record: the run key, status and main score, and the record's path (``_path``)."""
    try:
        rows = read_records(results)
    except RecordError as exc:
        raise LeaderboardError(str(exc)) from exc
    columns = [*KEY, "status", "main_score", "main_value", "higher_is_better"]
    frame = pd.DataFrame([{**{k: getattr(r, k) for k in columns}, "_path": str(path)} for path, r in rows],
                         columns=[*columns, "_path"])
    check(frame)
    return frame


def check(frame: pd.DataFrame) -> None:
    versions = frame.groupby("task")["task_version"].nunique()
    mixed = versions[versions > 1]
    if len(mixed):
        task = mixed.index[0]
        found = sorted(frame.loc[frame.task == task, "task_version"].unique())
        raise LeaderboardError(f"task {task} has records of versions {found}; re-run or move the old records "
                               "before tabulating (numbers of different versions are not comparable)")
    dup = frame[frame.duplicated(KEY, keep=False)]
    if len(dup):
        raise LeaderboardError("duplicate records for one run: " + ", ".join(sorted(dup["_path"])))


def _fmt(mean: float, std: float, n: int) -> str:
    return f"{mean:.1f}" if n < 2 else f"{mean:.1f} ± {std:.1f}"


def build_tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    ok = frame[frame.status == "ok"].copy()
    ok["score"] = ok["main_value"].astype(float) * 100
    stats = (ok.groupby(["task", "backbone", "init", "protocol"], sort=True)["score"]
             .agg(mean="mean", std="std", n="count").reset_index())
    stats["std"] = stats["std"].fillna(0.0)
    tables: dict[str, pd.DataFrame] = {}
    for task, rows in stats.groupby("task", sort=True):
        spec = get_task(task)
        table = rows.assign(**{spec.main_score: [_fmt(m, s, n) for m, s, n in zip(rows["mean"], rows["std"],
                                                                                  rows["n"], strict=True)]})
        table = table[["backbone", "init", "protocol", spec.main_score, "mean", "std", "n"]]
        if spec.reference is not None:
            ref = pd.DataFrame([{"backbone": REFERENCE, "init": "", "protocol": spec.protocol,
                                 spec.main_score: f"{spec.reference:.1f}", "mean": spec.reference, "std": np.nan,
                                 "n": np.nan}])
            table = pd.concat([table, ref], ignore_index=True)
        tables[f"task_{task}"] = table.reset_index(drop=True)
    if len(stats):
        stats["cell"] = [_fmt(m, s, n) for m, s, n in zip(stats["mean"], stats["std"], stats["n"], strict=True)]
        stats["row"] = stats["backbone"] + " / " + stats["init"] + stats["protocol"].map(
            lambda p: f" ({p.split('+', 1)[1]})" if "+" in p else "")
        overall = stats.pivot(index="row", columns="task", values="cell").sort_index().fillna("–")
        refs = {t: f"{get_task(t).reference:.1f}" if get_task(t).reference is not None else "–"
                for t in overall.columns}
        overall.loc[REFERENCE] = pd.Series(refs)
        tables["overall"] = overall.reset_index().rename(columns={"row": "backbone / init"})
        means = stats.pivot_table(index=["backbone", "protocol", "task"], columns="init", values="mean")
        if {"scratch", "ponder"} <= set(means.columns):
            gain = (means["ponder"] - means["scratch"]).rename("gain").reset_index()
            gain["gain"] = gain["gain"].map(lambda g: "–" if np.isnan(g) else f"{round(g, 1) + 0.0:+.1f}")
            tables["gain"] = gain.pivot(index=["backbone", "protocol"], columns="task", values="gain").fillna(
                "–").reset_index()
    status = frame.groupby(["task", "status"]).size().unstack(fill_value=0).reset_index()
    tables["status"] = status
    return tables


def write_tables(tables: dict[str, pd.DataFrame], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in sorted(tables.items()):
        shown = table.drop(columns=[c for c in ("mean", "std") if c in table.columns and name != "status"])
        for suffix, text in ((".md", shown.to_markdown(index=False)), (".csv", table.to_csv(index=False)),
                             (".html", shown.to_html(index=False, na_rep="–"))):
            path = out / f"{name}{suffix}"
            atomic_write(path, lambda tmp, text=text: tmp.write_text(text + ("\n" if not text.endswith("\n") else "")))
            written.append(path)
        if name.startswith("task_"):
            written.append(_plot_task(table, out / f"{name}.png", name[5:]))
    return written


def _plot_task(table: pd.DataFrame, path: Path, task: str) -> Path:
    rows = table[table.backbone != REFERENCE]
    labels = [f"{b}\n{i}" for b, i in zip(rows.backbone, rows.init, strict=True)]
    fig, ax = plt.subplots(figsize=(max(3.0, 1.2 * len(rows) + 1), 3))
    ax.bar(range(len(rows)), rows["mean"], yerr=rows["std"].fillna(0.0), color="#4477aa", capsize=3)
    ref = table[table.backbone == REFERENCE]
    if len(ref):
        ax.axhline(float(ref["mean"].iloc[0]), color="#cc6677", ls="--", lw=1, label=REFERENCE)
        ax.legend(fontsize=7)
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel(f"{get_task(task).main_score} (%)")
    ax.set_title(task, fontsize=9)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight",
                                               metadata={"Software": None}))
    plt.close(fig)
    return path


def leaderboard(results: Path, out: Path | None = None) -> dict[str, pd.DataFrame]:
    tables = build_tables(records_frame(results))
    write_tables(tables, out or Path(results) / "tables")
    return tables
