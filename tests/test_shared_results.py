"""Several processes on one results folder: each run is done once (claims), a killed owner's claim is taken over,
and a folder that cannot be written stops the command before any work (or, mid-run, leaves a failed record)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from bench.cli import main
from bench.matrix import runner
from bench.matrix.claims import claim
from bench.matrix.records import RunRecord, record_files

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_claim_is_held_once_and_released(tmp_path: Path) -> None:
    path = tmp_path / "run.json.claim"
    first = claim(path, stale_after=60)
    assert first is not None and claim(path, stale_after=60) is None
    assert json.loads(path.read_text())["pid"] == os.getpid()
    first.release()
    assert not path.exists()
    with claim(path, stale_after=60) as again:
        assert again is not None and path.exists()
    assert not path.exists()


def test_a_claim_kept_fresh_by_its_heartbeat_is_taken_over_once_its_owner_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "run.json.claim"
    owner = _python("import sys, time; from pathlib import Path; from bench.matrix.claims import claim; "
                    "held = claim(Path(sys.argv[1]), stale_after=3.0); print('held', flush=True); time.sleep(600)",
                    str(path))
    assert owner.stdout.readline().strip() == "held", owner.stderr.read()
    time.sleep(4.0)  # longer than the timeout: the heartbeat (every 0.75 s) keeps the claim fresh
    assert claim(path, stale_after=3.0) is None
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    deadline = time.monotonic() + 10
    while (taken := claim(path, stale_after=3.0)) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert taken is not None, "the dead owner's claim was never taken over"
    assert json.loads(path.read_text())["pid"] == os.getpid()
    taken.release()


def test_a_claim_of_another_host_is_taken_over_only_after_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "run.json.claim"
    path.write_text(json.dumps({"host": "another-node", "pid": 1, "token": "theirs", "since": "then",
                                "heartbeat_s": 0.25}))
    assert claim(path, stale_after=2.0) is None  # fresh: its owner may be alive on its own node
    os.utime(path, (time.time() - 3, time.time() - 3))  # no heartbeat for 3 s
    taken = claim(path, stale_after=2.0)
    assert taken is not None and json.loads(path.read_text())["token"] == taken.token
    taken.release()


def test_a_claim_taken_over_from_a_stalled_owner_is_known_as_lost(tmp_path: Path) -> None:
    path = tmp_path / "run.json.claim"
    held = claim(path, stale_after=1.0)
    path.write_text(json.dumps({"host": "another-node", "pid": 1, "token": "theirs"}))  # taken over meanwhile
    deadline = time.monotonic() + 5
    while not held.lost and time.monotonic() < deadline:
        time.sleep(0.05)
    assert held.lost
    held.release()
    assert json.loads(path.read_text())["token"] == "theirs"  # the new owner's claim is left alone


def test_a_run_another_command_recorded_meanwhile_is_not_done_again(tiny_root: Path, tmp_path: Path) -> None:
    (run,) = runner.expand(backbones=["spunet-micro"], inits=["scratch"], tasks="semantickitti-semseg", seeds=[0],
                           data_roots=(str(tiny_root),), results=str(tmp_path), preset="tiny")
    run = replace(run, started=time.time())  # the command's start; the other command records the run after it
    theirs = runner.elsewhere(run)
    theirs.status, theirs.error = "failed", "out of memory in the other process"
    runner.write_record(tmp_path, theirs)
    record = runner.execute(run)  # recorded after this command started: its result, whatever its status
    assert record.status == "failed" and record.error == theirs.error


def test_a_pretraining_that_failed_in_another_process_is_not_run_again(tmp_path: Path) -> None:
    job = runner.PretrainJob(backbone="spunet-micro", mode="indoor", data_roots=(str(tmp_path),),
                             results=str(tmp_path), preset="tiny", started=time.time() - 1)
    job.run_dir.mkdir(parents=True)
    (job.run_dir / runner.PRETRAIN_FAILED).write_text(json.dumps({"error": "RuntimeError: CUDA out of memory"}))
    with pytest.raises(RuntimeError, match="failed in another process: RuntimeError: CUDA out of memory"):
        runner.pretrain(job)


@pytest.mark.slow
def test_two_concurrent_run_commands_do_each_run_once(tiny_root: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    args = ["run", "--data", str(tiny_root), "--tasks", "semantickitti-semseg,s3dis-area5-semseg", "--inits",
            "scratch", "--preset", "tiny", "--seeds", "0,1", "--backbones", "spunet-micro", "--results", str(results),
            "--no-progress", "--workers", "1", "--protocols", "finetune", "--wait", "epochs=6"]
    code = "import sys; from bench.cli import main; sys.exit(main(sys.argv[1:]))"
    both = [_python(code, *args), _python(code, *args)]
    outputs = [p.communicate(timeout=540) for p in both]
    assert [p.returncode for p in both] == [0, 0], [err[-2000:] for _, err in outputs]
    started = [line for _, err in outputs for line in err.splitlines() if "running (claimed by this process)" in line]
    assert len(started) == 4 and len(set(started)) == 4, started  # every run once, by one of the two
    assert all("4 runs: 4 ok" in out for out, _ in outputs), [out for out, _ in outputs]  # --wait: all done
    assert {RunRecord.from_json(f).status for f in record_files(results)} == {"ok"}
    assert not list(results.rglob("*.claim"))


def test_an_unwritable_results_folder_stops_the_command_first(tiny_root: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    import tasks.io

    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tasks.io.tempfile, "TemporaryFile", full)
    results = tmp_path / "results"
    assert main(["run", "--data", str(tiny_root), "--tasks", "semantickitti-semseg", "--results", str(results)]) == 2
    assert f"{results}: the results folder cannot be written to (No space left on device)" in capsys.readouterr().err
    assert not (results / "runs").exists()


def test_a_record_that_cannot_be_written_leaves_a_failed_one(tiny_root: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    write = runner.write_record

    def full_for_big_records(results: Path, record: RunRecord) -> Path:
        if record.status == "ok":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(results, record)

    monkeypatch.setattr(runner, "write_record", full_for_big_records)
    results = tmp_path / "results"
    assert main(["run", "--data", str(tiny_root), "--tasks", "semantickitti-semseg", "--inits", "scratch",
                 "--preset", "tiny", "--backbones", "spunet-micro", "--protocols", "finetune", "--results",
                 str(results), "--no-progress", "--workers", "1"]) == 0
    (path,) = record_files(results)
    record = RunRecord.from_json(path)
    assert record.status == "failed" and "the record could not be written: [Errno 28]" in record.error
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left behind
