"""Scenes of a task's splits, read from a data root, and the data-efficient subsets of ScanNet.

``task_scenes(spec, root, split)`` returns a sized, indexable collection of :class:`~tasks.structures.Scene`
for a registered task; ``expected_path`` says where the data must be (a missing root is reported by the
runner as "skipped", with that path).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from tasks.errors import DataFormatError
from tasks.spec import TaskSpec
from tasks.structures import Scene


def expected_path(spec: TaskSpec, root: str | Path) -> Path:
    return Path(root) / spec.dataset


class SceneList:
    """Scenes by index, loaded on demand from ``load(name)``; ``transform`` applies to each loaded scene."""

    def __init__(self, names: list[str], load, transform=None) -> None:  # noqa: ANN001
        self.names, self._load, self._transform = list(names), load, transform

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Scene:
        scene = self._load(self.names[index])
        return self._transform(scene) if self._transform else scene


def _dataset(spec: TaskSpec, path: Path, split: str):  # noqa: ANN202
    if spec.loader in ("scannet20", "scannet200"):
        from tasks.formats.scannet import ScanNetDataset

        return ScanNetDataset(path, split, label_set="segment20" if spec.loader == "scannet20" else "segment200")
    if spec.loader == "s3dis":
        from tasks.formats.s3dis import S3DISDataset

        return S3DISDataset(path, split)
    if spec.loader == "semantickitti":
        from tasks.formats.semantickitti import SemanticKITTIDataset

        return SemanticKITTIDataset(path, split)
    if spec.loader == "nuscenes":
        from tasks.formats.nuscenes import NuScenesLidarSegDataset

        versions = sorted(p.name for p in path.glob("v1.0-*") if p.is_dir())
        if not versions:
            raise DataFormatError(path, "no v1.0-* table folder (nuScenes layout)")
        version = "v1.0-trainval" if "v1.0-trainval" in versions else versions[0]
        return NuScenesLidarSegDataset(path, split, version=version)
    raise KeyError(f"task {spec.id}: unknown loader {spec.loader!r}")


def task_scenes(spec: TaskSpec, root: str | Path, split: str) -> SceneList:
    """The scenes of ``split`` ('train' or the task's eval split), with the task's protocol applied to train."""
    path = expected_path(spec, root)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: data for task {spec.id} not found")
    if spec.loader == "lidarseg-frames":
        from tasks.formats.nuscenes import read_lidarseg_frames

        frames = read_lidarseg_frames(path)
        held = {f.name for i, f in enumerate(frames) if i % 5 == 4}  # every 5th sweep is evaluated
        chosen = {f.name: f for f in frames if (f.name in held) == (split != "train")}
        return SceneList(sorted(chosen), chosen.__getitem__)
    data = _dataset(spec, path, split)
    if split != "train" or spec.protocol == "full":
        return SceneList(data.names, data.load)
    if spec.protocol == "limited-reconstruction":
        return SceneList(limited_scenes(data.names, spec.protocol_value, path), data.load)
    if spec.protocol == "limited-annotation":
        points = int(spec.protocol_value)
        table = _pointcept_points(path, points)
        return SceneList(data.names, data.load, lambda scene: limit_annotations(scene, points, table))
    raise ValueError(f"task {spec.id}: unknown protocol {spec.protocol!r}")


def limited_scenes(names: list[str], fraction: float, path: Path) -> list[str]:
    """Pointcept's ``tasks/scenes/<pct>.txt`` when the root has it, else a fixed pseudo-random subset
    (at least one scene) that depends only on the scene names."""
    listed = path / "tasks" / "scenes" / f"{round(fraction * 100)}.txt"
    if listed.is_file():
        wanted = {line.strip() for line in listed.read_text().splitlines() if line.strip()}
        chosen = [n for n in names if n in wanted]
        if not chosen:
            raise DataFormatError(listed, "lists none of the training scenes")
        return chosen
    order = sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())
    return sorted(order[:max(1, math.ceil(fraction * len(names)))])


def _pointcept_points(path: Path, points: int) -> dict | None:
    listed = path / "tasks" / "points" / f"points{points}"
    if not listed.is_file():
        return None
    import torch

    return torch.load(listed, weights_only=False)


def limit_annotations(scene: Scene, points: int, table: dict | None = None) -> Scene:
    """Keep the labels of ``points`` points per scene (Pointcept's table when given, else a fixed choice
    seeded by the scene name); every other point is ignored (-1)."""
    if scene.segment is None:
        raise DataFormatError(Path(scene.name), "limited-annotation protocol needs labels")
    if table is not None:
        if scene.name not in table:
            raise DataFormatError(Path(scene.name), f"scene missing from the points{points} table")
        keep = np.asarray(table[scene.name], dtype=np.int64)
    else:
        labelled = np.flatnonzero(scene.segment >= 0)
        seed = int.from_bytes(hashlib.sha256(scene.name.encode()).digest()[:8], "little")
        keep = np.random.default_rng(seed).choice(labelled, size=min(points, len(labelled)), replace=False)
    segment = np.full_like(scene.segment, -1)
    segment[keep] = scene.segment[keep]
    return replace(scene, segment=segment)
