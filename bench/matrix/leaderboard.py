"""Leaderboard tables from the run records (pure pandas over :func:`bench.matrix.results.load_results`).

Tables: one per task (backbone x init: mean +- std over seeds, n), an overall pivot (rows backbone + init,
columns tasks, main scores), the gain of pre-training (``ponder`` or an export) over ``scratch`` (or, probed,
over frozen ``random`` weights) per backbone, protocol and task (paired over seeds, marked ``*`` where it exceeds
the seed noise), and the run status counts. A paper number is a marked target row only over runs on real data
(``data_source``); over the generated mini suite it is a footnote. The ``paper`` table gives each its setup.
Scores are shown in percent. Each table is written as Markdown and CSV, plus a PNG per task, and all of them on
one self-contained HTML page, ``index.html`` (:mod:`bench.matrix.report`; ``formats`` picks).
Output is deterministic: fixed column order and dtypes, so that diffs between runs are readable.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.matrix.compare import paired  # noqa: E402
from bench.matrix.records import Status  # noqa: E402
from bench.matrix.report import shown, write_report  # noqa: E402
from bench.matrix.results import ResultsError, load_results  # noqa: E402
from tasks.io import atomic_write  # noqa: E402
from tasks.metrics.lowlevel import DISPLAY  # noqa: E402
from tasks.spec import get_task, list_tasks  # noqa: E402

REFERENCE = "PonderV2 paper (target)"
BASELINES = ("scratch", "random")  # what ponder is compared with: fine-tuned from random init | frozen random init
FORMATS = ("md", "csv", "html", "png")
LeaderboardError = ResultsError  # what the leaderboard refuses is what load_results refuses


def _fmt(mean: float, std: float, n: int, decimals: int = 1) -> str:
    return f"{mean:.{decimals}f}" if n < 2 else f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def _stats(ok: pd.DataFrame, column: str) -> pd.DataFrame:
    """Mean, sd and count over seeds of ``column`` (a fraction, shown in %) per task, backbone, init, protocol.
    (The low-level tasks, whose PSNR is in dB, have their own table: :func:`lowlevel_table`.)"""
    rows = ok.dropna(subset=[column]).assign(score=lambda d: d[column].astype(float) * 100)
    stats = (rows.groupby(["task", "backbone", "init", "protocol"], sort=True)["score"]
             .agg(mean="mean", std="std", n="count").reset_index())
    stats["std"] = stats["std"].fillna(0.0)
    stats["n"] = stats["n"].astype("Int64")
    stats["cell"] = [_fmt(m, s, n) for m, s, n in zip(stats["mean"], stats["std"], stats["n"], strict=True)]
    return stats


def build_tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The tables from :func:`load_results`' frame. A task's ``beside`` metrics (detection's mAP beside its NDS)
    get columns of their own, in its table and in the overall one. The low-level tasks (novel views,
    reconstruction) have a table of their own, ``lowlevel``, instead of columns in the overall and gain tables."""
    lowlevel = frame["task"].map(lambda t: get_task(t).table == "lowlevel").astype(bool)
    low = lowlevel_table(frame[lowlevel & (frame.status == "ok")]) if lowlevel.any() else None
    frame_all, frame = frame, frame[~lowlevel]
    ok = frame[frame.status == "ok"].copy()
    stats = _stats(ok, "main_value")
    key = ["task", "backbone", "init", "protocol"]
    tables: dict[str, pd.DataFrame] = {}
    for task, rows in stats.groupby("task", sort=True):
        spec = get_task(task)
        table = rows.rename(columns={"cell": spec.main_score})
        for metric in spec.beside:
            table = table.merge(_stats(ok[ok.task == task], metric)[[*key, "cell"]].rename(columns={"cell": metric}),
                                on=key, how="left")
        table = table[["backbone", "init", "protocol", spec.main_score, *spec.beside, "mean", "std", "n"]]
        if spec.paper is not None and on_real_data(ok[ok.task == task]):
            ref = pd.DataFrame([{"backbone": REFERENCE, "init": "", "protocol": spec.protocol,
                                 spec.main_score: f"{spec.reference:.1f}", "mean": spec.reference, "std": np.nan,
                                 "n": pd.NA}]).astype({"n": "Int64"})
            table = pd.concat([table, ref], ignore_index=True)
        tables[f"task_{task}"] = table.reset_index(drop=True)
    if len(stats):
        cells = [stats]
        for task in stats["task"].unique():
            cells += [_stats(ok[ok.task == task], metric).assign(task=f"{task} {metric}")
                      for metric in get_task(task).beside]
        stats = pd.concat(cells, ignore_index=True)
        stats["row"] = stats["backbone"] + " / " + stats["init"] + stats["protocol"].map(
            lambda p: f" ({p.split('+', 1)[1]})" if "+" in p else "")
        overall = stats.pivot(index="row", columns="task", values="cell").sort_index().fillna("–")
        targets = {t: f"{get_task(t).reference:.1f}" for t in overall.columns  # "<task> mAP" columns have none
                   if t in set(list_tasks()) and get_task(t).paper is not None and on_real_data(ok[ok.task == t])}
        if targets:
            overall.loc[REFERENCE] = pd.Series({t: targets.get(t, "–") for t in overall.columns})
        tables["overall"] = overall.reset_index().rename(columns={"row": "backbone / init"})
        if set(stats["init"]) - set(BASELINES) and set(BASELINES) & set(stats["init"]):
            tables["gain"] = gain_table(frame)
    if low is not None:
        tables["lowlevel"] = low
    papers = paper_table(frame[frame.status == "ok"])
    if len(papers):
        tables["paper"] = papers
    status = frame_all.groupby(["task", "status"]).size().unstack(fill_value=0)
    tables["status"] = status.reindex(columns=list(get_args(Status)), fill_value=0).astype("int64").reset_index()
    return tables


