"""Structured3D in Pointcept's layout: the generator writes it, the loader and ``data check`` read it, and its
dataset condition reaches PDNorm backbones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.check import check_dataset
from tasks.classes import STRUCTURED3D25
from tasks.datasets import DATASETS, open_dataset
from tasks.errors import DataFormatError


def test_the_generated_structured3d_is_in_pointcepts_layout_with_its_25_classes(tiny_root: Path) -> None:
    root = tiny_root / "structured3d"
    rooms = sorted(p.relative_to(root).as_posix() for p in root.glob("*/scene_*/room_*") if p.name[-1].isdigit())
    assert [r.split("/")[0] for r in rooms] == ["train", "train", "val"]
    assert all(r.split("/")[1] == "scene_03000" for r in rooms if r.startswith("val"))
    assert {f.name for f in (root / rooms[0]).iterdir()} == {"coord.npy", "color.npy", "normal.npy", "segment.npy"}
    assert all((root / f"{r}_rgbd").is_dir() for r in rooms)  # PonderV2's frames beside each room
    train = open_dataset("structured3d", root, "train")
    scene = train[0]
    assert len(train) == 2 and scene.name.startswith("scene_00000/room_")
    assert scene.segment.min() >= -1 and scene.segment.max() < len(STRUCTURED3D25)
    labelled = {STRUCTURED3D25[i] for i in np.unique(scene.segment) if i >= 0}
    assert {"wall", "floor"} <= labelled
    assert DATASETS["structured3d"].condition == "Structured3D"
    report = check_dataset("structured3d", tiny_root)
    assert report.ok and report.splits == {"train": 2, "val": 1}


def test_a_label_outside_the_25_classes_is_named(tiny_copy: Path) -> None:
    room = next((tiny_copy / "structured3d" / "train").glob("scene_*/room_*[0-9]"))
    segment = np.load(room / "segment.npy")
    segment[0] = 25
    np.save(room / "segment.npy", segment)
    with pytest.raises(DataFormatError, match="segment.npy"):
        open_dataset("structured3d", tiny_copy / "structured3d", "train").load(
            f"{room.parent.name}/{room.name}")
    report = check_dataset("structured3d", tiny_copy)
    assert not report.ok and "segment.npy" in report.problems[0]
