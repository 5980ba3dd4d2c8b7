"""The benchmark matrix: backbones x initialisations x tasks x seeds, one record per run.

Runs whose record is finished (``ok``, ``not-runnable``, ``not-applicable``) with the same resolved recipe are
skipped, so a crashed or killed matrix resumes where it stopped (``overwrite`` redoes them); an unreadable
record is redone. Missing data gives a ``skipped`` record naming the expected path, a task without a
pipeline a ``not-runnable`` one, a combination that cannot run a ``not-applicable`` one, an exception a
``failed`` one with the error, and the matrix goes on.

Several processes may share one results folder: each run is claimed before it starts (:mod:`bench.matrix.claims`),
a run claimed by another process is reported as ``running-elsewhere`` (not written), and a pre-training claimed
by another process is waited for.

The ``ponder`` initialisation needs a pre-trained export per (backbone, domain, preset). Those pre-trainings
run as jobs of the same executor as the fine-tunes (on Slurm: as jobs, never on the submitting node, before
the runs; locally: in the same pool, beside the runs that need no export); a pre-training that fails makes
the runs that needed it ``failed`` records with its error.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures import Executor as FuturesExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from tqdm import tqdm

from bench import distributed
from bench.matrix.claims import STALE_AFTER_S, Claim, claim, is_free, owner
from bench.matrix.records import (
    FINISHED,
    RUNNING_ELSEWHERE,
    RecordError,
    RunRecord,
    data_fingerprint,
    git_sha,
    package_versions,
    record_path,
    safe_name,
    write_record,
)
from bench.recipes import (
    FINETUNE_PRESETS,
    FinetuneRecipe,
    Mode,
    get_finetune_recipe,
    held_result_fields,
    result_fields,
)
from tasks.datasets import DATASETS, expected_path, pretrain_dataset
from tasks.io import save_text
from tasks.spec import TaskSpec, get_task, list_tasks
from tasks.synth.suite import is_generated

if TYPE_CHECKING:
    from bench.finetune.engine import Pretraining

log = logging.getLogger(__name__)

Executor = Literal["local", "slurm", "debug"]
MatrixProtocol = Literal["finetune", "probe"]  # train backbone + head | a linear head on the frozen backbone
PROTOCOLS: tuple[MatrixProtocol, ...] = get_args(MatrixProtocol)
INITS = ("scratch", "ponder", "random")  # random: the scratch init's name under the probe (frozen random weights)


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    task: str
    backbone: str
    init: str  # scratch | ponder | random (probe of the frozen random init) | a label for init_path
    seed: int
    data_roots: tuple[str, ...]
    results: str
    preset: str = "mini"
    overrides: tuple[str, ...] = ()  # key=value overrides of the fine-tuning recipe
    init_path: str | None = None
    image_init_path: str | None = None  # the image backbone's export (the fusion track's second backbone)
    pretrain_error: str | None = None  # set when the ponder init's pre-training failed
    linear_probe: bool = False
    device: str = "cpu"
    tta: bool = False
    plugins: tuple[str, ...] = ()  # plugins (backbones, task types, tasks), imported in whatever process runs it
    claim_timeout_s: float = STALE_AFTER_S  # a claim on this run without a heartbeat for this long is taken over
    # when the command started (time.time(); 0: when run_matrix is called): a record written since then, whatever
    # its status, is this command's result too (another process sharing the folder made it), so no run is done
    # twice by two commands
    started: float = field(default=0.0, compare=False)

    @property
    def protocol(self) -> str:
        spec = get_task(self.task)
        return spec.protocol + ("+linear-probe" if self.linear_probe else "") + ("+tta" if self.tta else "")

    def recipe(self) -> FinetuneRecipe:
        from bench.finetune.engine import check_task_settings

        recipe = get_finetune_recipe(self.preset, list(self.overrides), task=get_task(self.task))
        return check_task_settings(replace(recipe, tta=self.tta))

    def record_path(self) -> Path:
        spec = get_task(self.task)
        return record_path(Path(self.results), spec.id, spec.version, self.backbone, self.init, self.protocol,
                           self.seed)

    @property
    def name(self) -> str:
        return safe_name("_".join((self.task, self.backbone, self.init, self.protocol, f"seed{self.seed}")))

    def picture_path(self) -> Path:
        """Where a task type that draws its predictions puts the picture: beside the tables."""
        return Path(self.results) / "tables" / "predictions" / f"{self.name}.png"

    def artifacts_dir(self) -> Path:
        """Where a task type keeps what a run made beyond its record (detection: submission file, model)."""
        return Path(self.results) / "runs" / "finetune" / self.name


@dataclass(frozen=True, kw_only=True)
class PretrainJob:
    """One pre-training the ``ponder`` runs need: a 3D backbone on indoor or outdoor scenes, or a 2D one (image
    mode, on the RGB-D frames of ScanNet)."""

    backbone: str
    mode: Mode
    data_roots: tuple[str, ...]
    results: str
    preset: str
    device: str = "cpu"
    plugins: tuple[str, ...] = ()
    claim_timeout_s: float = STALE_AFTER_S
    started: float = field(default=0.0, compare=False)  # as RunSpec.started
    datasets: str = ""  # PPT pre-training over several datasets of the data root (PretrainRecipe.datasets)

    @property
    def mixed(self) -> list[tuple[str, int]]:
        """(dataset format, loop ratio) of a PPT pre-training; empty for one dataset."""
        from bench.finetune.multidataset import parse_datasets

        return parse_datasets(self.datasets, "datasets") if self.datasets else []

    @property
    def run_dir(self) -> Path:
        name = f"{self.mode}-{self.backbone.replace(':', '_')}-{self.preset}"
        name += "".join(f"-{n}{r}" for n, r in self.mixed)
        return Path(self.results) / "runs" / "pretrain" / name

    @property
    def folders(self) -> set[str]:
        """The dataset folders it reads."""
        return {DATASETS[n].folder for n, _ in self.mixed} or {pretrain_dataset(self.mode)}


def data_root_for(dataset: str, roots: tuple[str, ...]) -> Path | None:
    """The first root that holds ``dataset``."""
    return next((Path(r) for r in roots if (Path(r) / dataset).is_dir()), None)


def load_plugins(plugins: Sequence[str]) -> dict[str, dict[str, str]]:
    """Import plugins (idempotent); returns {spec: {path, sha256}} for the record."""
    from backbones.registry import load_plugin

    return {spec: {"path": (pl := load_plugin(spec)).path, "sha256": pl.sha256} for spec in plugins}


def _close(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
    return f"; did you mean {', '.join(close)}?" if close else ""


def resolve(*, backbones: Sequence[str], inits: Sequence[str], tasks: str,
            protocols: Sequence[str] = ("finetune",)) -> list[str]:
    """Check every name before any work: unknown backbones, task patterns that match nothing and unknown inits are
    errors (with close matches). Returns the task ids."""
    from backbones.registry import get_backbone_config

    if not backbones or not inits:
        raise ValueError("give at least one backbone and one init")
    for name in backbones:
        get_backbone_config(name)  # KeyError with close matches
    known = list_tasks()
    task_ids = []
    for pattern in (t.strip() for t in tasks.split(",") if t.strip()):
        found = list_tasks(pattern)
        if not found:
            raise ValueError(f"no task matches {pattern!r}{_close(pattern, known)} (see `ponderbench list tasks`)")
        task_ids += [t for t in found if t not in task_ids]
    if not task_ids:
        raise ValueError(f"no task matches {tasks!r}")
    from bench.finetune.exports import check_init

    for init in inits:
        if init not in INITS and not Path(init).exists():
            raise ValueError(f"init {init!r} is neither {', '.join(INITS)} nor an existing export or checkpoint"
                             f"{_close(init, list(INITS))}")
        if init not in INITS:
            check_init(init)  # an unreadable init fails the command now, not every run that would load it
    for protocol in protocols:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}"
                             f"{_close(protocol, list(PROTOCOLS))}")
    if not protocols:
        raise ValueError("give at least one protocol")
    return sorted(task_ids)


def expand(*, backbones: list[str], inits: list[str], tasks: str, seeds: list[int], data_roots: tuple[str, ...],
           results: str, preset: str = "mini", overrides: Sequence[str] = (),
           protocols: Sequence[str] = ("finetune",), device: str = "cpu", tta: bool = False,
           plugins: Sequence[str] = (), claim_timeout_s: float = STALE_AFTER_S) -> list[RunSpec]:
    """Every combination, in a stable order; ``tasks`` is a comma-separated list of wildcard patterns.

    Under the ``probe`` protocol the randomly initialised backbone is frozen, so its runs are named ``random``
    (``scratch`` and ``random`` name the same init: randomly initialised weights).

    Every name is resolved first (plugins imported, backbones, task patterns, inits, preset, overrides), so a typo
    stops the command before any work instead of becoming a failed record per run.
    """
    load_plugins(plugins)
    task_ids = resolve(backbones=backbones, inits=inits, tasks=tasks, protocols=protocols)
    if preset not in FINETUNE_PRESETS:
        raise KeyError(f"unknown fine-tuning preset {preset!r}; choose from {', '.join(sorted(FINETUNE_PRESETS))}")
    if any(o.partition("=")[0].strip() == "tta" for o in overrides):
        raise ValueError("test-time augmentation is the --tta flag (it changes the protocol), not a recipe override")
    from bench.finetune.engine import check_task_settings, task_type

    runs = []
    for task in task_ids:
        spec = get_task(task)
        # the task's recipe under the preset; a bad override fails here
        recipe = check_task_settings(get_finetune_recipe(preset, list(overrides), task=spec))
        for protocol in dict.fromkeys(protocols):
            probe = protocol == "probe"
            for backbone in (task_type(spec).matrix_backbones(spec, backbones, recipe) if spec.runnable
                             else backbones):
                for init in dict.fromkeys(_init_name(i, probe) for i in inits):
                    label, path = (init, None) if init in INITS else (_label(init), init)
                    for seed in seeds:
                        runs.append(RunSpec(task=task, backbone=backbone, init=label, seed=seed,
                                            data_roots=tuple(data_roots), results=results, preset=preset,
                                            overrides=tuple(overrides), init_path=path, linear_probe=probe,
                                            device=device, tta=tta, plugins=tuple(plugins),
                                            claim_timeout_s=claim_timeout_s))
    return runs


def _init_name(init: str, probe: bool) -> str:
    if init in ("scratch", "random"):
        return "random" if probe else "scratch"
    return init


def _label(path: str) -> str:
    p = Path(path)
    return f"export:{(p if p.is_dir() else p.parent).name}"


class PeakRSS:
    """Peak resident memory of this process while a block runs (sampled every 20 ms; ``start`` is the RSS at entry)."""

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
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


def execute(run: RunSpec, overwrite: bool = False) -> RunRecord:
    """Run one cell of the matrix and write its record, under a claim; returns the record. Never raises.

    A run another process has claimed comes back as a ``running-elsewhere`` record, written nowhere. One that
    another process sharing the folder has recorded since this command started is not done again, whatever its
    status (nor, unless ``overwrite``, one finished before). Under several processes (torchrun, a multi-task Slurm
    job) the main one decides and tells the others, so all of them run the same runs."""
    ranks, _ = distributed.setup(run.device)  # a multi-task Slurm job joins its group here, before claiming
    held: Claim | None = None
    outcome: RunRecord | None = None
    if ranks.main:
        try:
            held = claim(claim_path(run.record_path()), run.claim_timeout_s)
        except OSError as exc:  # a full or unwritable folder: reported like any failing run
            outcome = _bare_record(run, "failed", f"the run could not be claimed: {exc}")
        else:
            outcome = elsewhere(run) if held is None else recorded(run, overwrite)
    outcome = distributed.broadcast(outcome, ranks)
    try:
        if outcome is not None:
            return outcome
        log.info("%s: running (claimed by this process)", run.name)
        return _execute_claimed(run, held)
    finally:
        if held is not None:
            held.release()


def execute_overwriting(run: RunSpec) -> RunRecord:
    """:func:`execute` for ``--overwrite``: finished runs are done again (not those recorded since it started)."""
    return execute(run, overwrite=True)


def recorded(run: RunSpec, overwrite: bool) -> RunRecord | None:
    """The run's record if another process wrote it since this command started (any status), or, unless
    ``overwrite``, if it is finished."""
    path = run.record_path()
    try:
        if path.is_file() and path.stat().st_mtime >= run.started:
            return RunRecord.from_json(path)
    except (OSError, RecordError):
        pass
    return None if overwrite else finished(run)


def claim_path(record: Path) -> Path:
    """The claim file of a run: beside its record."""
    return record.with_name(record.name + ".claim")


def _bare_record(run: RunSpec, status: str, error: str | None) -> RunRecord:
    """A record of the run's key and status alone (what a run that never started reports)."""
    spec = get_task(run.task)
    return RunRecord(task=spec.id, task_version=spec.version, backbone=run.backbone, init=run.init,
                     protocol=run.protocol, seed=run.seed, status=status, main_score=spec.main_score,  # type: ignore[arg-type]
                     higher_is_better=spec.higher_is_better, error=error)