def on_real_data(runs: pd.DataFrame) -> bool:
    """Whether every one of these runs read real data (not the generator's, and not a record that predates the
    field)."""
    return len(runs) > 0 and bool(runs["data_source"].eq("real").fillna(False).all())


def paper_table(ok: pd.DataFrame) -> pd.DataFrame:
    """The paper number of each task in ``ok`` that has one: its setup, its source, and how the tables show it (a
    target over real data, a footnote over generated data)."""
    rows = [{"task": task, "paper": f"{spec.paper.value:.1f}", "setup": spec.paper.setup, "source": spec.paper.source,
             "shown as": "target" if on_real_data(runs) else "footnote (generated data)"}
            for task, runs in ok.groupby("task", sort=True) if (spec := get_task(task)).paper is not None]
    return pd.DataFrame(rows, columns=["task", "paper", "setup", "source", "shown as"])


def lowlevel_table(ok: pd.DataFrame) -> pd.DataFrame:
    """One row per low-level task, backbone and init: every metric's mean ± sd over seeds, in its unit."""
    rows = []
    for (task, backbone, init), runs in ok.groupby(["task", "backbone", "init"], sort=True):
        row = {"task": task, "backbone": backbone, "init": init, "n": len(runs)}
        for metric in get_task(task).metrics:
            factor, unit, decimals = DISPLAY[metric]
            values = runs[metric].astype(float) * factor
            row[f"{metric} ({unit})" if unit else metric] = _fmt(values.mean(), values.std(), len(values), decimals)
        rows.append(row)
    columns = ["task", "backbone", "init", "n"]
    table = pd.DataFrame(rows)
    return table[columns + [c for c in table.columns if c not in columns]].fillna("–") if rows else table


def gain_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Each pre-trained init (``ponder``, or an export path's label) minus the baseline of its protocol, per
    backbone, protocol and task. The baseline is ``scratch`` when fine-tuning and ``random`` (frozen random
    weights) when probing. Cells: the mean paired difference over seeds ± its sd, with ``*`` where it exceeds
    the seed noise (paired t-test, p < 0.05; see :mod:`bench.matrix.compare`)."""
    ok = frame[frame.status == "ok"]
    trained = sorted(set(ok["init"]) - set(BASELINES))
    if not trained:
        return pd.DataFrame(columns=["backbone", "init", "protocol", "against"])
    pairs = pd.concat([paired(ok, init, base, column="init").assign(init=init, against=base)
                       for init in trained for base in BASELINES])
    pairs = pairs[pairs.seeds > 0].assign(
        cell=lambda d: d["mean difference"] + d["beyond seed noise"].map(lambda b: " *" if b == "yes" else ""))
    table = pairs.pivot(index=["backbone", "init", "protocol", "against"], columns="task", values="cell")
    return table.fillna("–").reset_index()


def write_tables(tables: dict[str, pd.DataFrame], out: Path, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Each table as ``formats`` (md, csv; png plots the per-task tables) in ``out``; ``html`` is the one page
    of :func:`bench.matrix.report.write_report`, written by :func:`leaderboard`."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown table formats {unknown}; choose from {', '.join(FORMATS)}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in sorted(tables.items()):
        for suffix in (f for f in ("md", "csv") if f in formats):
            text = _render(suffix, table)
            path = out / f"{name}.{suffix}"
            atomic_write(path, lambda tmp, text=text: tmp.write_text(text + ("\n" if not text.endswith("\n") else "")))
            written.append(path)
        if name.startswith("task_") and "png" in formats:
            written.append(_plot_task(table, out / f"{name}.png", name[5:]))
    return written


def _render(fmt: str, table: pd.DataFrame) -> str:
    return shown(table).to_markdown(index=False) if fmt == "md" else table.to_csv(index=False)


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


def leaderboard(results: Path | tuple[Path, ...], out: Path | None = None, formats: tuple[str, ...] = FORMATS
                ) -> dict[str, pd.DataFrame]:
    """Tables from the records of one results folder or several (merged), written to ``out`` (default: the first
    folder's ``tables/``)."""
    roots = (results,) if isinstance(results, str | Path) else tuple(results)
    frame = load_results(*roots)
    tables = build_tables(frame)
    folder = Path(out) if out else Path(roots[0]) / "tables"
    write_tables(tables, folder, formats)
    if "html" in formats:
        write_report(tables, frame, folder)
    return tables
