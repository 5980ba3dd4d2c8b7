"""Files from strangers load as data, never as code; bad inputs stop a command before any work.

Each malicious file is a pickle whose ``__reduce__`` calls ``os.system`` to create a marker file, as the issue's
``evil.pt`` did. It is offered everywhere the suite loads a pickle: a detector's ``model.pt``, a pre-training
checkpoint, a Pointcept data-efficient point list, an mmdet3d info file, a ``--inits`` export. Each must be
refused with a message naming the file, and the marker must never appear.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.cli import main
from tasks.errors import DataFormatError
from tasks.io import load_pickle, load_torch


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "code-ran"


def _evil_pickle(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"state": _Evil(marker)}))
    return path


def _evil_torch(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": _Evil(marker)}, path)
    return path


@pytest.mark.parametrize("write", [_evil_pickle, _evil_torch], ids=["raw-pickle", "torch-zip"])
def test_load_torch_refuses_code_and_names_the_file(write, tmp_path: Path, marker: Path) -> None:  # noqa: ANN001
    path = write(tmp_path / "weights.pt", marker)
    with pytest.raises(DataFormatError, match=f"^{path}: refused as a test file"):
        load_torch(path, "a test file")
    assert not marker.exists()


def test_load_torch_reads_tensors_and_numpy_arrays(tmp_path: Path) -> None:
    path = tmp_path / "points20"
    table = {"scene0000_00": np.array([3, 1, 4], dtype=np.int64), "scene0001_00": torch.tensor([5, 9])}
    torch.save(table, path)
    loaded = load_torch(path, "a point list")
    assert loaded["scene0000_00"].tolist() == [3, 1, 4] and loaded["scene0001_00"].tolist() == [5, 9]


def test_load_pickle_admits_data_only(tmp_path: Path, marker: Path) -> None:
    good = tmp_path / "info.pkl"
    data = {"data_list": [{"pose": np.eye(4, dtype=np.float32), "n": np.int64(3), "names": ("a", "b")}]}
    good.write_bytes(pickle.dumps(data, protocol=2))
    assert load_pickle(good, "an info file")["data_list"][0]["n"] == 3
    evil = _evil_pickle(tmp_path / "evil.pkl", marker)
    with pytest.raises(DataFormatError, match=f"^{evil}: refused: the pickle would import (posix|nt).system"):
        load_pickle(evil, "an info file")
    assert not marker.exists()


def test_a_detector_model_file_runs_no_code(tmp_path: Path, marker: Path, capsys: pytest.CaptureFixture) -> None:
    model = _evil_pickle(tmp_path / "run" / "model.pt", marker)
    (tmp_path / "run" / "model.json").write_text("{}")
    code = main(["detect", str(model), "--sample", str(tmp_path / "sample.pkl"), "--out", str(tmp_path / "out")])
    assert code == 2 and str(model) in capsys.readouterr().err
    assert not marker.exists()


def test_a_pretraining_checkpoint_runs_no_code(tiny_root: Path, tmp_path: Path, marker: Path) -> None:
    run = tmp_path / "pretrain"
    checkpoint = _evil_torch(run / "checkpoint.pt", marker)
    with pytest.raises(SystemExit, match=f"{checkpoint}: refused as a training checkpoint"):
        main(["pretrain", "--preset", "indoor-mini", "--data", str(tiny_root / "scannet"), "--out", str(run),
              "--resume", "--no-progress", "backbone=spunet-micro", "epochs=1", "steps_per_epoch=1"])
    assert not marker.exists()


def test_a_data_efficient_point_list_runs_no_code(tiny_root: Path, tmp_path: Path, marker: Path) -> None:
    from tasks.datasets import task_scenes
    from tasks.spec import get_task

    root = tmp_path / "data"
    shutil.copytree(tiny_root / "scannet", root / "scannet")
    listed = _evil_pickle(root / "scannet" / "tasks" / "points" / "points20", marker)
    with pytest.raises(DataFormatError, match=f"^{listed}: refused as a Pointcept data-efficient point list"):
        task_scenes(get_task("scannet-de-la20"), root, "train")
    assert not marker.exists()


def test_an_info_file_runs_no_code(tmp_path: Path, marker: Path) -> None:
    from tasks.formats.nuscenes import read_mmdet3d_info
    from tasks.formats.scannet import read_mmdet3d_posed_images

    info = _evil_pickle(tmp_path / "info.pkl", marker)
    for read in (read_mmdet3d_info, read_mmdet3d_posed_images):
        with pytest.raises(DataFormatError, match=f"^{info}: refused"):
            read(info)
    assert not marker.exists()


def test_inits_that_are_not_readable_exports_stop_the_command(tiny_root: Path, tmp_path: Path, marker: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    args = ["run", "--data", str(tiny_root), "--tasks", "scannet-semseg", "--results", str(tmp_path / "results"),
            "--protocols", "finetune", "--no-progress", "--inits"]
    for folder in ("lone", "broken"):
        (tmp_path / folder).mkdir()
        torch.save({}, tmp_path / folder / "backbone.pt")
    lone, broken = tmp_path / "lone" / "backbone.pt", tmp_path / "broken" / "backbone.pt"  # lone: a bare {}
    (broken.parent / "backbone.json").write_text("{not json")
    evil = _evil_torch(tmp_path / "evil" / "backbone.pt", marker)
    (evil.parent / "backbone.json").write_text(json.dumps({"backbone": "spunet-mini"}))
    for init, named, problem in ((lone, lone, "holds no weights"),
                                 (evil.parent, evil, "refused as a pre-trained export"),
                                 (broken, broken.parent / "backbone.json", "cannot be read")):
        assert main([*args, str(init)]) == 2
        err = capsys.readouterr().err
        assert f"{named}: {problem}" in err, err
    assert not marker.exists() and not (tmp_path / "results" / "runs").exists()  # refused before any work


def test_a_plugin_that_raises_on_import_stops_the_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    plugin = tmp_path / "broken_plugin.py"
    plugin.write_text("raise RuntimeError('no GPU here')\n")
    assert main(["list", "backbones", "--plugin", str(plugin)]) == 2
    err = capsys.readouterr().err
    assert f"{plugin}: the plugin failed on import: RuntimeError: no GPU here" in err
