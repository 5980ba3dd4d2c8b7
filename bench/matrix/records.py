"""Run records: one JSON file per (task, backbone, init, protocol, seed), written atomically.

The schema is versioned (``schema``): :meth:`RunRecord.from_json` reads a record back typed, and refuses one
of another schema, with unknown or missing fields, or with a wrong type, naming its path. ``status`` is
``ok`` (metrics present), ``failed`` (``error`` holds the traceback's last lines), ``skipped`` (data missing
at ``expected_path``), ``not-applicable`` (the combination cannot run, e.g. a 2D backbone on a point-cloud
task) or ``not-runnable`` (a task without a pipeline yet).
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import types
from dataclasses import asdict, dataclass, field, fields
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from tasks.io import atomic_write

SCHEMA = 3  # 2: resolved fine-tuning recipe, status not-applicable, typed reading; 3: run facts apart
# what schema 2 kept among the metrics and schema 3 keeps among the facts (a schema-2 record is read as schema 3)
FACTS_OF_SCHEMA_2 = ("train_scenes", "eval_scenes", "steps", "final_train_loss", "resumed_from_step", "world_size",
                     "ranks_in_sync", "backbones", "image_init_sha256", "image_init_path")
PACKAGES = ("ponderbench", "torch", "spconv-cu120", "timm", "numpy", "nuscenes-devkit")

Status = Literal["ok", "failed", "skipped", "not-applicable", "not-runnable"]
FINISHED: tuple[Status, ...] = ("ok", "not-runnable", "not-applicable")  # a re-run would give the same record
# what the runner reports for a run another process has claimed: a status of the command's summary, never written
RUNNING_ELSEWHERE = "running-elsewhere"


class RecordError(ValueError):
    """A record file that cannot be read as a run record of this schema; the message starts with its path."""


@dataclass(kw_only=True)
class RunRecord:
    task: str
    task_version: int
    backbone: str
    init: str  # "scratch", "ponder" or a label of an export path
    protocol: str  # the task's protocol, + "+linear-probe" / "+tta" when used
    seed: int
    status: Status
    main_score: str
    main_value: float | None = None
    higher_is_better: bool = True
    metrics: dict = field(default_factory=dict)  # the scores (and other scalar outputs) of the evaluation
    per_class: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)  # what the run did: steps, scenes, final loss, resume, processes
    init_path: str | None = None
    init_sha256: str | None = None
    finetune_preset: str = "mini"
    finetune_recipe: dict = field(default_factory=dict)  # the resolved recipe, overrides applied
    data_root: str = ""
    data_fingerprint: str | None = None
    data_source: str | None = None  # "generated" (this suite's generator) or "real"; None: not recorded (old)
    expected_path: str | None = None
    error: str | None = None
    wall_s: float | None = None
    peak_rss_bytes: int | None = None
    git_sha: str = ""
    packages: dict = field(default_factory=dict)
    plugins: dict = field(default_factory=dict)  # plugins (backbones, task types, tasks): {spec: {path, sha256}}
    python: str = field(default_factory=platform.python_version)
    schema: int = SCHEMA

    def path(self, results: Path) -> Path:
        return record_path(results, self.task, self.task_version, self.backbone, self.init, self.protocol, self.seed)

    @classmethod
    def from_json(cls, path: str | Path) -> RunRecord:
        """Read a record file back, checked against this schema."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RecordError(f"{path}: not a readable JSON run record ({exc})") from exc
        if not isinstance(raw, dict):
            raise RecordError(f"{path}: a run record is a JSON object, found {type(raw).__name__}")
        if raw.get("schema") == 2 and isinstance(raw.get("metrics"), dict):  # its run facts were among the metrics
            facts = {k: raw["metrics"].pop(k) for k in FACTS_OF_SCHEMA_2 if k in raw["metrics"]}
            raw = {**raw, "facts": facts, "schema": SCHEMA}
        if raw.get("schema") != SCHEMA:
            raise RecordError(f"{path}: record schema {raw.get('schema')!r} is not {SCHEMA} (written by another "
                              "version of ponderbench; re-run it or read it with that version)")
        hints = get_type_hints(cls)
        names = {f.name for f in fields(cls)}
        unknown, missing = sorted(set(raw) - names), sorted(n for n in ("task", "task_version", "backbone", "init",
                                                                        "protocol", "seed", "status", "main_score")
                                                             if n not in raw)
        if unknown or missing:
            raise RecordError(f"{path}: unknown fields {unknown} / missing fields {missing}")
        for name, value in raw.items():
            if not _conforms(value, hints[name]):
                raise RecordError(f"{path}: field {name!r} = {value!r} is not of type {hints[name]}")
        return cls(**raw)


def safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in text)


def record_path(results: Path, task: str, task_version: int, backbone: str, init: str, protocol: str, seed: int
                ) -> Path:
    return (Path(results) / "runs" / "records" / f"{task}@{task_version}" / safe_name(backbone) / safe_name(init)
            / safe_name(protocol) / f"seed{seed}.json")


def write_record(results: Path, record: RunRecord) -> Path:
    path = record.path(results)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(asdict(record), indent=1, sort_keys=True)))
    return path


def _conforms(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin is Literal:
        return value in get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_conforms(value, h) for h in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or hint)


def record_files(results: Path) -> list[Path]:
    """The record files under ``results`` (``seed<N>.json``; a writer's temporary ``.*`` files are not records)."""
    return sorted((Path(results) / "runs" / "records").rglob("seed*.json"))


def read_records(results: Path) -> list[tuple[Path, RunRecord]]:
    """Every record under ``results``, typed; the first unreadable one raises :class:`RecordError`."""
    return [(path, RunRecord.from_json(path)) for path in record_files(results)]


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