def elsewhere(run: RunSpec) -> RunRecord:
    """What ``execute`` reports for a run another process holds (never written as a record)."""
    return _bare_record(run, RUNNING_ELSEWHERE, f"claimed by {owner(claim_path(run.record_path()))}")


def wait_for_elsewhere(runs: list[RunSpec], records: list[RunRecord], executor: Executor, workers: int,
                       overwrite: bool, slurm: dict | None, poll_s: float = 30.0) -> list[RunRecord]:
    """``--wait``: until no run is running elsewhere. A waiting run takes the record its owner writes; one whose
    claim is gone without a record, or stale (its owner died), is run here. Polls the files, so nothing is
    submitted or started while the owners work."""
    ranks = distributed.current()
    records = list(records)
    while away := [i for i, r in enumerate(records) if r.status == RUNNING_ELSEWHERE]:
        time.sleep(min(poll_s, min(runs[i].claim_timeout_s for i in away) / 2))
        news: tuple[dict[int, RunRecord], list[int]] | None = None
        if ranks.main:
            found = {i: rec for i in away if (rec := recorded(runs[i], overwrite=True)) is not None}
            news = found, [i for i in away if i not in found
                           and is_free(claim_path(runs[i].record_path()), runs[i].claim_timeout_s)]
        found, free = distributed.broadcast(news, ranks)
        records = [found.get(i, r) for i, r in enumerate(records)]
        for i, record in zip(free, run_matrix([runs[i] for i in free], executor, workers, overwrite, slurm,
                                               progress=False), strict=True):
            records[i] = record
    return records


