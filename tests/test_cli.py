"""The ``ponderbench`` command line: help everywhere, synth + check end to end, a failing check."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main

HELP = [[], ["data"], ["data", "synth"], ["data", "check"], ["list"], ["evaluate"], ["runs", "heldout"]]


@pytest.mark.parametrize("words", HELP, ids=lambda w: " ".join(w) or "top")
def test_help_everywhere(words: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main([*words, "--help"])
    assert info.value.code == 0
    assert "usage: ponderbench" in capsys.readouterr().out


def test_runs_heldout_names_a_folder_that_is_no_run(tmp_path: Path, capsys) -> None:
    assert main(["runs", "heldout", str(tmp_path), "--device", "cpu"]) == 2
    assert f"ponderbench runs heldout: {tmp_path / 'recipe.json'}" in capsys.readouterr().err


def test_workers_and_threads_follow_the_cpus_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """``taskset -c 1 ponderbench run`` (or a cpuset) gives one worker on one thread, not ``os.cpu_count()``'s."""
    import torch

    from bench.cli import _default_workers
    from bench.matrix.runner import _worker_init

    monkeypatch.setattr("bench.cli._cuda", lambda: False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {1}, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    monkeypatch.setattr("bench.console.configure", lambda *a, **k: None)  # leave this session's logging alone
    threads = torch.get_num_threads()
    try:
        assert _default_workers() == 1
        _worker_init(1, False)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_console_script_is_installed() -> None:
    out = subprocess.run([sys.executable, "-m", "bench.cli", "list", "datasets"], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["scannet", "scannet200", "s3dis", "structured3d", "semantickitti", "nuscenes"]


FORWARD = """
import torch
from backbones.registry import create_backbone
from backbones.structures import PointBatch
import matplotlib.pyplot
net = create_backbone("spunet-micro")
coord = torch.rand(200, 3) * 2
net(PointBatch.collate([(coord.numpy(), (coord / 0.1).int().numpy(), torch.rand(200, 6).numpy())]))
"""


@pytest.mark.slow
def test_no_third_party_notice_reaches_the_terminal(tmp_path: Path) -> None:
    """A process set up as the command line and its workers are (``bench.console.configure``) prints nothing of
    the notices a sparse forward (torch's is_fx_tracing) and a fresh matplotlib font cache give; without it, they
    reach stderr."""
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}  # a fresh font cache: matplotlib logs building it
    setup = "import logging; logging.basicConfig(level=logging.INFO)\n"
    bare = subprocess.run([sys.executable, "-c", setup + FORWARD], capture_output=True, text=True, check=True, env=env)
    assert "is_fx_tracing" in bare.stderr and "fontManager" in bare.stderr, "the test's notices still exist"
    env["MPLCONFIGDIR"] = str(tmp_path / "mpl2")
    quiet = "from bench.console import configure; configure(worker=True)\n"
    done = subprocess.run([sys.executable, "-c", quiet + FORWARD], capture_output=True, text=True, check=True, env=env)
    assert done.stderr == ""


def test_list_backbones(capsys) -> None:
    assert main(["list", "backbones"]) == 0
    out = capsys.readouterr().out
    for name in ("spunet-v1m1", "spunet-mini", "timm:resnet18"):
        assert name in out
    assert "39.16M" in out and "96" in out
    assert main(["list", "backbones", "timm:*"]) == 0
    assert "spunet" not in capsys.readouterr().out


def test_list_tasks_shows_each_tasks_paper_number(capsys) -> None:  # noqa: ANN001
    assert main(["list", "tasks", "scannet-semseg,nuscenes-det*"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(rows) == {"scannet-semseg", "nuscenes-det-lidar", "nuscenes-det-camera", "nuscenes-det-fusion"}
    assert " 77.0 " in rows["scannet-semseg"]  # PonderV2's headline (tasks.references)


def test_list_recipes_names_each_presets_pretraining(capsys) -> None:  # noqa: ANN001
    assert main(["list", "recipes"]) == 0
    out = capsys.readouterr().out
    assert "indoor-mini" in out and "<mode>-mini epochs=20" in out and "backbone_lr_scale" in out


def test_synth_then_check(tmp_path: Path, capsys) -> None:
    assert main(["data", "synth", "--suite", "tiny", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "wrote the 'tiny' suite" in out and "PROBLEMS" not in out
    assert main(["data", "check", str(tmp_path)]) == 0


def test_synth_size_overrides(tmp_path: Path) -> None:
    assert main(["data", "synth", "--suite", "tiny", "--root", str(tmp_path), "--size", "scannet_scenes=(1, 1, 0)",
                 "--size", "kitti_scans={0: 1, 8: 1}"]) == 0
    assert len(list((tmp_path / "scannet" / "train").iterdir())) == 1
    assert not (tmp_path / "scannet" / "test").exists()
    with pytest.raises(SystemExit, match="unknown suite size fields"):
        main(["data", "synth", "--suite", "tiny", "--root", str(tmp_path / "x"), "--size", "rooms=3"])


def test_check_names_what_is_broken(tiny_copy: Path, capsys) -> None:
    bad = tiny_copy / "s3dis" / "Area_5" / "office_1" / "segment.npy"
    np.save(bad, np.load(bad)[:3])
    (tiny_copy / "semantickitti").rename(tiny_copy / "kitti-elsewhere")
    assert main(["data", "check", str(tiny_copy)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}: has 3 entries" in out
    assert re.search(r"semantickitti\s+absent", out) and "folder is missing" not in out
    assert main(["data", "check", str(tiny_copy), "--require", "semantickitti"]) == 1
    assert f"{tiny_copy / 'semantickitti'}: folder is missing (required)" in capsys.readouterr().out


def test_check_reports_absent_datasets_without_failing(tiny_root: Path, tmp_path: Path, capsys) -> None:
    """A root that holds only ScanNet is fine: the other datasets are absent, not problems."""
    import shutil

    shutil.copytree(tiny_root / "scannet", tmp_path / "scannet")
    assert main(["data", "check", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "PROBLEMS" not in out and len(re.findall(r" absent ", out)) == 4  # s3dis, structured3d, kitti, nuscenes
    assert main(["data", "check", str(tmp_path), "--require", "s3dis"]) == 1


def test_pretrain_needs_a_mode_or_preset(capsys) -> None:
    with pytest.raises(SystemExit, match=r"give --mode \(indoor, outdoor, image\)"):
        main(["pretrain", "--data", "anywhere"])
    with pytest.raises(SystemExit, match="unknown pre-training preset 'indor-mini'"):
        main(["pretrain", "--preset", "indor-mini", "--data", "anywhere"])


def test_written_files_follow_the_umask(tmp_path: Path) -> None:
    """Atomic writes go through mkstemp (mode 0600); the result must have the mode a plain open would give."""
    import os

    from tasks.io import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "table.csv", lambda tmp: tmp.write_text("a,b\n"))
        assert (tmp_path / "table.csv").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        atomic_write(tmp_path / "private.json", lambda tmp: tmp.write_text("{}"))
        assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_check_validates_instance_ids(tiny_copy: Path, capsys) -> None:
    """An instance id whose points carry two classes is not one object: data check names the scene."""
    scene = tiny_copy / "scannet" / "train" / "scene0000_00"
    instance, segment = np.load(scene / "instance.npy"), np.load(scene / "segment20.npy")
    label = {int(i): int(segment[instance == i][0]) for i in np.unique(instance[instance >= 0])}
    first = min(label)
    other = next(i for i in sorted(label) if label[i] != label[first])  # an object of another class
    instance[instance == other] = first
    np.save(scene / "instance.npy", instance)
    assert main(["data", "check", str(tiny_copy), "--datasets", "scannet"]) == 1
    assert f"train/scene0000_00: instance ids [{first}] span several classes" in capsys.readouterr().out
