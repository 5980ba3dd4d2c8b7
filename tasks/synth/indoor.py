"""Procedural indoor rooms (ceiling-less, like ScanNet scans) with furniture instances and RGB-D views."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.classes import S3DIS13, SCANNET20, SCANNET200, STRUCTURED3D25
from tasks.structures import PosedViews
from tasks.synth.geometry import TOP_ONLY, Boxes, inside_any, look_at, render_view, sample_surface, shade


@dataclass(frozen=True)
class IndoorClass:
    """A kind of surface, its label in each indoor benchmark, its size and its usual colours."""

    name: str
    scannet20: str
    scannet200: str
    s3dis: str
    size: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]  # (w, d, h) ranges in metres
    mount: str = "floor"  # floor | wall (against a wall, at ``height``) | stuff
    height: float = 0.0
    palette: tuple[tuple[float, float, float], ...] = ()  # usual albedos; empty: any colour


WOOD, LIGHT_WOOD, WHITE, GREY = (0.5, 0.34, 0.2), (0.72, 0.56, 0.38), (0.88, 0.87, 0.84), (0.55, 0.56, 0.58)
BEDDING, METAL, DARK = (0.9, 0.9, 0.86), (0.7, 0.7, 0.72), (0.15, 0.13, 0.12)
INDOOR_CLASSES = (
    IndoorClass("wall", "wall", "wall", "wall", ((0, 0),) * 3, "stuff"),
    IndoorClass("floor", "floor", "floor", "floor", ((0, 0),) * 3, "stuff"),
    IndoorClass("cabinet", "cabinet", "cabinet", "clutter", ((0.6, 1.2), (0.4, 0.6), (0.8, 1.2)),
                palette=(WOOD, WHITE, LIGHT_WOOD)),
    IndoorClass("bed", "bed", "bed", "clutter", ((1.4, 1.8), (1.9, 2.1), (0.9, 1.1)), palette=(WOOD, LIGHT_WOOD)),
    IndoorClass("chair", "chair", "chair", "chair", ((0.4, 0.55), (0.4, 0.55), (0.8, 1.0)),
                palette=(DARK, WOOD, (0.6, 0.2, 0.15))),
    IndoorClass("sofa", "sofa", "couch", "sofa", ((1.6, 2.2), (0.8, 1.0), (0.7, 0.9)),
                palette=((0.3, 0.36, 0.5), (0.5, 0.27, 0.22), (0.42, 0.42, 0.4))),
    IndoorClass("table", "table", "table", "table", ((0.8, 1.6), (0.6, 1.0), (0.7, 0.78)),
                palette=(WOOD, LIGHT_WOOD, WHITE)),
    IndoorClass("bookshelf", "bookshelf", "bookshelf", "bookcase", ((0.8, 1.2), (0.3, 0.4), (1.6, 2.0)),
                palette=(WOOD, LIGHT_WOOD)),
    IndoorClass("desk", "desk", "desk", "table", ((1.0, 1.6), (0.6, 0.8), (0.72, 0.76)),
                palette=(GREY, WHITE, WOOD)),
    IndoorClass("refrigerator", "refrigerator", "refrigerator", "clutter", ((0.6, 0.8), (0.6, 0.7), (1.6, 1.9)),
                palette=(WHITE, GREY)),
    IndoorClass("toilet", "toilet", "toilet", "clutter", ((0.38, 0.45), (0.6, 0.7), (0.75, 0.8)), palette=(WHITE,)),
    IndoorClass("door", "door", "door", "door", ((0.8, 1.0), (0.06, 0.06), (2.0, 2.1)), "wall", 0.0,
                palette=(WOOD, WHITE)),
    IndoorClass("window", "window", "window", "window", ((0.9, 1.6), (0.2, 0.2), (1.0, 1.3)), "wall", 0.9,
                palette=((0.62, 0.74, 0.85),)),
    IndoorClass("picture", "picture", "picture", "board", ((0.4, 0.9), (0.03, 0.03), (0.3, 0.7)), "wall", 1.4),
)
FURNITURE = [i for i, c in enumerate(INDOOR_CLASSES) if c.mount != "stuff"]
# Lookup tables kind -> label index in each benchmark.
TO_SCANNET20 = np.array([SCANNET20.index(c.scannet20) for c in INDOOR_CLASSES])
TO_SCANNET200 = np.array([SCANNET200.index(c.scannet200) for c in INDOOR_CLASSES])
TO_S3DIS = np.array([S3DIS13.index(c.s3dis) for c in INDOOR_CLASSES])
_STRUCTURED3D_NAMES = {"bookshelf": "shelves", "toilet": "otherfurniture"}  # the rest keep their own names
TO_STRUCTURED3D = np.array([STRUCTURED3D25.index(_STRUCTURED3D_NAMES.get(c.name, c.name)) for c in INDOOR_CLASSES])

Vec = tuple[float, float, float]
Part = tuple[Vec, Vec] | tuple[Vec, Vec, Vec]  # centre, size in the object's frame[, own albedo]


def _legs(w: float, d: float, top: float, side: float = 0.05, inset: float = 0.03) -> list[Part]:
    x, y = w / 2 - inset - side / 2, d / 2 - inset - side / 2
    return [((sx * x, sy * y, top / 2), (side, side, top)) for sx in (-1, 1) for sy in (-1, 1)]


def furniture_parts(name: str, w: float, d: float, h: float, rng: np.random.Generator) -> list[Part]:
    """The boxes an object is built of, in its frame: x across its width, y from front (-) to back (+), z up
    from the floor (a wall object's back is the wall). Objects of one class share a structure (legs, panels,
    shelves), so a network can tell a table from a desk by shape as in real scans, not by size alone."""
    thin = 0.04
    if name == "bed":
        return [((0, 0, 0.15), (w, d, 0.3)), ((0, -0.04, 0.4), (w - 0.06, d - 0.12, 0.2), BEDDING),
                ((0, d / 2 - 0.04, h / 2), (w, 0.08, h)), ((0, d / 2 - 0.3, 0.56), (0.6 * w, 0.35, 0.12), BEDDING)]
    if name == "chair":
        seat = 0.45
        return [*_legs(w, d, seat - thin, 0.04), ((0, 0, seat - thin / 2), (w, d, thin)),
                ((0, d / 2 - 0.03, (seat + h) / 2), (w, 0.05, h - seat))]
    if name == "sofa":
        return [((0, -0.1, 0.21), (w - 0.36, d - 0.2, 0.42)), ((0, d / 2 - 0.1, h / 2), (w, 0.2, h)),
                *[((sx * (w / 2 - 0.09), -0.1, 0.3), (0.18, d - 0.2, 0.6)) for sx in (-1, 1)]]
    if name == "table":
        return [*_legs(w, d, h - thin, 0.06), ((0, 0, h - thin / 2), (w, d, thin))]
    if name == "desk":
        return [*[((sx * (w / 2 - 0.015), 0, (h - thin) / 2), (0.03, d, h - thin)) for sx in (-1, 1)],
                ((0, d / 2 - 0.02, h - thin - 0.2), (w - 0.06, 0.02, 0.4)),
                ((w / 2 - 0.23, 0, 0.35), (0.4, d - 0.06, 0.5)), ((0, 0, h - thin / 2), (w, d, thin))]
    if name == "bookshelf":
        shelves = int(rng.integers(4, 6))
        boards = [((0, 0, z), (w - 0.04, d - 0.02, 0.02)) for z in np.linspace(0.05, h - 0.01, shelves)]
        return [*[((sx * (w / 2 - 0.01), 0, h / 2), (0.02, d, h)) for sx in (-1, 1)],
                ((0, d / 2 - 0.01, h / 2), (w - 0.04, 0.02, h)), *boards]
    if name == "refrigerator":
        return [((0, 0, h / 2), (w, d, h)), ((w / 2 - 0.08, -d / 2 - 0.02, 0.6 * h), (0.03, 0.04, 0.5), METAL)]
    if name == "toilet":
        return [((0, -0.08, 0.2), (w - 0.04, d - 0.2, 0.4)), ((0, d / 2 - 0.09, (0.4 + h) / 2), (w, 0.18, h - 0.4))]
    if name == "cabinet":
        return [((0, 0, 0.04), (w - 0.06, d - 0.06, 0.08)), ((0, 0, (h + 0.08) / 2), (w, d, h - 0.08)),
                ((0, -d / 2 - 0.01, 0.8 * h), (0.25 * w, 0.02, 0.02), METAL)]
    # Wall objects stand out of the wall by 10 cm or more, as casings and sills do: flush with it, they would
    # share the wall's voxels at the mini suite's 10 cm and no network could tell them apart.
    if name == "door":  # a panel with a handle inside a casing
        c = 0.08
        return [((0, 0, h / 2), (w, d, h)), ((0.4 * w, d / 2 + 0.03, 0.95), (0.12, 0.06, 0.03), METAL),
                *[((sx * (w + c) / 2, 0, h / 2), (c, 0.24, h), WHITE) for sx in (-1, 1)],
                ((0, 0, h + c / 2), (w + 2 * c, 0.24, c), WHITE)]
    if name == "window":  # a deep frame around a recessed pane, over a sill
        f = 0.06
        return [((0, 0, h / 2), (w - 2 * f, d / 2, h - 2 * f)),
                ((0, 0, f / 2), (w, d, f), WHITE), ((0, 0, h - f / 2), (w, d, f), WHITE),
                ((-(w - f) / 2, 0, h / 2), (f, d, h), WHITE), (((w - f) / 2, 0, h / 2), (f, d, h), WHITE),
                ((0, 0, -0.02), (w + 0.1, 0.3, 0.04), WHITE)]
    f = 0.04  # a picture: a dark frame around the canvas
    return [((0, 0, h / 2), (w - 2 * f, d, h - 2 * f)), ((0, 0, h / 2), (w, d - 0.01, h), DARK)]


def _object(parts: list[Part], origin: np.ndarray, yaw: float, rng: np.random.Generator, **item: object
            ) -> list[dict]:
    """World boxes of an object whose frame sits at ``origin`` (floor level), turned by ``yaw``."""
    c, s = np.cos(yaw), np.sin(yaw)
    boxes = []
    for (x, y, z), size, *albedo in parts:
        own = {"color": np.asarray(albedo[0]) + rng.normal(0, 0.03, 3)} if albedo else {}
        boxes.append(dict(center=origin + np.array([c * x - s * y, s * x + c * y, z]), half=np.asarray(size) / 2,
                          yaw=yaw, **{**item, **own}))
    return boxes


def _albedo(cls: IndoorClass, rng: np.random.Generator) -> np.ndarray:
    if not cls.palette:
        return rng.uniform(0.15, 0.9, 3)
    base = np.asarray(cls.palette[int(rng.integers(len(cls.palette)))])
    return np.clip(base + rng.normal(0, 0.05, 3), 0.05, 0.95)


@dataclass
class Room:
    boxes: Boxes
    size: np.ndarray  # (3,) room extent


def make_room(rng: np.random.Generator, n_objects: int = 10, size: tuple[float, float] = (4.0, 6.5)) -> Room:
    """A rectangular room (sides drawn from ``size``) with four walls, a floor and ``n_objects`` furniture
    instances, non-overlapping."""
    w, d, h = rng.uniform(*size), rng.uniform(*size), rng.uniform(2.4, 2.9)
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
        parts = furniture_parts(cls.name, bw, bd, bh, rng)
        look = dict(kind=k, instance=instance, color=_albedo(cls, rng), texture=int(rng.integers(0, 4)))
        if cls.mount == "wall":
            side = int(rng.integers(0, 4))
            along = w if side < 2 else d
            if along < bw + 0.4:
                continue
            s = rng.uniform(bw / 2 + 0.2, along - bw / 2 - 0.2)
            origin, yaw = ((s, 0.0, cls.height), 0.0) if side == 0 else ((s, d, cls.height), np.pi) if side == 1 \
                else ((0.0, s, cls.height), -np.pi / 2) if side == 2 else ((w, s, cls.height), np.pi / 2)
            items += _object(parts, np.array(origin), yaw, rng, **look)
            instance += 1
            continue
        yaw = float(rng.choice([0.0, np.pi / 2, np.pi, -np.pi / 2]))
        fx, fy = (bw, bd) if yaw in (0.0, np.pi) else (bd, bw)
        x, y = rng.uniform(fx / 2 + 0.15, w - fx / 2 - 0.15), rng.uniform(fy / 2 + 0.15, d - fy / 2 - 0.15)
        box = (x - fx / 2, y - fy / 2, x + fx / 2, y + fy / 2)
        if any(box[0] < p[2] + 0.2 and p[0] < box[2] + 0.2 and box[1] < p[3] + 0.2 and p[1] < box[3] + 0.2
               for p in placed):
            continue
        placed.append(box)
        items += _object(parts, np.array([x, y, 0.0]), yaw, rng, **look)
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