def _execute_claimed(run: RunSpec, held: Claim | None) -> RunRecord:
    from bench.finetune import NotApplicable, finetune
    from bench.hooks import discard_checkpoint
    from bench.trainer import Diverged

    spec = get_task(run.task)
    recipe = run.recipe()
    record = replace(_bare_record(run, "failed", None), init_path=run.init_path, finetune_preset=run.preset,
                     finetune_recipe=asdict(recipe), git_sha=git_sha(), packages=package_versions())
    root = data_root_for(spec.dataset, run.data_roots)
    plugin_error = None
    try:  # on a worker or a Slurm node the plugins are imported here, and may fail there
        record.plugins = load_plugins(run.plugins)
    except Exception:  # noqa: BLE001  (recorded like any failing run)
        plugin_error = f"plugin could not be imported:\n{traceback.format_exc()[-3000:]}"
    if plugin_error:
        record.error = plugin_error
    elif not spec.runnable:
        record.status, record.error = "not-runnable", spec.note
    elif root is None:
        record.status = "skipped"
        record.expected_path = " or ".join(str(expected_path(spec, r)) for r in run.data_roots)
        record.error = f"data not found: {record.expected_path}"
    elif run.pretrain_error is not None:
        record.status, record.error = "failed", f"pre-training failed: {run.pretrain_error}"
    else:
        record.data_root, record.data_fingerprint = str(root), data_fingerprint(root / spec.dataset)
        record.data_source = "generated" if is_generated(root / spec.dataset) else "real"
        start = time.perf_counter()
        try:
            with PeakRSS() as memory:
                result = finetune(spec, run.backbone, root, seed=run.seed, recipe=recipe, init=run.init_path,
                                  linear_probe=run.linear_probe, device=run.device, picture=run.picture_path(),
                                  image_init=run.image_init_path, artifacts=run.artifacts_dir())
            record.status = "ok"
            record.metrics, record.per_class = result.scores, result.per_class
            record.main_value = result.scores[spec.main_score]
            record.facts = {k: v for k, v in asdict(result.facts).items() if k != "init_sha256"}
            record.init_sha256 = result.facts.init_sha256
            if run.image_init_path:
                record.facts["image_init_path"] = run.image_init_path
            record.peak_rss_bytes = memory.peak
        except NotApplicable as exc:
            record.status, record.error = "not-applicable", str(exc)
        except Diverged as exc:  # the message says where and what to change; a traceback would bury it
            record.status, record.error = "failed", f"{type(exc).__name__}: {exc}"
        except Exception:  # noqa: BLE001  (a failing run is recorded; the matrix goes on)
            record.status, record.error = "failed", traceback.format_exc()[-4000:]
        record.wall_s = time.perf_counter() - start
    ranks = distributed.current()
    if ranks.main and held is not None and held.lost:  # this process stalled and another took the run over
        log.error("%s: the claim was taken over by another process; this result is not written", run.name)
        record = elsewhere(run)
    elif ranks.main:  # under torchrun every process ran the fine-tune; one record
        record = _write(run, record)
        if record.status == "ok":
            discard_checkpoint(run.artifacts_dir())  # the record holds the result; only now may the checkpoint go
    distributed.barrier(ranks)
    return record


