"""Results as pandas: load_results / per_class, merging results folders, the README's snippets, stable tables."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench import load_results, per_class
from bench.cli import main
from bench.matrix.leaderboard import leaderboard
from bench.matrix.records import RunRecord, write_record
from bench.matrix.results import COLUMNS, ResultsError
from tasks.spec import get_task

README = Path(__file__).resolve().parents[1] / "README.md"


def _record(task: str, init: str, seed: int, value: float, **extra: object) -> RunRecord:
    spec = get_task(task)
    return RunRecord(task=task, task_version=spec.version, backbone="spunet-mini", init=init, protocol=spec.protocol,
                     seed=seed, status="ok", main_score="mIoU", main_value=value,
                     metrics={"mIoU": value, "allAcc": 0.9, "train_scenes": 8}, per_class={"wall": value, "sofa": None},
                     wall_s=1.5, git_sha="abc", **extra)


def _fill(results: Path, seeds: range = range(3)) -> None:
    for seed in seeds:
        write_record(results, _record("scannet-semseg", "scratch", seed, 0.40 + 0.01 * seed))
        write_record(results, _record("scannet-semseg", "ponder", seed, 0.45 + 0.02 * seed))
        write_record(results, _record("s3dis-area5-semseg", "scratch", seed, 0.30 + 0.01 * seed))
    failed = RunRecord(task="nuscenes-det-lidar", task_version=1, backbone="spunet-mini", init="scratch",
                       protocol="full", seed=0, status="not-runnable", main_score="NDS",
                       error="detection heads come in a later issue")
    write_record(results, failed)


def test_load_results_is_flat_and_typed(tmp_path: Path) -> None:
    _fill(tmp_path / "results")
    runs = load_results(tmp_path / "results")
    assert list(runs.columns) == [*COLUMNS, "allAcc", "mIoU", "train_scenes"]
    assert len(runs) == 10 and runs["seed"].dtype == "int64" and runs["mIoU"].dtype == "float64"
    assert str(runs["task"].dtype) == "string" and runs["peak_rss_bytes"].dtype == "Int64"
    row = runs[(runs.task == "scannet-semseg") & (runs.init == "ponder") & (runs.seed == 2)].iloc[0]
    assert row.mIoU == pytest.approx(0.49) and row.main_value == row.mIoU
    assert row.version == get_task("scannet-semseg").version
    assert runs[runs.status == "not-runnable"].mIoU.isna().all()
    classes = per_class(tmp_path / "results")
    assert list(classes.columns) == ["task", "version", "backbone", "init", "protocol", "seed", "class", "score"]
    assert len(classes) == 18 and classes.score.isna().sum() == 9


def test_two_results_folders_merge(tmp_path: Path) -> None:
    a, b = tmp_path / "machine-a", tmp_path / "machine-b"
    _fill(a, range(2))
    _fill(b, range(1, 3))  # seed 1 in both, identical
    merged = load_results(a, b)
    assert len(merged) == 10 and not merged.duplicated(["task", "backbone", "init", "protocol", "seed"]).any()
    tables = leaderboard((a, b), tmp_path / "tables")
    assert (tables["task_scannet-semseg"].n.dropna() == 3).all()
    assert main(["leaderboard", "--results", f"{a},{b}", "--out", str(tmp_path / "cli"), "--format", "md,csv"]) == 0
    suffixes = {p.suffix for p in (tmp_path / "cli").iterdir()}
    assert suffixes == {".md", ".csv"}
    conflicting = write_record(b, _record("scannet-semseg", "scratch", 1, 0.99))
    with pytest.raises(ResultsError, match=rf"{a}.*seed1.json and {conflicting} hold the same run"):
        load_results(a, b)


def test_csv_tables_have_a_fixed_column_order(tmp_path: Path) -> None:
    _fill(tmp_path / "results")
    leaderboard(tmp_path / "results", tmp_path / "t", ("csv",))
    status = pd.read_csv(tmp_path / "t" / "status.csv")
    assert list(status.columns) == ["task", "ok", "failed", "skipped", "not-applicable", "not-runnable"]
    task = pd.read_csv(tmp_path / "t" / "task_scannet-semseg.csv")
    assert list(task.columns) == ["backbone", "init", "protocol", "mIoU", "mean", "std", "n"]
    lines = (tmp_path / "t" / "status.csv").read_text().splitlines()
    assert lines[1] == "nuscenes-det-lidar,0,0,0,0,1" and lines[2] == "s3dis-area5-semseg,3,0,0,0,0"


def _snippet(name: str) -> str:
    match = re.search(rf"<!-- snippet: {name} -->\n```python\n(.*?)```", README.read_text(), re.S)
    assert match, f"README snippet {name!r} not found"
    return match.group(1)


def test_readme_snippets_run_and_match_the_leaderboard(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _fill(tmp_path / "results")
    os.chdir(tmp_path)
    try:
        scope: dict = {}
        exec(compile(_snippet("overall"), "README.md:overall", "exec"), scope)  # noqa: S102
        exec(compile(_snippet("seeds"), "README.md:seeds", "exec"), {})  # noqa: S102
    finally:
        os.chdir(Path(__file__).parent)
    assert (tmp_path / "scannet-semseg-seeds.png").stat().st_size > 1000
    ours = scope["overall"]
    board = leaderboard(tmp_path / "results", tmp_path / "tables")["overall"].set_index("backbone / init")
    for (backbone, init, protocol), row in ours.iterrows():
        for task, cell in row.items():
            assert board.loc[f"{backbone} / {init}", task] == cell, (backbone, init, protocol, task)
    assert ours.loc[("spunet-mini", "ponder", "full"), "scannet-semseg"] == "47.0 ± 2.0"
    capsys.readouterr()


def test_unreadable_or_foreign_records_are_named(tmp_path: Path) -> None:
    _fill(tmp_path / "results")
    path = next((tmp_path / "results").rglob("seed0.json"))
    path.write_text(json.dumps({**json.loads(path.read_text()), "schema": 99}))
    with pytest.raises(ResultsError, match=rf"^{path}: record schema 99"):
        load_results(tmp_path / "results")
    shutil.rmtree(tmp_path / "results")
    with pytest.raises(ResultsError, match="no results folder"):
        load_results()


def test_lowlevel_tasks_have_a_table_of_their_own(tmp_path: Path) -> None:
    """PSNR is in dB and F-score a fraction: the low-level tasks get their own table, every metric in its unit,
    and stay out of the overall and gain tables of class scores."""
    results = tmp_path / "results"
    for seed in range(3):
        write_record(results, _record("scannet-semseg", "scratch", seed, 0.4))
        for init, psnr, fscore in (("scratch", 18.0, 0.40), ("ponder", 19.0, 0.45)):
            nvs = {"PSNR": psnr + 0.1 * seed, "SSIM": 0.6, "AbsRel": 0.1, "RMSE": 0.2, "delta1": 0.8}
            recon = {"fscore": fscore, "precision": 0.5, "recall": 0.4, "accuracy": 0.05, "completeness": 0.07,
                     "chamfer_l1": 0.06}
            for task, metrics, score in (("nvs-scannet", nvs, "PSNR"), ("recon-scannet", recon, "fscore")):
                write_record(results, RunRecord(
                    task=task, task_version=get_task(task).version, backbone="spunet-mini", init=init,
                    protocol="full", seed=seed, status="ok", main_score=score, main_value=metrics[score],
                    metrics=metrics, per_class={}, wall_s=1.0, git_sha="abc"))
    tables = leaderboard(results, tmp_path / "tables")
    assert list(tables["overall"].columns) == ["backbone / init", "scannet-semseg"]
    assert "gain" not in tables or not any("nvs" in c or "recon" in c for c in tables["gain"].columns)
    low = tables["lowlevel"].set_index(["task", "init"])
    assert low.loc[("nvs-scannet", "ponder"), "PSNR (dB)"] == "19.10 ± 0.10"
    assert low.loc[("nvs-scannet", "scratch"), "delta1 (%)"] == "80.0 ± 0.0"
    assert low.loc[("recon-scannet", "ponder"), "fscore (%)"] == "45.0 ± 0.0"
    assert low.loc[("recon-scannet", "ponder"), "chamfer_l1 (cm)"] == "6.0 ± 0.0"
    page = (tmp_path / "tables" / "index.html").read_text()
    assert "Low-level tasks" in page


@pytest.mark.parametrize("source", ["generated", "real", None])
def test_a_paper_number_is_a_target_only_over_real_data(tmp_path: Path, source: str | None) -> None:
    for seed in range(2):
        write_record(tmp_path / "r", _record("scannet-semseg", "scratch", seed, 0.4 + 0.01 * seed,
                                             data_source=source))
    tables = leaderboard(tmp_path / "r", tmp_path / "t")
    task, paper = tables["task_scannet-semseg"], tables["paper"].set_index("task").loc["scannet-semseg"]
    assert "SpUNet-v1m3" in paper.setup and "ScanNet + S3DIS + Structured3D" in paper.setup
    assert paper.source.startswith("OpenGVLab/PonderV2@aad65d6 docs/model_zoo.md")
    html = (tmp_path / "t" / "index.html").read_text()
    if source == "real":
        assert paper["shown as"] == "target" and (task.backbone == "PonderV2 paper (target)").sum() == 1
        assert "PonderV2 paper (target)" in tables["overall"]["backbone / init"].tolist()
    else:  # generated, or a record from before data_source: never drawn as a target
        assert paper["shown as"].startswith("footnote") and (task.backbone == "PonderV2 paper (target)").sum() == 0
        assert "PonderV2 paper (target)" not in tables["overall"]["backbone / init"].tolist()
        assert "Not comparable with these runs" in html
