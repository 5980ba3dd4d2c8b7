"""Scenes of a task's splits, read from a data root, and the data-efficient subsets of ScanNet.

:data:`DATASETS` is the one table of dataset formats: the folder each lives in, how a split of it becomes scenes
(:func:`open_dataset`), which pre-training reads it; fine-tuning (``TaskSpec.loader``), ``data check`` and
pre-training all read it; :func:`nuscenes_version` is the one rule for which
nuScenes tables are read. ``task_scenes(spec, root, split)`` applies a task's protocol on top;
``expected_path`` says where the data must be (a missing root is reported by the runner as "skipped").
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tasks.contract import split_heldout
from tasks.errors import DataFormatError
from tasks.formats.base import SceneDataset
from tasks.io import load_torch
from tasks.spec import TaskSpec
from tasks.structures import PosedViews, Scene


def expected_path(spec: TaskSpec, root: str | Path) -> Path:
    return Path(root) / spec.dataset


class SceneList:
    """Scenes by index, loaded on demand from ``load(name)``; ``transform`` applies to each loaded scene."""

    def __init__(self, names: list[str], load, transform=None) -> None:  # noqa: ANN001
        self.names, self._load, self._transform = list(names), load, transform

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Scene:
        return self.load(self.names[index])

    def load(self, name: str) -> Scene:
        scene = self._load(name)
        return self._transform(scene) if self._transform else scene


def nuscenes_version(root: str | Path, requested: str | None = None) -> str:
    """The one nuScenes version rule: the one the user names, else ``v1.0-trainval`` when present, else the only
    (or first, sorted) ``v1.0-*`` table folder."""
    root = Path(root)
    found = sorted(p.name for p in root.glob("v1.0-*") if p.is_dir())
    if requested is not None:
        if requested not in found:
            raise DataFormatError(root / requested, f"nuScenes table folder not found (present: {found or 'none'})")
        return requested
    if not found:
        raise DataFormatError(root, "no v1.0-* table folder (nuScenes layout)")
    return "v1.0-trainval" if "v1.0-trainval" in found else found[0]


def _lidarseg_frames(path: Path, split: str) -> SceneList:
    """Loose real lidarseg sweeps: the contract's held-out rule makes the evaluation split."""
    from tasks.formats.nuscenes import read_lidarseg_frames

    train, held = split_heldout(read_lidarseg_frames(path))
    chosen = {f.name: f for f in (train if split == "train" else held)}
    return SceneList(sorted(chosen), chosen.__getitem__)


def _scannet(label_set: str) -> Callable[..., SceneDataset]:
    def open_scannet(path: Path, split: str, **options: object) -> SceneDataset:
        from tasks.formats.scannet import ScanNetDataset

        return ScanNetDataset(path, split, label_set=label_set, **options)

    return open_scannet


def _structured3d(path: Path, split: str, **options: object) -> SceneDataset:
    from tasks.formats.structured3d import Structured3DDataset

    return Structured3DDataset(path, split, **options)


def _s3dis(path: Path, split: str, **options: object) -> SceneDataset:
    from tasks.formats.s3dis import S3DISDataset

    return S3DISDataset(path, split, **options)


def _semantickitti(path: Path, split: str) -> SceneDataset:
    from tasks.formats.semantickitti import SemanticKITTIDataset

    return SemanticKITTIDataset(path, split)


def _nuscenes(path: Path, split: str, version: str | None = None, with_cameras: bool = False) -> SceneDataset:
    from tasks.formats.nuscenes import NuScenesLidarSegDataset

    return NuScenesLidarSegDataset(path, split, version=nuscenes_version(path, version), with_cameras=with_cameras)


def _fused_with_views(views: PosedViews, name: str) -> Scene:
    """A cloud fused from RGB-D frames, the frames attached (the low-level tasks split them themselves)."""
    from tasks.formats.rgbd_frames import fuse_views

    return replace(fuse_views(views, name), views=views)


def _rgbd_capture(path: Path, split: str) -> SceneList:
    """A 7-Scenes-style RGB-D folder as one scene, its cloud fused from every frame and every frame attached (the
    low-level tasks split the frames by the contract's held-out rule themselves; ``split`` names no subset)."""
    from tasks.formats.rgbd_folder import RGBDFolder

    folder = RGBDFolder(path)  # a missing or empty folder is refused here, naming it
    return SceneList([path.name], lambda name: _fused_with_views(folder.views(), path.name))


