"""One self-contained HTML page of the leaderboard: the page people open and share.

It holds the overall table, the gain of pre-training (paired over seeds, ``*`` beyond the seed noise), one table
per task (with the paper's number as a target over real data, as a footnote over generated data), every picture
embedded as a data URI (the per-task plots and the prediction pictures), the paper numbers with their setups, and
the provenance of each task's column: the commits, data fingerprints and presets of its runs.
Nothing outside the file is linked, so it can be mailed or attached as it is.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from tasks.io import atomic_write

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:80em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f0f0f0} h2{margin-top:1.6em} img{max-width:100%;margin:.3em 0}
.note{color:#555;font-size:.9em}
"""


def provenance(frame: pd.DataFrame) -> pd.DataFrame:
    """Per task: where its numbers come from (the ok runs' commits, data fingerprints, presets, run count)."""
    ok = frame[frame.status == "ok"]
    rows = []
    for task, runs in ok.groupby("task", sort=True):
        rows.append({"task": task, "version": int(runs.version.iloc[0]), "runs": len(runs),
                     "commits": ", ".join(sorted({str(s)[:10] for s in runs.git_sha.dropna()})) or "–",
                     "data fingerprint": ", ".join(sorted({str(s)[:12] for s in runs.data_fingerprint.dropna()})),
                     "presets": ", ".join(sorted(set(runs.preset.dropna()))),
                     "wall time (min)": round(float(runs.wall_s.sum()) / 60, 1)})
    return pd.DataFrame(rows, columns=["task", "version", "runs", "commits", "data fingerprint", "presets",
                                       "wall time (min)"])


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """A table as people read it: the numeric ``mean``/``std`` columns are in its formatted cells already."""
    return table.drop(columns=[c for c in ("mean", "std") if c in table.columns])


def _table(table: pd.DataFrame) -> str:
    return shown(table).to_html(index=False, na_rep="–", border=0)


def render_report(tables: dict[str, pd.DataFrame], frame: pd.DataFrame, pictures: dict[str, list[Path]]) -> str:
    """The page as a string; ``pictures`` maps a task to the PNGs shown under its table."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>PonderBench leaderboard</title>',
             f"<style>{STYLE}</style></head><body>", "<h1>PonderBench leaderboard</h1>",
             '<p class="note">Scores in %, mean ± sd over seeds. A paper number is a target only over runs on real '
             "data, and its setup (below) differs from the suite's; over generated data it is a footnote. The probe "
             "protocol (<code>+linear-probe</code>) trains a linear head on the frozen backbone; "
             "its baseline is <code>random</code>: the same architecture, randomly initialised, frozen.</p>"]
    if "overall" in tables:
        parts += ["<h2>Overall (main score per task)</h2>", _table(tables["overall"])]
    if "gain" in tables:
        parts += ["<h2>Gain of pre-training</h2>",
                  '<p class="note">a pre-trained init (ponder or an export) minus its protocol\'s baseline, paired per '
                  "seed: mean ± sd of the differences; "
                  "<b>*</b> where a paired t-test over the seeds gives p &lt; 0.05 (beyond the seed noise).</p>",
                  _table(tables["gain"])]
    if "lowlevel" in tables:
        parts += ["<h2>Low-level tasks: novel views and reconstruction</h2>",
                  '<p class="note">a Ponder model fitted per scene (from scratch or from the pre-trained backbone); '
                  "every metric in its own unit, mean ± sd over seeds.</p>", _table(tables["lowlevel"])]
        parts += [_image(p) for task in sorted(set(tables["lowlevel"]["task"])) for p in pictures.get(task, [])]
    footnotes = {} if "paper" not in tables else {
        row.task: f"PonderV2 paper: {row.paper} ({row.setup}; {row.source}). Not comparable with these runs: they "
                  "are on generated data." for row in tables["paper"].itertuples() if row[5] != "target"}
    for name in sorted(n for n in tables if n.startswith("task_")):
        task = name[5:]
        parts += [f'<h2 id="{html.escape(task)}">{html.escape(task)}</h2>', _table(tables[name])]
        if task in footnotes:
            parts.append(f'<p class="note">{html.escape(footnotes[task])}</p>')
        parts += [_image(p) for p in pictures.get(task, [])]
    if "paper" in tables:
        parts += ["<h2>Paper numbers and their setups</h2>", _table(tables["paper"])]
    parts += ["<h2>Provenance</h2>", _table(provenance(frame))]
    if "status" in tables:
        parts += ["<h2>Run status</h2>", _table(tables["status"])]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(tables: dict[str, pd.DataFrame], frame: pd.DataFrame, out: Path) -> Path:
    """``out/index.html``, with the per-task plots and the prediction pictures found in ``out``."""
    pictures: dict[str, list[Path]] = {}
    for name in (n for n in tables if n.startswith("task_")):
        task = name[5:]
        found = [out / f"{name}.png"] if (out / f"{name}.png").is_file() else []
        found += sorted((out / "predictions").glob(f"{task}_*.png"))
        pictures[task] = found
    path = out / "index.html"
    text = render_report(tables, frame, pictures)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path
