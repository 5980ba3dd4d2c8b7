"""``ponderbench data synth``: write every benchmark's mini dataset, in its real format, under one root."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tasks.formats.s3dis import write_s3dis_room
from tasks.formats.scannet import write_scannet_frames, write_scannet_scene
from tasks.formats.semantickitti import write_semantickitti_scan, write_semantickitti_sequence_meta
from tasks.metrics.lowlevel import write_mesh
from tasks.synth.geometry import sample_surface
from tasks.synth.indoor import TO_S3DIS, TO_SCANNET20, TO_SCANNET200, make_room, room_cloud, room_views
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


SUITES = {
    "tiny": SuiteSize((2, 1, 1), 6, (4.0, 6.5), 150.0, 3, (64, 48), {1: 1, 2: 1, 5: 1}, {0: 2, 8: 1}, 256, (1, 1), 2,
                      (64, 36), 10),
    # mini: enough training scenes that LR1/5/10/20 differ (1, 3, 6 and 12 of 60), sparse enough (100 points
    # per m^2, spunet-mini's 10 cm voxels) that a from-scratch fine-tune learns them on 2 cores in about a minute
    "mini": SuiteSize((60, 10, 1), 12, (4.0, 5.5), 100.0, 4, (160, 120), {1: 12, 2: 12, 3: 12, 4: 12, 6: 12, 5: 10},
                      {0: 40, 8: 5}, 1080, (6, 2), 4, (160, 90), 20),
}


def suite_size(name: str, **overrides: object) -> SuiteSize:
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose one of {sorted(SUITES)}")
    base = SUITES[name]
    unknown = set(overrides) - {f.name for f in fields(SuiteSize)}
    if unknown:
        raise ValueError(f"unknown suite size fields {sorted(unknown)}")
    return SuiteSize(**{**base.__dict__, **overrides})


def synthesize(root: str | Path, suite: str = "mini", seed: int = 0, progress: bool = True,
               **overrides: object) -> Path:
    """Write ScanNet(+200, +RGB-D), S3DIS, SemanticKITTI and nuScenes datasets under ``root``."""
    root = Path(root)
    size = suite_size(suite, **overrides)
    jobs = (
        [("scannet", i) for i in range(sum(size.scannet_scenes))]
        + [("s3dis", (a, r)) for a, n in size.s3dis_rooms.items() for r in range(n)]
        + [("kitti", (s, f)) for s, n in size.kitti_scans.items() for f in range(n)]
        + [("nuscenes", i) for i in range(sum(size.nuscenes_scenes))]
    )
    nus = NuScenesWriter(root / "nuscenes", "v1.0-mini", seed, size.camera_size, size.lidar_azimuths)
    kitti_poses: dict[int, list[np.ndarray]] = {}
    for kind, key in tqdm(jobs, desc=f"synth {suite}", disable=not progress, unit="scene"):
        rng = np.random.default_rng([seed, hash_key(kind), *np.atleast_1d(key)])
        if kind == "scannet":
            _write_scannet(root / "scannet", key, size, rng)
        elif kind == "s3dis":
            _write_s3dis(root / "s3dis", *key, size, rng)
        elif kind == "kitti":
            kitti_poses.setdefault(key[0], []).append(_write_kitti(root / "semantickitti", *key, size, rng))
        else:
            n_train = size.nuscenes_scenes[0]
            name = NUSCENES_MINI_TRAIN[key] if key < n_train else NUSCENES_MINI_VAL[key - n_train]
            nus.add_scene(name, make_street(rng, mix=NUSCENES_MIX), size.nuscenes_samples, rng)
    for seq, poses in kitti_poses.items():
        write_semantickitti_sequence_meta(root / "semantickitti", seq, np.stack(poses), np.arange(len(poses)) * 0.1)
    nus.finish()
    return root


def hash_key(kind: str) -> int:
    return sum(ord(c) * 31**i for i, c in enumerate(kind)) % (2**31)


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
    write_s3dis_room(root, area, f"office_{index + 1}", dict(
        coord=cloud.coord, color=cloud.color, normal=cloud.normal, segment=TO_S3DIS[cloud.kind],
        instance=cloud.instance))


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
