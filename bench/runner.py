"""The benchmark matrix: backbones x initialisations x tasks x seeds, one record per run.

Runs whose record says ``ok`` are skipped (a crashed matrix resumes where it stopped; ``overwrite`` redoes
them). Missing data gives a ``skipped`` record naming the expected path, a task without a pipeline a
``not-runnable`` one, an exception a ``failed`` one with the error, and the matrix goes on. Executors:
``local`` (in this process, or ``workers`` processes) and ``slurm`` through submitit (``cluster="debug"``
runs submitit's in-process executor, which the tests use).

The ``ponder`` initialisation pre-trains the backbone first (per domain: indoor on the root's ScanNet
RGB-D frames, outdoor on its SemanticKITTI sweeps) unless that export already exists in the results folder.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from bench.records import RunRecord, data_fingerprint, git_sha, package_versions, record_path, write_record
from tasks.spec import get_task, list_tasks

log = logging.getLogger(__name__)

PRETRAIN_DATA = {"indoor": "scannet", "outdoor": "semantickitti"}


@dataclass(frozen=True)
class RunSpec:
    task: str
    backbone: str
    init: str  # scratch | ponder | a label for init_path
    seed: int
    data_roots: tuple[str, ...]
    results: str
    preset: str = "mini"
    init_path: str | None = None
    linear_probe: bool = False
    device: str = "cpu"
    tta: bool = False

    @property
    def protocol(self) -> str:
        spec = get_task(self.task)
        return spec.protocol + ("+linear-probe" if self.linear_probe else "") + ("+tta" if self.tta else "")

    def record_path(self) -> Path:
        spec = get_task(self.task)
        return record_path(Path(self.results), spec.id, spec.version, self.backbone, self.init, self.protocol,
                           self.seed)


def data_root_for(dataset: str, roots: tuple[str, ...]) -> Path | None:
    """The first root that holds ``dataset``."""
    return next((Path(r) for r in roots if (Path(r) / dataset).is_dir()), None)


def expand(backbones: list[str], inits: list[str], tasks: str, seeds: list[int], data_roots: tuple[str, ...],
           results: str, preset: str = "mini", linear_probe: bool = False, device: str = "cpu", tta: bool = False
           ) -> list[RunSpec]:
    """Every combination, in a stable order; ``tasks`` is a comma-separated list of wildcard patterns."""
    task_ids = list_tasks(tasks)
    if not task_ids:
        raise ValueError(f"no task matches {tasks!r}")
    runs = []
    for task in task_ids:
        for backbone in backbones:
            for init in inits:
                label, path = (init, None) if init in ("scratch", "ponder") else (_label(init), init)
                for seed in seeds:
                    runs.append(RunSpec(task, backbone, label, seed, tuple(data_roots), results, preset, path,
                                        linear_probe, device, tta))
    return runs


def _label(path: str) -> str:
    p = Path(path)
    return f"export:{(p if p.is_dir() else p.parent).name}"


class _PeakRSS:
    """Peak resident memory of this process while a run lasts (sampled every 20 ms)."""

    def __enter__(self) -> _PeakRSS:
        self.peak, self._stop = self._rss(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _rss() -> int:
        try:
            return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return 0

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def execute(run: RunSpec) -> dict:
    """Run one cell of the matrix and write its record; returns the record as a dict. Never raises."""
    from bench.finetune import FINETUNE_PRESETS, NotApplicable, finetune

    spec = get_task(run.task)
    record = RunRecord(task=spec.id, task_version=spec.version, backbone=run.backbone, init=run.init,
                       protocol=run.protocol, seed=run.seed, status="failed", main_score=spec.main_score,
                       higher_is_better=spec.higher_is_better, init_path=run.init_path, finetune_preset=run.preset,
                       git_sha=git_sha(), packages=package_versions())
    root = data_root_for(spec.dataset, run.data_roots)
    if not spec.runnable:
        record.status, record.error = "not-runnable", spec.note
    elif root is None:
        record.status = "skipped"
        record.expected_path = " or ".join(str(Path(r) / spec.dataset) for r in run.data_roots)
        record.error = f"data not found: {record.expected_path}"
    else:
        record.data_root, record.data_fingerprint = str(root), data_fingerprint(root / spec.dataset)
        start = time.perf_counter()
        try:
            with _PeakRSS() as memory:
                recipe = replace(FINETUNE_PRESETS[run.preset], tta=run.tta)
                result = finetune(spec, run.backbone, root, run.seed, recipe, run.init_path, run.linear_probe,
                                  run.device)
            record.status = "ok"
            record.per_class = result.pop("per_class_iou")
            record.metrics = result
            record.main_value = result[spec.main_score]
            record.init_sha256 = result.get("init_sha256")
            record.peak_rss_bytes = memory.peak
        except NotApplicable as exc:
            record.status, record.error = "skipped", str(exc)
        except Exception:  # noqa: BLE001  (a failing run is recorded; the matrix goes on)
            record.status, record.error = "failed", traceback.format_exc()[-4000:]
        record.wall_s = time.perf_counter() - start
    write_record(Path(run.results), record)
    return asdict(record)


def _finished(run: RunSpec) -> dict | None:
    path = run.record_path()
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if record.get("status") in ("ok", "not-runnable") else None


def ensure_pretrained(backbone: str, domain: str, data_roots: tuple[str, ...], results: str, preset: str,
                      device: str = "cpu") -> Path:
    """The export of ``backbone`` pre-trained for ``domain`` (made now, or resumed, if it is not there yet)."""
    from bench.pretrain import Pretrainer
    from bench.recipes import get_recipe

    run_dir = Path(results) / "runs" / "pretrain" / f"{domain}-{backbone.replace(':', '_')}-{preset}"
    export = run_dir / "backbone.pt"
    if export.is_file() and (run_dir / "backbone.json").is_file():
        return export
    root = data_root_for(PRETRAIN_DATA[domain], data_roots)
    if root is None:
        raise FileNotFoundError(f"no {PRETRAIN_DATA[domain]}/ under {', '.join(data_roots)} to pre-train on")
    overrides = {"reference": [], "mini": [], "tiny": ["epochs=1", "max_points=3000", "render_every=0"]}[preset]
    recipe = get_recipe(domain if preset == "reference" else f"{domain}-mini", [f"backbone={backbone}", *overrides])
    log.info("pre-training %s (%s) on %s", backbone, domain, root / PRETRAIN_DATA[domain])
    Pretrainer(recipe, root / PRETRAIN_DATA[domain], run_dir, device, resume=True, progress=False).run()
    return export


def run_matrix(runs: list[RunSpec], executor: str = "local", workers: int = 1, overwrite: bool = False,
               slurm: dict | None = None, progress: bool = True) -> list[dict]:
    """Execute the runs that are not finished yet; returns every run's record (finished ones included)."""
    done = {} if overwrite else {run: rec for run in runs if (rec := _finished(run)) is not None}
    todo = [_with_pretrained(run) for run in runs if run not in done]
    if executor == "local" and workers <= 1:
        fresh = [execute(run) for run in tqdm(todo, desc="runs", disable=not progress)]
    elif executor == "local":
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_worker_init,
                                 initargs=(workers,)) as pool:
            fresh = list(tqdm(pool.map(execute, todo), total=len(todo), desc="runs", disable=not progress))
    elif executor in ("slurm", "debug"):
        import submitit

        options = dict(slurm or {})
        folder = Path(runs[0].results) / "slurm" if runs else Path("slurm")
        pool = submitit.AutoExecutor(folder=folder, cluster="debug" if executor == "debug" else None)
        pool.update_parameters(**options)
        jobs = [pool.submit(execute, run) for run in todo]
        fresh = [job.result() for job in jobs]
    else:
        raise ValueError(f"executor must be local, slurm or debug, got {executor!r}")
    by_run = dict(done)
    by_run.update(zip((_without_path(r) for r in todo), fresh, strict=True))
    return [by_run[run] for run in runs]


def _with_pretrained(run: RunSpec) -> RunSpec:
    """Resolve the ``ponder`` initialisation to an export path (pre-training it if needed)."""
    if run.init != "ponder" or run.init_path:
        return run
    spec = get_task(run.task)
    if not spec.runnable or spec.task_type != "semseg":
        return run
    try:
        path = ensure_pretrained(run.backbone, spec.domain, run.data_roots, run.results, run.preset, run.device)
    except Exception as exc:  # noqa: BLE001  (the runs that needed it are recorded as failed)
        log.warning("pre-training for %s failed: %s", run.backbone, exc)
        return replace(run, init_path=f"<pre-training failed: {exc}>")
    return replace(run, init_path=str(path))


def _without_path(run: RunSpec) -> RunSpec:
    return replace(run, init_path=None) if run.init == "ponder" else run


def _worker_init(workers: int) -> None:
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
