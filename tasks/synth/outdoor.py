"""Procedural street scenes scanned by a simulated 32-beam spinning LiDAR, with 6 surround cameras."""

from __future__ import annotations

from dataclasses import dataclass, replace

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
    # the rest of nuScenes' 10 detection classes (SemanticKITTI raw ids: 13 bus, 20 other-vehicle)
    OutdoorClass("bus", 13, "vehicle.bus.rigid", "vehicle.bus.rigid", 0.7),
    OutdoorClass("trailer", 20, "vehicle.trailer", "vehicle.trailer", 0.65),
    OutdoorClass("construction-vehicle", 20, "vehicle.construction", "vehicle.construction", 0.75),
    OutdoorClass("bicycle", 11, "vehicle.bicycle", "vehicle.bicycle", 0.55),
    OutdoorClass("motorcycle", 15, "vehicle.motorcycle", "vehicle.motorcycle", 0.65),
)
KIND = {c.name: i for i, c in enumerate(OUTDOOR_CLASSES)}
REFLECTIVITY = np.array([c.reflectivity for c in OUTDOOR_CLASSES])
OBJECT_SIZES = {  # (width, length, height) ranges
    "car": ((1.7, 2.0), (4.0, 4.8), (1.4, 1.7)),
    "truck": ((2.3, 2.6), (6.0, 9.0), (2.8, 3.5)),
    "pedestrian": ((0.5, 0.7), (0.5, 0.7), (1.6, 1.9)),
    "barrier": ((0.4, 0.5), (1.8, 2.2), (0.9, 1.1)),
    "traffic-cone": ((0.35, 0.45), (0.35, 0.45), (0.6, 0.8)),
    "bus": ((2.8, 3.0), (10.0, 12.0), (3.2, 3.6)),
    "trailer": ((2.4, 2.8), (8.0, 11.0), (3.5, 4.0)),
    "construction-vehicle": ((2.6, 3.0), (5.5, 7.0), (2.8, 3.4)),
    "bicycle": ((0.5, 0.7), (1.6, 1.9), (1.1, 1.4)),
    "motorcycle": ((0.7, 0.9), (1.9, 2.3), (1.3, 1.6)),
}
# probability of each object class on a street: SemanticKITTI scans draw the first five (as they always have),
# nuScenes drives every detection class
KITTI_MIX = {"car": 0.45, "truck": 0.1, "pedestrian": 0.25, "barrier": 0.1, "traffic-cone": 0.1}
NUSCENES_MIX = {"car": 0.3, "truck": 0.08, "pedestrian": 0.2, "barrier": 0.1, "traffic-cone": 0.1, "bus": 0.04,
                "trailer": 0.04, "construction-vehicle": 0.04, "bicycle": 0.05, "motorcycle": 0.05}
IN_LANE = ("car", "truck", "bus", "trailer", "construction-vehicle", "motorcycle")
# speed range (m/s) of the objects that move, and the chance that one does; the rest stand still
MOTION = {"car": (0.5, (3.0, 10.0)), "truck": (0.4, (3.0, 8.0)), "bus": (0.5, (3.0, 8.0)),
          "motorcycle": (0.5, (3.0, 10.0)), "bicycle": (0.5, (2.0, 5.0)), "pedestrian": (0.4, (0.8, 1.6))}


@dataclass
class Street:
    boxes: Boxes
    length: float

    def moved(self, velocity: np.ndarray, seconds: float) -> Boxes:
        """The boxes after ``seconds`` of constant ``velocity`` (P, 2), in metres per second along x and y."""
        center = self.boxes.center.copy()
        center[:, :2] += velocity * seconds
        return replace(self.boxes, center=center)


def street_motion(street: Street, rng: np.random.Generator, duration: float) -> np.ndarray:
    """Velocities (P, 2) of the street's boxes over a drive of ``duration`` seconds.

    Objects move along their heading (:data:`MOTION`), the movers of one direction at the same point of their
    class's speed range; an object that would run into another within ``duration`` (relative motion, box extents
    included) stands still instead. Everything else (and all stuff) has velocity 0.
    """
    boxes = street.boxes
    velocity = np.zeros((len(boxes), 2))
    objects = np.flatnonzero(boxes.instance >= 0)
    flow = {d: rng.uniform(0.7, 1.0) for d in (-1, 1)}  # where in its class's speed range, per direction
    for b in objects:
        chance, (low, high) = MOTION.get(OUTDOOR_CLASSES[boxes.kind[b]].name, (0.0, (0.0, 0.0)))
        if rng.random() < chance:
            heading = np.array([np.cos(boxes.yaw[b]), np.sin(boxes.yaw[b])])
            velocity[b] = (low + flow[int(np.sign(heading[0]) or 1)] * (high - low)) * heading
    for b in objects[np.linalg.norm(velocity[objects], axis=1) > 0]:
        for o in objects[objects != b]:  # in o's frame of motion, b sweeps a path; o must not lie on it
            path = (velocity[b] - velocity[o]) * duration
            span = float(np.linalg.norm(path))
            if span == 0:
                continue
            offset = boxes.center[o, :2] - boxes.center[b, :2]
            ahead = offset @ path / span
            side = abs(float(np.cross(path / span, offset)))
            reach = boxes.half[b, 0] + boxes.half[o, :2].max() + 0.3
            if -reach < ahead < span + reach and side < boxes.half[b, 1] + boxes.half[o, :2].max() + 0.3:
                velocity[b] = 0.0
                break
    return velocity


def make_street(rng: np.random.Generator, length: float = 120.0, n_objects: int = 24,
                mix: dict[str, float] | None = None) -> Street:
    """A straight street along x: road, sidewalks, terrain, buildings, trees, poles and traffic drawn from ``mix``
    (default :data:`KITTI_MIX`), objects at least 0.5 m apart along the street.

    The default streets (SemanticKITTI's) keep the spacing rule their published mini numbers were made with, which
    reads the other object's half-width where its half-length is meant; with a ``mix`` (nuScenes, whose buses and
    trailers are 8-12 m long) the half-length is used.
    """
    legacy_spacing = mix is None
    mix = mix or KITTI_MIX
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
        name = str(rng.choice(list(mix), p=list(mix.values())))
        w, l, h = (rng.uniform(*r) for r in OBJECT_SIZES[name])
        x = rng.uniform(-half_l + 5, half_l - 5)
        if name in IN_LANE:
            y, z0 = rng.choice([-2.0, 2.0]) + rng.uniform(-0.4, 0.4), 0.0
            yaw = (0.0 if y > 0 else np.pi) + rng.uniform(-0.1, 0.1)
        elif name == "pedestrian":
            y, z0, yaw = rng.choice([-1, 1]) * rng.uniform(4.3, 6.2), 0.15, rng.uniform(-np.pi, np.pi)
        elif name == "bicycle":  # at the kerb, riding with the traffic
            side = rng.choice([-1.0, 1.0])
            y, z0, yaw = side * rng.uniform(3.2, 3.6), 0.0, (0.0 if side > 0 else np.pi) + rng.uniform(-0.1, 0.1)
        else:
            y, z0, yaw = rng.choice([-1, 1]) * rng.uniform(3.2, 3.8), 0.0, rng.uniform(-0.2, 0.2)
        center = np.array([x, y, z0 + h / 2])
        others = [it for it in items if it.get("instance", -1) >= 0]
        if any(np.linalg.norm(np.asarray(o["center"])[:2] - center[:2])
               < l / 2 + o["half"][1 if legacy_spacing else 0] + 0.5 for o in others):
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
