"""Run records as pandas DataFrames: the public way to make tables of your own (the leaderboard is built on it).

:func:`load_results` gives one row per run with flat, typed columns; :func:`per_class` gives the per-class
scores as a long table. Both merge several results folders (synced from several machines or clusters):
the same run in two folders counts once when the records are identical, and is an error naming both files
when they differ. Records of two versions of one task are an error too (their numbers are not comparable).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd

from bench.matrix.records import RecordError, RunRecord, read_records

KEY = ["task", "version", "backbone", "init", "protocol", "seed"]
# the fixed columns of load_results and their dtypes; every metric follows as a column of its own
COLUMNS: dict[str, str] = {
    "task": "string", "version": "int64", "backbone": "string", "init": "string", "protocol": "string",
    "seed": "int64", "status": "string", "preset": "string", "main_score": "string", "main_value": "float64",
    "higher_is_better": "bool", "wall_s": "float64", "peak_rss_bytes": "Int64", "git_sha": "string",
    "data_fingerprint": "string", "data_source": "string", "init_sha256": "string", "error": "string",
    "path": "string",
}


class ResultsError(ValueError):
    """Records that cannot be combined without guessing: conflicting copies of a run, mixed task versions, or an
    unreadable record; the message names the files."""


def _key(record: RunRecord) -> tuple:
    return (record.task, record.task_version, record.backbone, record.init, record.protocol, record.seed)


def gather(roots: tuple[str | Path, ...]) -> list[tuple[Path, RunRecord]]:
    """Every run's record under ``roots`` (each a results folder), once, in a stable order."""
    if not roots:
        raise ResultsError("no results folder given")
    seen: dict[tuple, tuple[Path, RunRecord]] = {}
    for root in roots:
        try:
            found = read_records(Path(root))
        except RecordError as exc:
            raise ResultsError(str(exc)) from exc
        for path, record in found:
            key = _key(record)
            if key in seen and asdict(seen[key][1]) != asdict(record):
                raise ResultsError(f"{seen[key][0]} and {path} hold the same run ({', '.join(map(str, key))}) with "
                                   "different content; remove one of them")
            seen.setdefault(key, (path, record))
    pairs = [seen[k] for k in sorted(seen, key=lambda k: tuple(map(str, k)))]
    _check_versions(pairs)
    return pairs


def _check_versions(pairs: list[tuple[Path, RunRecord]]) -> None:
    versions: dict[str, dict[int, Path]] = {}
    for path, record in pairs:
        versions.setdefault(record.task, {}).setdefault(record.task_version, path)
    for task, found in sorted(versions.items()):
        if len(found) > 1:
            files = ", ".join(f"v{v}: {p}" for v, p in sorted(found.items()))
            raise ResultsError(f"task {task} has records of versions {sorted(found)} ({files}); re-run or move the "
                               "old records before tabulating (numbers of different versions are not comparable)")


def load_results(*roots: str | Path) -> pd.DataFrame:
    """One row per run record under the results folders ``roots``.

    Columns, in this order: ``task, version, backbone, init, protocol, seed`` (the run key), ``status``,
    ``preset`` (the fine-tuning preset), ``main_score`` and ``main_value`` (a fraction, e.g. 0.42 mIoU),
    ``higher_is_better``, ``wall_s``, ``peak_rss_bytes``, ``git_sha``, ``data_fingerprint``, ``data_source``
    (generated, real, or empty for records that predate it), ``init_sha256``, ``error``, ``path`` (the record
    file); then every metric and run fact of the records as a column of its own, sorted by name (``mIoU``,
    ``mAcc``, ``allAcc``, ``steps``, ``train_scenes`` ...; empty where a run has none).
    """
    rows = []
    for path, r in gather(roots):
        row = {"task": r.task, "version": r.task_version, "backbone": r.backbone, "init": r.init,
               "protocol": r.protocol, "seed": r.seed, "status": r.status, "preset": r.finetune_preset,
               "main_score": r.main_score, "main_value": r.main_value, "higher_is_better": r.higher_is_better,
               "wall_s": r.wall_s, "peak_rss_bytes": r.peak_rss_bytes, "git_sha": r.git_sha,
               "data_fingerprint": r.data_fingerprint, "data_source": r.data_source, "init_sha256": r.init_sha256,
               "error": r.error,
               "path": str(path)}
        clash = sorted((set(r.metrics) | set(r.facts)) & set(COLUMNS) | set(r.metrics) & set(r.facts))
        if clash:
            raise ResultsError(f"{path}: metrics or facts {clash} clash with fixed columns or with each other")
        rows.append({**row, **r.metrics, **r.facts})
    metrics = sorted({k for row in rows for k in row} - set(COLUMNS))
    frame = pd.DataFrame(rows, columns=[*COLUMNS, *metrics])
    frame = frame.astype(COLUMNS)
    for name in metrics:
        values = frame[name].dropna()
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        frame[name] = frame[name].astype("float64") if numeric else frame[name].astype("string")
    return frame


def per_class(*roots: str | Path) -> pd.DataFrame:
    """The per-class scores of the ``ok`` runs as a long table: the run key, ``class``, ``score`` (NaN where a
    class is absent from both the ground truth and the predictions)."""
    rows = [{"task": r.task, "version": r.task_version, "backbone": r.backbone, "init": r.init,
             "protocol": r.protocol, "seed": r.seed, "class": name, "score": score}
            for _, r in gather(roots) if r.status == "ok" for name, score in r.per_class.items()]
    frame = pd.DataFrame(rows, columns=[*KEY, "class", "score"])
    return frame.astype({**{k: COLUMNS[k] for k in KEY}, "class": "string", "score": "float64"})
