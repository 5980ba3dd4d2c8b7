"""Faults: ``kill -9`` of a running matrix (mid fine-tune, mid record write), truncated and hand-edited records.

Each time, the same command afterwards must finish the matrix with every record readable, none lost and none
duplicated; a broken record is named by ``leaderboard`` and redone by ``run``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.matrix.records import RunRecord, record_files

REPO = Path(__file__).resolve().parents[1]
TASKS = "semantickitti-semseg,s3dis-area5-semseg"


def _run_args(data: Path, results: Path) -> list[str]:
    return ["run", "--data", str(data), "--tasks", TASKS, "--inits", "scratch", "--preset", "tiny", "--seeds", "0,1",
            "--backbones", "spunet-micro", "--results", str(results), "--no-progress", "--workers", "1", "--protocols",
            "finetune", "epochs=6"]


def _child(code: str, args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _assert_complete(results: Path) -> list[RunRecord]:
    files = record_files(results)
    records = [RunRecord.from_json(f) for f in files]  # every one readable
    keys = {(r.task, r.seed) for r in records}
    assert len(records) == 4 and len(keys) == 4, files  # none lost, none duplicated
    assert {r.status for r in records} == {"ok"}
    return records


@pytest.mark.slow
def test_kill_9_mid_finetune_then_the_same_command_finishes(tiny_root: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    child = _child("import sys; from bench.cli import main; sys.exit(main(sys.argv[1:]))",
                   _run_args(tiny_root, results))
    deadline = time.monotonic() + 240
    while not record_files(results) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    first = record_files(results)
    assert len(first) == 1, child.stderr.read().decode()[-2000:] if child.poll() is not None else "no record in time"
    time.sleep(0.3)  # into the next fine-tune (each takes seconds)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert len(record_files(results)) < 4, "the matrix finished before the kill; the test needs a slower run"
    stamp = first[0].stat().st_mtime_ns
    assert main(_run_args(tiny_root, results)) == 0
    _assert_complete(results)
    assert first[0].stat().st_mtime_ns == stamp  # the finished run was not redone


@pytest.mark.slow
def test_kill_9_mid_record_write_then_the_same_command_finishes(tiny_root: Path, tmp_path: Path) -> None:
    """The child is killed by SIGKILL in the middle of writing its first record (half the bytes in the file)."""
    results = tmp_path / "results"
    code = """
import os, signal, sys
import bench.matrix.records as records
real = records.atomic_write
def dying(path, write):
    def half_then_die(tmp):
        write(tmp)
        data = tmp.read_bytes()
        tmp.write_bytes(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    real(path, half_then_die)
records.atomic_write = dying
from bench.cli import main
main(sys.argv[1:])
"""
    child = _child(code, _run_args(tiny_root, results))
    assert child.wait(timeout=240) == -signal.SIGKILL, child.stderr.read().decode()[-2000:]
    leftovers = [p for p in (results / "runs" / "records").rglob("*") if p.is_file()]
    assert leftovers and not record_files(results)  # only the half-written temporary file, not a record
    assert main(_run_args(tiny_root, results)) == 0
    _assert_complete(results)
    assert main(["leaderboard", "--results", str(results)]) == 0  # the stale temporary file is not a record


def test_broken_records_are_named_by_leaderboard_and_redone_by_run(tiny_root: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "results"
    assert main(_run_args(tiny_root, results)) == 0
    truncated, edited = record_files(results)[:2]
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(SystemExit, match=rf"{truncated}: not a readable JSON run record"):
        main(["leaderboard", "--results", str(results)])
    assert main(_run_args(tiny_root, results)) == 0  # the unreadable run is redone
    assert RunRecord.from_json(truncated).status == "ok"
    raw = json.loads(edited.read_text())
    edited.write_text(json.dumps({**raw, "status": "great"}))
    with pytest.raises(SystemExit, match=rf"{edited}: field 'status' = 'great'"):
        main(["leaderboard", "--results", str(results)])
    capsys.readouterr()
    assert main(_run_args(tiny_root, results)) == 0
    _assert_complete(results)
    assert RunRecord.from_json(edited).status == "ok"
