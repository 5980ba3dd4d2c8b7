"""Procedural indoor rooms (ceiling-less, like ScanNet scans) with furniture instances and RGB-D views."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.classes import S3DIS13, SCANNET20, SCANNET200
from tasks.structures import PosedViews
from tasks.synth.geometry import TOP_ONLY, Boxes, inside_any, look_at, render_view, sample_surface, shade


@dataclass(frozen=True)
class IndoorClass:
    """A kind of surface and its label in each indoor benchmark."""

    name: str
    scannet20: str
    scannet200: str
    s3dis: str
    size: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]  # (w, d, h) ranges in metres
    mount: str = "floor"  # floor | wall (against a wall, at ``height``) | stuff
    height: float = 0.0


INDOOR_CLASSES = (
    IndoorClass("wall", "wall", "wall", "wall", ((0, 0),) * 3, "stuff"),
    IndoorClass("floor", "floor", "floor", "floor", ((0, 0),) * 3, "stuff"),
    IndoorClass("cabinet", "cabinet", "cabinet", "clutter", ((0.6, 1.2), (0.4, 0.6), (0.8, 1.2))),
    IndoorClass("bed", "bed", "bed", "clutter", ((1.4, 1.8), (1.9, 2.1), (0.45, 0.6))),
    IndoorClass("chair", "chair", "chair", "chair", ((0.4, 0.55), (0.4, 0.55), (0.8, 1.0))),
    IndoorClass("sofa", "sofa", "couch", "sofa", ((1.6, 2.2), (0.8, 1.0), (0.7, 0.9))),
    IndoorClass("table", "table", "table", "table", ((0.8, 1.6), (0.6, 1.0), (0.7, 0.78))),
    IndoorClass("bookshelf", "bookshelf", "bookshelf", "bookcase", ((0.8, 1.2), (0.3, 0.4), (1.6, 2.0))),
    IndoorClass("desk", "desk", "desk", "table", ((1.0, 1.6), (0.6, 0.8), (0.72, 0.76))),
    IndoorClass("refrigerator", "refrigerator", "refrigerator", "clutter", ((0.6, 0.8), (0.6, 0.7), (1.6, 1.9))),
    IndoorClass("toilet", "toilet", "toilet", "clutter", ((0.4, 0.45), (0.6, 0.7), (0.4, 0.8))),
    IndoorClass("door", "door", "door", "door", ((0.8, 1.0), (0.06, 0.06), (2.0, 2.1)), "wall", 0.0),
    IndoorClass("window", "window", "window", "window", ((0.9, 1.6), (0.05, 0.05), (1.0, 1.3)), "wall", 0.9),
    IndoorClass("picture", "picture", "picture", "board", ((0.4, 0.9), (0.03, 0.03), (0.3, 0.7)), "wall", 1.4),
)
FURNITURE = [i for i, c in enumerate(INDOOR_CLASSES) if c.mount != "stuff"]
# Lookup tables kind -> label index in each benchmark.
TO_SCANNET20 = np.array([SCANNET20.index(c.scannet20) for c in INDOOR_CLASSES])
TO_SCANNET200 = np.array([SCANNET200.index(c.scannet200) for c in INDOOR_CLASSES])
TO_S3DIS = np.array([S3DIS13.index(c.s3dis) for c in INDOOR_CLASSES])


@dataclass
class Room:
    boxes: Boxes
    size: np.ndarray  # (3,) room extent


def make_room(rng: np.random.Generator, n_objects: int = 10) -> Room:
    """A rectangular room with four walls, a floor and ``n_objects`` furniture instances, non-overlapping."""
    w, d, h = rng.uniform(4.0, 6.5), rng.uniform(4.0, 6.5), rng.uniform(2.4, 2.9)
    t = 0.1
    kind = {c.name: i for i, c in enumerate(INDOOR_CLASSES)}
    wall_color = rng.uniform(0.6, 0.95, 3)
    items = [dict(center=(w / 2, d / 2, -t / 2), half=(w / 2, d / 2, t / 2), kind=kind["floor"],
                  color=rng.uniform(0.3, 0.7, 3), texture=1, faces=TOP_ONLY)]
    for cx, cy, hx, hy in ((w / 2, -t / 2, w / 2 + t, t / 2), (w / 2, d + t / 2, w / 2 + t, t / 2),
                           (-t / 2, d / 2, t / 2, d / 2), (w + t / 2, d / 2, t / 2, d / 2)):
        items.append(dict(center=(cx, cy, h / 2), half=(hx, hy, h / 2), kind=kind["wall"], color=wall_color))
    placed: list[tuple[float, float, float, float]] = []  # floor footprints (x0, y0, x1, y1)
    instance = 0
    for _ in range(n_objects * 20):
        if instance >= n_objects:
            break
        k = int(rng.choice(FURNITURE))
        cls = INDOOR_CLASSES[k]
        bw, bd, bh = (rng.uniform(*r) for r in cls.size)
        color = rng.uniform(0.15, 0.9, 3)
        texture = int(rng.integers(0, 4))
        if cls.mount == "wall":
            side = int(rng.integers(0, 4))
            along = w if side < 2 else d
            if along < bw + 0.4:
                continue
            s = rng.uniform(bw / 2 + 0.2, along - bw / 2 - 0.2)
            z = cls.height + bh / 2
            if side < 2:
                center, half, yaw = (s, 0.0 if side == 0 else d, z), (bw / 2, bd / 2 + 0.01, bh / 2), 0.0
            else:
                center, half, yaw = (0.0 if side == 2 else w, s, z), (bw / 2, bd / 2 + 0.01, bh / 2), np.pi / 2
            items.append(dict(center=center, half=half, yaw=yaw, kind=k, instance=instance, color=color,
                              texture=texture))
            instance += 1
            continue
        yaw = float(rng.choice([0.0, np.pi / 2]))
        fx, fy = (bw, bd) if yaw == 0.0 else (bd, bw)
        x, y = rng.uniform(fx / 2 + 0.15, w - fx / 2 - 0.15), rng.uniform(fy / 2 + 0.15, d - fy / 2 - 0.15)
        box = (x - fx / 2, y - fy / 2, x + fx / 2, y + fy / 2)
        if any(box[0] < p[2] + 0.2 and p[0] < box[2] + 0.2 and box[1] < p[3] + 0.2 and p[1] < box[3] + 0.2
               for p in placed):
            continue
        placed.append(box)
        items.append(dict(center=(x, y, bh / 2), half=(bw / 2, bd / 2, bh / 2), yaw=yaw, kind=k,
                          instance=instance, color=color, texture=texture))
        instance += 1
    return Room(Boxes.stack(items), np.array([w, d, h]))


@dataclass
class RoomCloud:
    coord: np.ndarray  # (N, 3) float32
    color: np.ndarray  # (N, 3) uint8
    normal: np.ndarray  # (N, 3) float32
    kind: np.ndarray  # (N,) index into INDOOR_CLASSES
    instance: np.ndarray  # (N,)


def room_cloud(room: Room, density: float, rng: np.random.Generator) -> RoomCloud:
    points, normals, owner = sample_surface(room.boxes, density, rng)
    return RoomCloud(points.astype(np.float32), shade(room.boxes, points, normals, owner),
                     normals.astype(np.float32), room.boxes.kind[owner], room.boxes.instance[owner])


def room_views(room: Room, n_views: int, width: int, height: int, rng: np.random.Generator) -> PosedViews:
    """Views from inside the room at head height, looking at random points of the room."""
    f = 585.0 / 640.0 * width  # the field of view of ScanNet / 7-Scenes depth cameras
    k = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1.0]])
    images, depths, poses = [], [], []
    w, d, _ = room.size
    while len(images) < n_views:
        eye = np.array([rng.uniform(0.5, w - 0.5), rng.uniform(0.5, d - 0.5), rng.uniform(1.2, 1.7)])
        target = np.array([rng.uniform(0.3, w - 0.3), rng.uniform(0.3, d - 0.3), rng.uniform(0.2, 1.0)])
        if np.linalg.norm(target[:2] - eye[:2]) < 1.0 or inside_any(room.boxes, eye[None], np.zeros(1, int))[0]:
            continue
        c2w = look_at(eye, target)
        rgb, depth, _ = render_view(room.boxes, k, c2w, width, height)
        if (depth > 0).mean() < 0.5:  # inside furniture or looking mostly at nothing
            continue
        images.append(rgb)
        depths.append(depth)
        poses.append(c2w)
    return PosedViews(np.stack(images), np.stack(depths), np.repeat(k[None], n_views, 0), np.stack(poses))