def _write(run: RunSpec, record: RunRecord) -> RunRecord:
    """Write the record (atomically: a failed write leaves none). When that fails (a full disk), a small ``failed``
    record saying so is tried instead, and the returned record is failed either way: the run is redone next time,
    and its checkpoint is kept for that."""
    try:
        write_record(Path(run.results), record)
        return record
    except OSError as exc:
        failed = replace(record, status="failed", error=f"the record could not be written: {exc}", metrics={},
                         per_class={}, main_value=None)
        log.error("%s: %s", record.path(Path(run.results)), failed.error)
        with contextlib.suppress(OSError):  # else no record at all: the run counts as not done
            write_record(Path(run.results), failed)
        return failed


def finished(run: RunSpec) -> RunRecord | None:
    """The run's record if it is finished with the recipe this run would use; an unreadable one is redone."""
    path = run.record_path()
    if not path.is_file():
        return None
    try:
        record = RunRecord.from_json(path)
    except RecordError as exc:
        log.warning("%s; the run is redone", exc)
        return None
    if record.status not in FINISHED:
        return None
    # the preset also names the ponder init's pre-training (mini and small fine-tune alike)
    wanted = result_fields(run.recipe())  # as the record holds it (tuples become lists)
    held = held_result_fields(record.finetune_recipe)
    differs = sorted(k for k in {*wanted, *held} if wanted.get(k) != held.get(k))
    if run.init == "ponder" and record.finetune_preset != run.preset:
        differs.append("the ponder init's pre-training (preset)")
    if record.status == "ok" and differs:
        log.warning("%s was made with another fine-tuning recipe (differs in %s); the run is redone", path,
                    ", ".join(differs))
        return None
    return record


