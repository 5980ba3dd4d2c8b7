"""``ponderbench data synth``: write every benchmark's mini dataset, in its real format, under one root."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tasks.formats.room_frames import frames_folder, write_room_frames
from tasks.formats.s3dis import write_s3dis_room
from tasks.formats.scannet import write_scannet_frames, write_scannet_scene
from tasks.formats.semantickitti import write_semantickitti_scan, write_semantickitti_sequence_meta
from tasks.formats.structured3d import write_structured3d_room
from tasks.metrics.lowlevel import write_mesh
from tasks.synth.geometry import sample_surface
from tasks.synth.indoor import (
    TO_S3DIS,
    TO_SCANNET20,
    TO_SCANNET200,
    TO_STRUCTURED3D,
    make_room,
    room_cloud,
    room_views,
)
from tasks.synth.nuscenes_tables import NuScenesWriter
from tasks.synth.outdoor import NUSCENES_MIX, OUTDOOR_CLASSES, make_street, scan_lidar

# Scene names of the devkit's official v1.0-mini splits, so create_splits_scenes() applies unchanged.
NUSCENES_MINI_TRAIN = ("scene-0061", "scene-0553", "scene-0655", "scene-0757", "scene-0796", "scene-1077",
                       "scene-1094", "scene-1100")
NUSCENES_MINI_VAL = ("scene-0103", "scene-0916")
REFERENCE_DENSITY = 2500.0  # points per m^2 of a generated room's exact surface (2 cm apart)


@dataclass(frozen=True)
class SuiteSize:
    """How much of each dataset to generate."""

    scannet_scenes: tuple[int, int, int]  # train, val, test
    room_objects: int
    room_size: tuple[float, float]  # range of a room's sides, metres
    point_density: float  # surface points per m^2
    views_per_room: int
    view_size: tuple[int, int]  # width, height
    s3dis_rooms: dict[int, int]  # area -> rooms
    kitti_scans: dict[int, int]  # sequence -> scans
    lidar_azimuths: int
    nuscenes_scenes: tuple[int, int]  # train, val
    nuscenes_samples: int
    camera_size: tuple[int, int]
    test_views: int  # RGB-D frames of each ScanNet test scene (the low-level tasks fit and render them)
    structured3d_rooms: tuple[int, int] = (0, 0)  # train, val


SUITES = {
    "tiny": SuiteSize((2, 1, 1), 6, (4.0, 6.5), 150.0, 3, (64, 48), {1: 1, 2: 1, 5: 1}, {0: 2, 8: 1}, 256, (1, 1), 2,
                      (64, 36), 10, (2, 1)),
    # mini: enough training scenes that LR1/5/10/20 differ (1, 3, 6 and 12 of 60), sparse enough (100 points
    # per m^2, spunet-mini's 10 cm voxels) that a from-scratch fine-tune learns them on 2 cores in about a minute
    "mini": SuiteSize((60, 10, 1), 12, (4.0, 5.5), 100.0, 4, (160, 120), {1: 12, 2: 12, 3: 12, 4: 12, 6: 12, 5: 10},
                      {0: 40, 8: 5}, 1080, (6, 2), 4, (160, 90), 20, (24, 6)),
}


def suite_size(name: str, **overrides: object) -> SuiteSize:
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose one of {sorted(SUITES)}")
    base = SUITES[name]
    unknown = set(overrides) - {f.name for f in fields(SuiteSize)}
    if unknown:
        raise ValueError(f"unknown suite size fields {sorted(unknown)}")
    return SuiteSize(**{**base.__dict__, **overrides})


# written into each generated dataset folder: records say whether their numbers come from generated or real data
GENERATED_MARKER = ".ponderbench-generated.json"
# The dataset folders the generator writes, each with the job kind that writes it.
DATASETS = {"scannet": "scannet", "s3dis": "s3dis", "semantickitti": "kitti", "nuscenes": "nuscenes",
            "structured3d": "structured3d"}


def synthesize(root: str | Path, suite: str = "mini", seed: int = 0, progress: bool = True,
               datasets: Iterable[str] | None = None, workers: int = 1, **overrides: object) -> Path:
    """Write ScanNet(+200, +RGB-D), S3DIS, Structured3D, SemanticKITTI and nuScenes datasets under ``root``
    (``datasets``: only these folders of :data:`DATASETS`; ``workers``: processes writing the point-cloud scenes).

    Every dataset draws from generators seeded by its own scenes, so one written alone is byte for byte the one
    the whole suite holds. Each is written into a hidden folder beside its place and renamed into it when whole:
    a killed generation leaves no half dataset that a later run would take for a finished one. An existing
    dataset folder is refused, not overwritten.
    """
    root = Path(root)
    size = suite_size(suite, **overrides)
    chosen = list(DATASETS) if datasets is None else list(dict.fromkeys(datasets))
    unknown = sorted(set(chosen) - set(DATASETS))
    if unknown:
        raise ValueError(f"the generator writes no {unknown}; choose from {', '.join(DATASETS)}")
    existing = [str(root / d) for d in chosen if (root / d).exists()]
    if existing:
        raise FileExistsError(f"{', '.join(existing)} already exist(s); remove it or choose another root")
    partial = {d: root / f".{d}.partial" for d in chosen}
    for folder in partial.values():
        shutil.rmtree(folder, ignore_errors=True)  # left by a killed generation
    kinds = {DATASETS[d] for d in chosen}
    jobs = [job for job in (
        [("scannet", i) for i in range(sum(size.scannet_scenes))]
        + [("s3dis", (a, r)) for a, n in size.s3dis_rooms.items() for r in range(n)]
        + [("structured3d", i) for i in range(sum(size.structured3d_rooms))]
        + [("kitti", (s, f)) for s, n in size.kitti_scans.items() for f in range(n)]
        + [("nuscenes", i) for i in range(sum(size.nuscenes_scenes))]
    ) if job[0] in kinds]
    bar = tqdm(total=len(jobs), desc=f"synth {suite}", disable=not progress, unit="scene")
    folder_of = {kind: partial[d] for d, kind in DATASETS.items() if d in partial}
    scenes = [_SceneJob(kind, key, folder_of[kind], size, seed) for kind, key in jobs if kind != "nuscenes"]
    kitti_poses: dict[int, list[np.ndarray]] = {}
    for job, pose in zip(scenes, _map(_write_scene, scenes, workers), strict=True):
        if pose is not None:
            kitti_poses.setdefault(job.key[0], []).append(pose)
        bar.update()
    for seq, poses in kitti_poses.items():
        write_semantickitti_sequence_meta(partial["semantickitti"], seq, np.stack(poses),
                                          np.arange(len(poses)) * 0.1)
    if "nuscenes" in partial:  # one writer holds the tables of every scene: in this process
        nus = NuScenesWriter(partial["nuscenes"], "v1.0-mini", seed, size.camera_size, size.lidar_azimuths)
        n_train = size.nuscenes_scenes[0]
        for _, key in (job for job in jobs if job[0] == "nuscenes"):
            name = NUSCENES_MINI_TRAIN[key] if key < n_train else NUSCENES_MINI_VAL[key - n_train]
            rng = _rng(seed, "nuscenes", key)
            nus.add_scene(name, make_street(rng, mix=NUSCENES_MIX), size.nuscenes_samples, rng)
            bar.update()
        nus.finish()
    bar.close()
    for dataset, folder in partial.items():
        if folder.is_dir():  # a dataset sized to nothing has none
            (folder / GENERATED_MARKER).write_text(json.dumps({"generator": "ponderbench", "suite": suite,
                                                               "seed": seed}) + "\n")
            folder.rename(root / dataset)
    return root


def is_generated(folder: str | Path) -> bool:
    """Whether a dataset folder was written by this generator (its marker file), not a real dataset."""
    return (Path(folder) / GENERATED_MARKER).is_file()


def hash_key(kind: str) -> int:
    return sum(ord(c) * 31**i for i, c in enumerate(kind)) % (2**31)


def _rng(seed: int, kind: str, key: object) -> np.random.Generator:
    """The generator of one scene: it depends on the suite's seed and the scene alone."""
    return np.random.default_rng([seed, hash_key(kind), *np.atleast_1d(key)])


