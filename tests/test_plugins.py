"""Adding a backbone from one file: --plugin, fail-fast name resolution, and `ponderbench compare`."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.matrix.records import RunRecord, record_files

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_backbone.py"


@pytest.fixture
def plugin(tmp_path: Path) -> Path:
    """A researcher's one file: the README's example under a name of its own (one per test: the registry is
    process-wide, and two files registering one name is an error)."""
    path = tmp_path / "my_nets.py"
    path.write_text(EXAMPLE.read_text().replace('"pointmlp-tiny"', f'"tmp-mlp-{tmp_path.name[-12:]}"'))
    return path


def _name(plugin: Path) -> str:
    return f"tmp-mlp-{plugin.parent.name[-12:]}"


def _args(tiny_root: Path, results: Path, *extra: str) -> list[str]:
    return ["--data", str(tiny_root), "--tasks", "semantickitti-semseg", "--preset", "tiny", "--seeds", "0,1",
            "--inits", "scratch", "--results", str(results), "--no-progress", *extra]


@pytest.mark.slow
def test_one_file_runs_and_compares(tiny_root: Path, tmp_path: Path, plugin: Path, capsys) -> None:  # noqa: ANN001
    results = tmp_path / "results"
    name = _name(plugin)
    assert main(["run", "--plugin", str(plugin), "--backbones", name, *_args(tiny_root, results)]) == 0
    records = [RunRecord.from_json(f) for f in record_files(results)]
    assert {r.status for r in records} == {"ok"} and len(records) == 4  # run's default: fine-tune and probe
    assert {(r.init, r.protocol) for r in records} == {("scratch", "full"), ("random", "full+linear-probe")}
    digest = hashlib.sha256(plugin.read_bytes()).hexdigest()
    assert records[0].plugins == {str(plugin): {"path": str(plugin), "sha256": digest}}
    overall = pd.read_csv(results / "tables" / "overall.csv")
    assert {f"{name} / scratch", f"{name} / random (linear-probe)"} <= set(overall["backbone / init"])

    capsys.readouterr()
    assert main(["compare", name, "--against", "spunet-micro", "--plugin", str(plugin),
                 *_args(tiny_root, results)]) == 0
    out = capsys.readouterr().out
    assert "2 runs: 2 ok" not in out and "4 runs: 4 ok" in out  # the two tmp-mlp runs were reused
    table = pd.read_csv(results / "tables" / f"compare_{name}_vs_spunet-micro.csv")
    assert list(table.columns) == ["task", "init", "protocol", name, "spunet-micro", "difference per seed",
                                   "mean difference", "seeds", "beyond seed noise"]
    assert table.loc[0, "seeds"] == 2 and re.fullmatch(r"[+-]\d+\.\d, [+-]\d+\.\d", table.loc[0, "difference per seed"])
    cost = pd.read_csv(results / "tables" / f"compare_{name}_vs_spunet-micro_cost.csv")
    assert list(cost.backbone) == [name, "spunet-micro"] and (cost.points > 0).all()


@pytest.mark.slow
def test_plugins_reach_worker_processes(tiny_root: Path, tmp_path: Path, plugin: Path) -> None:
    results = tmp_path / "results"
    assert main(["run", "--plugin", str(plugin), "--backbones", _name(plugin), "--workers", "2",
                 *_args(tiny_root, results)]) == 0
    assert {RunRecord.from_json(f).status for f in record_files(results)} == {"ok"}


@pytest.mark.parametrize(("words", "message"), [
    (["--backbones", "spunet-mnii"], "unknown backbone 'spunet-mnii'; did you mean spunet-mini"),
    (["--backbones", "spunet-micro", "--tasks", "scanet-semseg"], "no task matches 'scanet-semseg'; did you mean"),
    (["--backbones", "spunet-micro", "--inits", "scrach"], "init 'scrach' is neither scratch, ponder"),
    (["--backbones", "spunet-micro", "epoch=3"], "has no field 'epoch'"),
    (["--plugin", "no_such_file.py"], "no_such_file.py: plugin file not found"),
])
def test_a_typo_exits_2_before_any_work(tiny_root: Path, tmp_path: Path, words: list[str], message: str,
                                         capsys) -> None:  # noqa: ANN001
    results = tmp_path / "results"
    args = ["run", "--data", str(tiny_root), "--results", str(results), "--no-progress", *words]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not results.exists()


@pytest.mark.slow
def test_a_2d_backbone_on_a_point_cloud_task_is_not_applicable(tiny_root: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    assert main(["run", "--backbones", "timm:resnet18", "--inits", "ponder", "--data", str(tiny_root), "--tasks",
                 "semantickitti-semseg", "--preset", "tiny", "--results", str(results), "--no-progress"]) == 0
    records = [RunRecord.from_json(f) for f in record_files(results)]
    assert len(records) == 2  # fine-tune and probe
    assert all(r.status == "not-applicable" and "2D backbone" in r.error for r in records)
    assert not (results / "runs" / "pretrain").exists()


@pytest.mark.slow
def test_ponder_pretrains_a_new_backbone_without_extra_code(tiny_root: Path, tmp_path: Path, plugin: Path) -> None:
    """``--inits ponder`` renders with the plugin's backbone (it returns per-point features) and fine-tunes the
    export."""
    results = tmp_path / "results"
    assert main(["run", "--plugin", str(plugin), "--backbones", _name(plugin), "--inits", "ponder", "--data",
                 str(tiny_root), "--tasks", "semantickitti-semseg", "--preset", "tiny", "--results", str(results),
                 "--no-progress", "--protocols", "finetune"]) == 0
    (record,) = [RunRecord.from_json(f) for f in record_files(results)]
    assert record.status == "ok" and record.init_sha256
    assert (results / "runs" / "pretrain" / f"outdoor-{_name(plugin)}-tiny" / "backbone.json").is_file()