def pretrain(job: PretrainJob, poll_s: float = 10.0) -> str:
    """The export of ``job`` (pre-trained now, or resumed, unless it exists). Returns its path; raises on failure.

    Another process pre-training the same export (it holds the claim in the run folder) is waited for, and its
    export used; if it failed since this command started, its error is raised here rather than the pre-training
    run again. Under several processes the main one decides, in short steps, so no collective waits for long."""
    load_plugins(job.plugins)
    ranks, _ = distributed.setup(job.device)
    told = False
    while True:
        held: Claim | None = None
        state: str | None = None
        if ranks.main:
            state = _export_state(job)
            if state is None and (held := claim(job.run_dir / PRETRAIN_CLAIM, job.claim_timeout_s)) is not None:
                state = _export_state(job)  # finished by its owner between the two looks
        state, go = distributed.broadcast((state, held is not None), ranks)
        if state is not None or go:
            break
        if ranks.main and not told:
            log.warning("%s is claimed by %s; waiting for its export", job.run_dir / PRETRAIN_CLAIM,
                        owner(job.run_dir / PRETRAIN_CLAIM))
            told = True
        time.sleep(min(poll_s, job.claim_timeout_s / 2))
    try:
        if state == "ready":
            return str(job.run_dir / "backbone.pt")
        if state is not None:
            raise RuntimeError(f"pre-training failed in another process: {state}")
        try:
            return _pretrain_claimed(job)
        except Exception as exc:
            if ranks.main:  # the processes waiting for this export take the error instead of pre-training again
                save_text(job.run_dir / PRETRAIN_FAILED, json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
            raise
    finally:
        if held is not None:
            held.release()


PRETRAIN_CLAIM, PRETRAIN_FAILED = "pretrain.claim", "failed.json"


def _export_state(job: PretrainJob) -> str | None:
    """"ready" (the export exists), the error of a pre-training that failed since this command started, or None."""
    if (job.run_dir / "backbone.pt").is_file() and (job.run_dir / "backbone.json").is_file():
        return "ready"
    failed = job.run_dir / PRETRAIN_FAILED
    try:
        if failed.stat().st_mtime >= job.started:
            return str(json.loads(failed.read_text()).get("error", "unknown error"))
    except (OSError, ValueError, AttributeError):
        pass
    return None


def _pretrain_claimed(job: PretrainJob) -> str:
    from bench.pretrain.engine import Pretrainer
    from bench.recipes import pretrain_recipe_for

    export = job.run_dir / "backbone.pt"
    (job.run_dir / PRETRAIN_FAILED).unlink(missing_ok=True)
    folders = sorted(job.folders)
    root = next((Path(r) for r in job.data_roots if all((Path(r) / f).is_dir() for f in folders)), None)
    if root is None:
        raise FileNotFoundError(f"no data root of {', '.join(job.data_roots)} holds {', '.join(folders)} to "
                                "pre-train on")
    recipe = pretrain_recipe_for(job.preset, job.mode, job.backbone, job.datasets)
    data = root if job.datasets else root / folders[0]
    log.info("pre-training %s (%s) on %s%s", job.backbone, job.mode, data, f" ({job.datasets})" * bool(job.datasets))
    Pretrainer(recipe, data, job.run_dir, job.device, resume=True, progress=False).run()
    distributed.barrier(distributed.current())  # under torchrun the main rank writes the export the others load
    return str(export)


def pretrain_job(job: PretrainJob) -> tuple[str | None, str | None]:
    """:func:`pretrain` as a job that never raises: (export path, None) or (None, the error)."""
    try:
        return pretrain(job), None
    except Exception as exc:  # noqa: BLE001  (reported on the runs that needed it)
        log.warning("pre-training %s (%s) failed: %s", job.backbone, job.mode, exc)
        return None, f"{type(exc).__name__}: {exc}"


def _map(fn: Callable, items: list, executor: Executor, slurm: dict | None, folder: Path, desc: str,
         progress: bool) -> list:
    """``fn`` over ``items`` as Slurm (or submitit debug) jobs, results in order."""
    if not items:
        return []
    if executor not in ("slurm", "debug"):
        raise ValueError(f"executor must be local, slurm or debug, got {executor!r}")
    import submitit

    pool = submitit.AutoExecutor(folder=folder, cluster="debug" if executor == "debug" else None)
    pool.update_parameters(**(slurm or {}))
    jobs = [pool.submit(requeued(fn), item) for item in items]
    return [job.result() for job in tqdm(jobs, desc=desc, disable=not progress)]


def requeued(fn: Callable) -> Callable:
    """``fn`` as a Slurm job that requeues itself when preempted or timed out (submitit calls ``checkpoint``, which
    resubmits the same call): fine-tunes and pre-trainings resume from their last checkpoint."""
    from submitit.helpers import Checkpointable

    class Requeued(Checkpointable):
        def __init__(self, fn: Callable) -> None:
            self.fn = fn

        def __call__(self, item: object) -> object:
            if int(os.environ.get("SLURM_NTASKS", "1")) > 1:  # --gpus-per-node N: one task per GPU, one job
                from submitit.helpers import TorchDistributedEnvironment

                TorchDistributedEnvironment().export()
            return self.fn(item)

    return Requeued(fn)


class _InlineExecutor(FuturesExecutor):
    """Runs each submitted call at once, in this process (one local worker)."""

    def submit(self, fn: Callable, /, *args: object, **kwargs: object) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _local_pool(workers: int, jobs: int) -> FuturesExecutor:
    if workers <= 1:
        return _InlineExecutor()
    return ProcessPoolExecutor(min(workers, jobs), mp_context=get_context("spawn"), initializer=_worker_init,
                               initargs=(workers, log.isEnabledFor(logging.DEBUG)))


def _with_export(run: RunSpec, slot: str, path: str | None, error: str | None) -> RunSpec:
    """``run`` with a pre-training's export in ``slot`` (or its error: the run then records the failure)."""
    return replace(run, **{slot: path}, pretrain_error=run.pretrain_error or error)


def _run_local(todo: list[RunSpec], needed: dict[PretrainJob, list[tuple[RunSpec, str]]], workers: int,
               progress: bool, run: Callable[[RunSpec], RunRecord]) -> dict[RunSpec, RunRecord]:
    """Pre-trainings and runs in one pool of local processes. The runs that need no pre-training start at once,
    beside the pre-trainings; a ``ponder`` run starts as soon as its exports exist. Fine-tunes are queued before
    probes (longest first), so no worker idles while another finishes a long run."""
    if not todo:
        return {}
    blocked = {r: {job for job, waiting in needed.items() if any(w == r for w, _ in waiting)} for r in todo}
    resolved = {r: r for r in todo}
    records: dict[RunSpec, RunRecord] = {}

    def longest_first(runs: list[RunSpec]) -> list[RunSpec]:
        return sorted(runs, key=lambda r: r.linear_probe)

    with _local_pool(workers, len(todo) + len(needed)) as pool, \
            tqdm(total=len(todo) + len(needed), desc="pre-training and runs", disable=not progress) as bar:
        futures: dict[Future, PretrainJob | RunSpec] = {pool.submit(pretrain_job, job): job for job in needed}
        futures |= {pool.submit(run, item): item for item in longest_first([r for r in todo if not blocked[r]])}
        while futures:
            done, _ = wait(futures, return_when=FIRST_COMPLETED)
            for future in done:
                item = futures.pop(future)
                bar.update()
                if isinstance(item, RunSpec):
                    records[item] = future.result()
                    continue
                path, error = future.result()
                ready = []
                for waiting, slot in needed[item]:
                    resolved[waiting] = _with_export(resolved[waiting], slot, path, error)
                    blocked[waiting].discard(item)
                    if not blocked[waiting]:
                        ready.append(waiting)
                futures |= {pool.submit(run, resolved[r]): r for r in longest_first(ready)}
    return records


def pretrain_jobs(runs: list[RunSpec]) -> dict[PretrainJob, list[tuple[RunSpec, str]]]:
    """The pre-trainings the ``ponder`` runs need, each with the runs that wait for it and the field of the run its
    export fills (``init_path``, or ``image_init_path`` for the fusion track's image backbone)."""
    needed: dict[PretrainJob, list[tuple[RunSpec, str]]] = {}
    for run in runs:
        spec = get_task(run.task)
        if run.init != "ponder" or run.init_path or not spec.runnable:
            continue
        for need in _pretrainings(spec, run):
            job = PretrainJob(backbone=need.backbone, mode=need.mode, data_roots=run.data_roots, results=run.results,
                              preset=run.preset, device=run.device, plugins=run.plugins,
                              claim_timeout_s=run.claim_timeout_s, started=run.started, datasets=need.datasets)
            needed.setdefault(job, []).append((run, need.slot))
    return needed


def datasets_read(runs: Sequence[RunSpec]) -> set[str]:
    """The dataset folders the runs read, and the pre-trainings of their ``ponder`` inits."""
    return ({get_task(run.task).dataset for run in runs}
            | {folder for job in pretrain_jobs(list(runs)) for folder in job.folders})


def _pretrainings(spec: TaskSpec, run: RunSpec) -> list[Pretraining]:
    """The exports a ponder run needs (the task type says which)."""
    from bench.finetune.engine import task_type

    return task_type(spec).pretrainings(spec, run.backbone, run.recipe()) if spec.runnable else []


def run_matrix(runs: list[RunSpec], executor: Executor = "local", workers: int = 1, overwrite: bool = False,
               slurm: dict | None = None, progress: bool = True) -> list[RunRecord]:
    """Execute the runs that are not finished yet; returns every run's record (finished ones included)."""
    now = time.time()
    runs = [replace(run, started=run.started or now) for run in runs]  # equal to the runs given (compare=False)
    ranks = distributed.current()  # under torchrun the main process reads the folder and tells the others
    held = [None] * len(runs) if overwrite or not ranks.main else [finished(run) for run in runs]
    done = {run: rec for run, rec in zip(runs, distributed.broadcast(held, ranks), strict=True) if rec is not None}
    todo = [run for run in runs if run not in done]
    needed = pretrain_jobs(todo)
    if distributed.launched():  # torchrun: every process runs every job, together, one after another
        if executor != "local":
            raise ValueError("under torchrun the matrix runs in its processes; --executor slurm submits its own")
        workers = 1
    execute_run = execute_overwriting if overwrite else execute
    if executor == "local":
        by_run = {**done, **_run_local(todo, needed, workers, progress, execute_run)}
        return [by_run[run] for run in runs]
    folder = Path(runs[0].results) / "slurm" if runs else Path("slurm")
    exports = dict(zip(needed, _map(pretrain_job, list(needed), executor, slurm, folder, "pre-training", progress),
                       strict=True))
    resolved: dict[RunSpec, RunSpec] = {}
    for job, waiting in needed.items():
        path, error = exports[job]
        for run, slot in waiting:
            resolved[run] = _with_export(resolved.get(run, run), slot, path, error)
    fresh = _map(execute_run, [resolved.get(r, r) for r in todo], executor, slurm, folder, "runs", progress)
    by_run = {**done, **dict(zip(todo, fresh, strict=True))}
    return [by_run[run] for run in runs]


def _worker_init(workers: int, verbose: bool) -> None:
    import torch

    from bench.console import configure

    configure(verbose, worker=True)  # a spawned process has neither the parent's logging nor its warning filters
    torch.set_num_threads(max(1, distributed.usable_cpus() // workers))