@dataclass(frozen=True)
class _SceneJob:
    """One independent scene of the point-cloud datasets (a ScanNet room, an S3DIS room, a SemanticKITTI scan)."""

    kind: str
    key: Any
    folder: Path
    size: SuiteSize
    seed: int


def _write_scene(job: _SceneJob) -> np.ndarray | None:
    """Write one scene; a SemanticKITTI scan returns its pose (the sequence's poses file is written last)."""
    rng = _rng(job.seed, job.kind, job.key)
    if job.kind == "scannet":
        _write_scannet(job.folder, job.key, job.size, rng)
    elif job.kind == "s3dis":
        _write_s3dis(job.folder, *job.key, job.size, rng)
    elif job.kind == "structured3d":
        _write_structured3d(job.folder, job.key, job.size, rng)
    else:
        return _write_kitti(job.folder, *job.key, job.size, rng)
    return None


def _map(fn: Callable[[_SceneJob], Any], jobs: list[_SceneJob], workers: int) -> Iterator[Any]:
    """``fn`` over ``jobs`` in order, in ``workers`` processes (here when 1): scenes share no state."""
    if workers <= 1 or len(jobs) < 2:
        yield from map(fn, jobs)
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        yield from pool.map(fn, jobs, chunksize=4)


def _write_scannet(root: Path, index: int, size: SuiteSize, rng: np.random.Generator) -> None:
    n_train, n_val, _ = size.scannet_scenes
    split = "train" if index < n_train else "val" if index < n_train + n_val else "test"
    name = f"scene{index:04d}_00"
    room = make_room(rng, size.room_objects, size.room_size)
    cloud = room_cloud(room, size.point_density, rng)
    arrays = dict(coord=cloud.coord, color=cloud.color, normal=cloud.normal,
                  segment20=TO_SCANNET20[cloud.kind], segment200=TO_SCANNET200[cloud.kind], instance=cloud.instance)
    if split == "test":  # the benchmark's test split ships without labels
        arrays = {k: v for k, v in arrays.items() if k not in ("segment20", "segment200", "instance")}
    write_scannet_scene(root, split, name, arrays)
    views = size.test_views if split == "test" else size.views_per_room
    write_scannet_frames(root / "rgbd" / name, room_views(room, views, *size.view_size, rng))
    if split == "test":  # the exact surface, where ScanNet keeps a scene's mesh: the reconstruction reference
        surface, _, _ = sample_surface(room.boxes, REFERENCE_DENSITY, rng)
        write_mesh(root / "scans" / name / f"{name}_vh_clean_2.ply", surface, np.zeros((0, 3), dtype=np.int64))


