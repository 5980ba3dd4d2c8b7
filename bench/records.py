"""Run records: one JSON file per (task, backbone, init, protocol, seed), written atomically.

The schema is versioned (``schema``); the leaderboard reads only records it understands. ``status`` is
``ok`` (metrics present), ``failed`` (``error`` holds the traceback's last lines), ``skipped`` (data missing
at ``expected_path``, or the combination does not apply) or ``not-runnable`` (a task without a pipeline yet).
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tasks.io import atomic_write

SCHEMA = 1
PACKAGES = ("ponderbench", "torch", "spconv-cu120", "timm", "numpy", "nuscenes-devkit")


@dataclass
class RunRecord:
    task: str
    task_version: int
    backbone: str
    init: str  # "scratch", "ponder" or a label of an export path
    protocol: str  # the task's protocol, + "+linear-probe" / "+tta" when used
    seed: int
    status: str
    main_score: str
    main_value: float | None = None
    higher_is_better: bool = True
    metrics: dict = field(default_factory=dict)
    per_class: dict = field(default_factory=dict)
    init_path: str | None = None
    init_sha256: str | None = None
    finetune_preset: str = "mini"
    data_root: str = ""
    data_fingerprint: str | None = None
    expected_path: str | None = None
    error: str | None = None
    wall_s: float | None = None
    peak_rss_bytes: int | None = None
    git_sha: str = ""
    packages: dict = field(default_factory=dict)
    python: str = field(default_factory=platform.python_version)
    schema: int = SCHEMA

    def path(self, results: Path) -> Path:
        return record_path(results, self.task, self.task_version, self.backbone, self.init, self.protocol, self.seed)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in text)


def record_path(results: Path, task: str, task_version: int, backbone: str, init: str, protocol: str, seed: int
                ) -> Path:
    return (Path(results) / "runs" / "records" / f"{task}@{task_version}" / _safe(backbone) / _safe(init)
            / _safe(protocol) / f"seed{seed}.json")


def write_record(results: Path, record: RunRecord) -> Path:
    path = record.path(results)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(asdict(record), indent=1, sort_keys=True)))
    return path


def read_records(results: Path) -> list[dict]:
    """Every record under ``results`` with a schema this version understands (others are reported)."""
    records = []
    for path in sorted((Path(results) / "runs" / "records").rglob("*.json")):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a valid run record ({exc})") from exc
        if record.get("schema") != SCHEMA:
            raise ValueError(f"{path}: record schema {record.get('schema')} is not {SCHEMA}")
        record["_path"] = str(path)
        records.append(record)
    return records


def package_versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def data_fingerprint(folder: Path) -> str:
    """sha256 over the sorted relative paths and sizes of the dataset's files (cheap; catches most changes)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder)}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()
