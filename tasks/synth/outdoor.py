"""Procedural street scenes scanned by a simulated 32-beam spinning LiDAR, with 6 surround cameras."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.synth.geometry import TOP_ONLY, Boxes, raycast, render_view


@dataclass(frozen=True)
class OutdoorClass:
    """A kind of surface, its raw SemanticKITTI id, its nuScenes general class and detection box class."""

    name: str
    kitti: int
    nuscenes: str
    box: str | None  # nuScenes detection category of annotated objects
    reflectivity: float


OUTDOOR_CLASSES = (
    OutdoorClass("road", 40, "flat.driveable_surface", None, 0.25),
    OutdoorClass("sidewalk", 48, "flat.sidewalk", None, 0.35),
    OutdoorClass("terrain", 72, "flat.terrain", None, 0.3),
    OutdoorClass("building", 50, "static.manmade", None, 0.5),
    OutdoorClass("vegetation", 70, "static.vegetation", None, 0.45),
    OutdoorClass("trunk", 71, "static.vegetation", None, 0.4),
    OutdoorClass("pole", 80, "static.manmade", None, 0.6),
    OutdoorClass("traffic-sign", 81, "static.manmade", None, 0.95),
    OutdoorClass("car", 10, "vehicle.car", "vehicle.car", 0.7),
    OutdoorClass("truck", 18, "vehicle.truck", "vehicle.truck", 0.7),
    OutdoorClass("pedestrian", 30, "human.pedestrian.adult", "human.pedestrian.adult", 0.3),
    OutdoorClass("barrier", 51, "movable_object.barrier", "movable_object.barrier", 0.8),
    OutdoorClass("traffic-cone", 99, "movable_object.trafficcone", "movable_object.trafficcone", 0.9),
)
KIND = {c.name: i for i, c in enumerate(OUTDOOR_CLASSES)}
REFLECTIVITY = np.array([c.reflectivity for c in OUTDOOR_CLASSES])
OBJECT_SIZES = {  # (width, length, height) ranges
    "car": ((1.7, 2.0), (4.0, 4.8), (1.4, 1.7)),
    "truck": ((2.3, 2.6), (6.0, 9.0), (2.8, 3.5)),
    "pedestrian": ((0.5, 0.7), (0.5, 0.7), (1.6, 1.9)),
    "barrier": ((0.4, 0.5), (1.8, 2.2), (0.9, 1.1)),
    "traffic-cone": ((0.35, 0.45), (0.35, 0.45), (0.6, 0.8)),
}


@dataclass
class Street:
    boxes: Boxes
    length: float


def make_street(rng: np.random.Generator, length: float = 120.0, n_objects: int = 24) -> Street:
    """A straight street along x: road, sidewalks, terrain, buildings, trees, poles and traffic."""
    items: list[dict] = []
    half_l = length / 2

    def add(kind: str, center, half, color, yaw=0.0, texture=0, faces=None, instance=-1) -> None:
        item = dict(center=center, half=half, yaw=yaw, kind=KIND[kind], color=color, texture=texture,
                    instance=instance)
        if faces is not None:
            item["faces"] = faces
        items.append(item)

    add("road", (0, 0, -0.1), (half_l, 4.0, 0.1), (0.3, 0.3, 0.32), texture=2, faces=TOP_ONLY)
    for s in (-1, 1):
        add("sidewalk", (0, s * 5.25, -0.025), (half_l, 1.25, 0.175), (0.6, 0.6, 0.58), texture=1)
        add("terrain", (0, s * 9.25, -0.075), (half_l, 2.75, 0.125), (0.35, 0.5, 0.25), texture=3, faces=TOP_ONLY)
        x = -half_l
        while x < half_l:  # a row of buildings
            bl, bh = rng.uniform(8, 20), rng.uniform(6, 16)
            add("building", (x + bl / 2, s * rng.uniform(15.5, 17.0), bh / 2), (bl / 2 - 0.5, 3.0, bh / 2),
                rng.uniform(0.4, 0.85, 3), texture=int(rng.integers(1, 3)))
            x += bl
        for tx in np.arange(-half_l + rng.uniform(3, 8), half_l, rng.uniform(10, 16)):  # trees and poles
            y = s * rng.uniform(8.0, 11.0)
            add("trunk", (tx, y, 1.25), (0.15, 0.15, 1.25), (0.35, 0.25, 0.15))
            crown = rng.uniform(1.2, 2.0)
            add("vegetation", (tx, y, 2.5 + crown), (crown, crown, crown), (0.2, rng.uniform(0.45, 0.65), 0.2),
                texture=3)
            px = tx + rng.uniform(3, 5)
            add("pole", (px, s * 6.2, 2.5), (0.08, 0.08, 2.5), (0.5, 0.5, 0.5))
            if rng.random() < 0.4:
                add("traffic-sign", (px, s * 6.2, 4.6), (0.05, 0.4, 0.4), (0.9, 0.1, 0.1))
    instance = 0
    for _ in range(n_objects):
        name = str(rng.choice(list(OBJECT_SIZES), p=[0.45, 0.1, 0.25, 0.1, 0.1]))
        w, l, h = (rng.uniform(*r) for r in OBJECT_SIZES[name])
        x = rng.uniform(-half_l + 5, half_l - 5)
        if name in ("car", "truck"):
            y, z0 = rng.choice([-2.0, 2.0]) + rng.uniform(-0.4, 0.4), 0.0
            yaw = (0.0 if y > 0 else np.pi) + rng.uniform(-0.1, 0.1)
        elif name == "pedestrian":
            y, z0, yaw = rng.choice([-1, 1]) * rng.uniform(4.3, 6.2), 0.15, rng.uniform(-np.pi, np.pi)
        else:
            y, z0, yaw = rng.choice([-1, 1]) * rng.uniform(3.2, 3.8), 0.0, rng.uniform(-0.2, 0.2)
        center = np.array([x, y, z0 + h / 2])
        others = [it for it in items if it.get("instance", -1) >= 0]
        if any(np.linalg.norm(np.asarray(o["center"])[:2] - center[:2]) < (l + 2 * o["half"][1]) / 2 + 0.5
               for o in others):
            continue
        add(name, tuple(center), (l / 2, w / 2, h / 2), rng.uniform(0.1, 0.9, 3), yaw=yaw,
            texture=int(rng.integers(0, 3)), instance=instance)
        instance += 1
    return Street(Boxes.stack(items), length)


@dataclass
class LidarScan:
    points: np.ndarray  # (N, 3) world frame
    intensity: np.ndarray  # (N,) in [0, 1]
    ring: np.ndarray  # (N,) beam index
    kind: np.ndarray  # (N,) index into OUTDOOR_CLASSES
    instance: np.ndarray  # (N,) -1 for stuff
    box_index: np.ndarray  # (N,) hit box


def scan_lidar(boxes: Boxes, sensor_to_world: np.ndarray, azimuths: int, rng: np.random.Generator,
               beams: int = 32, max_range: float = 70.0) -> LidarScan:
    """A spinning LiDAR (HDL-32E-like elevations -30.67..+10.67 deg) at ``sensor_to_world``."""
    elev = np.deg2rad(np.linspace(-30.67, 10.67, beams))
    azim = np.linspace(-np.pi, np.pi, azimuths, endpoint=False)
    e, a = np.meshgrid(elev, azim, indexing="ij")
    dirs_s = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], -1).reshape(-1, 3)
    ring = np.repeat(np.arange(beams), azimuths)
    dirs = dirs_s @ sensor_to_world[:3, :3].T
    origin = np.broadcast_to(sensor_to_world[:3, 3], dirs.shape)
    t, idx, normal = raycast(boxes, origin, dirs)
    hit = np.isfinite(t) & (t < max_range) & (t > 1.0)
    t = t[hit] + rng.normal(0, 0.01, int(hit.sum()))
    idx = idx[hit]
    cos_inc = np.abs((normal[hit] * dirs[hit]).sum(-1))
    intensity = np.clip(REFLECTIVITY[boxes.kind[idx]] * (0.3 + 0.7 * cos_inc) + rng.normal(0, 0.02, len(t)), 0, 1)
    return LidarScan(origin[hit] + dirs[hit] * t[:, None], intensity, ring[hit], boxes.kind[idx],
                     boxes.instance[idx], idx)


def render_camera(boxes: Boxes, intrinsics: np.ndarray, cam_to_world: np.ndarray, width: int, height: int
                  ) -> np.ndarray:
    return render_view(boxes, intrinsics, cam_to_world, width, height, max_depth=80.0)[0]