def _write_s3dis(root: Path, area: int, index: int, size: SuiteSize, rng: np.random.Generator) -> None:
    room = make_room(rng, size.room_objects, size.room_size)
    cloud = room_cloud(room, size.point_density, rng)
    name = f"office_{index + 1}"
    write_s3dis_room(root, area, name, dict(
        coord=cloud.coord, color=cloud.color, normal=cloud.normal, segment=TO_S3DIS[cloud.kind],
        instance=cloud.instance))
    # frames last, so the rooms are what they were before frames were written
    write_room_frames(frames_folder(root / f"Area_{area}" / name), room_views(room, size.views_per_room,
                                                                              *size.view_size, rng))


def _write_structured3d(root: Path, index: int, size: SuiteSize, rng: np.random.Generator) -> None:
    """One room per scene, numbered as Pointcept splits the dataset (val scenes from 3000)."""
    n_train = size.structured3d_rooms[0]
    split, scene = ("train", index) if index < n_train else ("val", 3000 + index - n_train)
    room = make_room(rng, size.room_objects, size.room_size)
    cloud = room_cloud(room, size.point_density, rng)
    folder = root / split / f"scene_{scene:05d}" / f"room_{int(rng.integers(1000))}"
    write_structured3d_room(root, split, folder.parent.name, folder.name, dict(
        coord=cloud.coord, color=cloud.color, normal=cloud.normal, segment=TO_STRUCTURED3D[cloud.kind]))
    write_room_frames(frames_folder(folder), room_views(room, size.views_per_room, *size.view_size, rng))


def _write_kitti(root: Path, seq: int, frame: int, size: SuiteSize, rng: np.random.Generator) -> np.ndarray:
    street = make_street(rng)
    pose = np.eye(4)
    pose[:3, 3] = (-street.length / 2 + 20.0 + 2.0 * frame, 0.0, 1.73)
    scan = scan_lidar(street.boxes, pose, size.lidar_azimuths, rng)
    local = scan.points - pose[:3, 3]
    raw = np.array([c.kitti for c in OUTDOOR_CLASSES])[scan.kind]
    instance = np.where(scan.instance >= 0, scan.instance + 1, 0)
    write_semantickitti_scan(root, seq, frame, np.c_[local, scan.intensity], raw, instance)
    return pose