def _scannet_frames(path: Path, split: str) -> SceneList:
    """The RGB-D frames (``rgbd/<scene>``) of a ScanNet split's scenes, each scene a cloud fused from its frames
    with the frames attached; labels are not read (the test split has none)."""
    from tasks.formats.scannet import ScanNetDataset, read_scannet_frames

    return SceneList(ScanNetDataset(path, split).names,
                     lambda name: _fused_with_views(read_scannet_frames(path / "rgbd" / name), name))


@dataclass(frozen=True)
class DatasetFormat:
    """One on-disk dataset format: its folder under a data root, how a split of it becomes scenes, which
    pre-training modes read it (and how a folder given to ``pretrain --data`` is recognised as it), whether
    ``ponderbench data check`` checks it, and its dataset condition: Pointcept's name for it, by which PDNorm
    backbones (``spunet-v1m3``) and Point Prompt Training pick their norms and class sets."""

    folder: str
    open: Callable[..., SceneDataset | SceneList]  # (path, split, **options)
    pretrain: tuple[str, ...] = ()  # modes; the first format of a mode here is what the matrix pre-trains on
    found: Callable[[Path], bool] | None = None  # whether a folder holds this format (pre-training's --data)
    checked: bool = False
    condition: str | None = None


# the one table from dataset folders to loaders, for fine-tuning (TaskSpec.loader), pre-training and data check
DATASETS: dict[str, DatasetFormat] = {
    "scannet": DatasetFormat("scannet", _scannet("segment20"), pretrain=("indoor", "image"),
                             found=lambda p: any((p / "train").glob("scene[0-9]*")), checked=True,
                             condition="ScanNet"),
    "scannet200": DatasetFormat("scannet", _scannet("segment200"), checked=True, condition="ScanNet"),
    "scannet-rgbd": DatasetFormat("scannet", _scannet_frames, condition="ScanNet"),
    "rgbd-folder": DatasetFormat("7scenes-rgbd", _rgbd_capture, pretrain=("indoor", "image"),
                                 found=lambda p: (p / "camera-intrinsics.txt").is_file()),
    # S3DIS and Structured3D are pre-trained on through their rooms' RGB-D frames (tasks.formats.room_frames)
    "s3dis": DatasetFormat("s3dis", _s3dis, pretrain=("indoor",), found=lambda p: any(p.glob("Area_[0-9]*")),
                           checked=True, condition="S3DIS"),
    "structured3d": DatasetFormat("structured3d", _structured3d, pretrain=("indoor",),
                                  found=lambda p: any((p / "train").glob("scene_*")), checked=True,
                                  condition="Structured3D"),
    "semantickitti": DatasetFormat("semantickitti", _semantickitti, pretrain=("outdoor",),
                                   found=lambda p: (p / "sequences").is_dir(), checked=True),
    "nuscenes": DatasetFormat("nuscenes", _nuscenes, pretrain=("outdoor",), found=lambda p: any(p.glob("v1.0-*")),
                              checked=True),
    "lidarseg-frames": DatasetFormat("nuscenes-lidarseg-samples", _lidarseg_frames, pretrain=("outdoor",),
                                     found=lambda p: any(p.glob("*/points.bin"))),
}


def dataset_format(name: str) -> DatasetFormat:
    if name not in DATASETS:
        raise KeyError(f"unknown dataset format {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def pretrain_dataset(mode: str) -> str:
    """The dataset folder the matrix pre-trains a ``mode`` export on: the first format of the table that serves it."""
    return next(f.folder for f in DATASETS.values() if mode in f.pretrain)


def open_dataset(loader: str, path: str | Path, split: str, **options: object) -> SceneDataset | SceneList:
    """The scenes of ``split`` of the dataset at ``path`` read as ``loader`` (a key of :data:`DATASETS`)."""
    return dataset_format(loader).open(Path(path), split, **options)


def task_scenes(spec: TaskSpec, root: str | Path, split: str) -> SceneList:
    """The scenes of ``split`` ('train' or the task's eval split), with the task's protocol applied to train."""
    path = expected_path(spec, root)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: data for task {spec.id} not found")
    data = open_dataset(spec.loader, path, split)
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
    return load_torch(listed, "a Pointcept data-efficient point list")


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
