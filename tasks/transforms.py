"""Point-cloud transforms: Pointcept GridSample semantics, unit-cube normalisation, augmentations.

Geometric augmentations are similarity transforms applied to points, normals *and* the camera poses
(and depth, for scaling), so rendering targets still line up with the augmented cloud.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields, replace

import numpy as np

from tasks.structures import PosedViews, Scene


@dataclass
class GridSampled:
    """Result of grid sampling: the chosen point indices and their voxel coordinates."""

    index: np.ndarray  # (M,) indices into the input points
    grid_coord: np.ndarray  # (M, 3) int64, >= 0


def voxelize(coord: np.ndarray, grid_size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Voxel coords (min-shifted to 0) and, grouped by voxel: sort order, group starts and counts."""
    grid = np.floor(coord / grid_size).astype(np.int64)
    grid -= grid.min(axis=0)
    dims = grid.max(axis=0) + 1
    key = (grid[:, 0] * dims[1] + grid[:, 1]) * dims[2] + grid[:, 2]
    order = np.argsort(key, kind="stable")
    _, start, count = np.unique(key[order], return_index=True, return_counts=True)
    return grid, order, start, count


def grid_sample_train(coord: np.ndarray, grid_size: float, rng: np.random.Generator) -> GridSampled:
    """One random point per occupied voxel (Pointcept ``GridSample(mode='train')``)."""
    grid, order, start, count = voxelize(coord, grid_size)
    pick = order[start + rng.integers(0, count.max(), size=len(count)) % count]
    return GridSampled(pick, grid[pick])


def grid_sample_test(coord: np.ndarray, grid_size: float, max_fragments: int | None = None) -> list[GridSampled]:
    """Fragments that together cover every point (Pointcept ``GridSample(mode='test')``).

    Fragment i takes the (i mod count)-th point of every voxel, so each fragment is a valid one-point-per-
    voxel sample and the union over ``max(count)`` fragments is every point. ``max_fragments`` caps their
    number (real sweeps can hold thousands of returns in one voxel).
    """
    return voting_fragments(coord, grid_size, max_fragments)[0]


def voting_fragments(coord: np.ndarray, grid_size: float, max_fragments: int | None = None
                     ) -> tuple[list[GridSampled], np.ndarray]:
    """:func:`grid_sample_test`'s fragments, in voxel order (row i of every fragment lies in voxel i), and the
    voxel of every point, so that per-voxel votes can be sent back to all points."""
    grid, order, start, count = voxelize(coord, grid_size)
    n = int(count.max()) if max_fragments is None else min(int(count.max()), max_fragments)
    parts = []
    for i in range(n):
        pick = order[start + i % count]
        parts.append(GridSampled(pick, grid[pick]))
    voxel_of = np.empty(len(coord), dtype=np.int64)
    voxel_of[order] = np.repeat(np.arange(len(count)), count)
    return parts, voxel_of


@dataclass(frozen=True)
class Crop:
    """The points a :func:`sphere_crop` keeps (sorted indices) and the sphere they lie in."""

    index: np.ndarray
    center: np.ndarray  # (3,)
    radius: float  # inf when nothing was cropped

    def contains(self, points: np.ndarray) -> np.ndarray:
        return np.square(points - self.center).sum(-1) <= self.radius**2


@dataclass(frozen=True)
class CropSize:
    """How many points a training sphere crop keeps: at most ``max_points`` and at most ``fraction`` of the cloud
    (Pointcept's ``SphereCrop(point_max=...)`` and ``SphereCrop(sample_rate=...)``); None: no limit."""

    max_points: int | None = None
    fraction: float | None = None

    def limit(self, n: int) -> int | None:
        limits = [x for x in (self.max_points, None if self.fraction is None else int(self.fraction * n)) if x]
        return min(limits) if limits else None


def sphere_crop(coord: np.ndarray, limit: int | None, rng: np.random.Generator,
                candidates: np.ndarray | None = None) -> Crop:
    """At most ``limit`` points: the ones nearest a random centre (Pointcept ``SphereCrop``), drawn from the cloud
    or from ``candidates`` (e.g. where rendering rays end, so that the crop has targets).

    Unlike a random subset, a crop keeps the local point density, so the voxels a network trains on look like
    the ones it is evaluated on.
    """
    if not limit or len(coord) <= limit:
        return Crop(np.arange(len(coord)), np.zeros(3), float("inf"))
    pool = coord if candidates is None or len(candidates) == 0 else candidates
    center = pool[rng.integers(len(pool))]
    distance = np.square(coord - center).sum(1)
    index = np.sort(np.argpartition(distance, limit - 1)[:limit])
    return Crop(index, center, float(np.sqrt(distance[index].max())))


@dataclass(frozen=True)
class Similarity:
    """x -> scale * R @ x + t, with R orthogonal (a reflection allowed for flips)."""

    rotation: np.ndarray
    translation: np.ndarray
    scale: float = 1.0

    def then(self, other: Similarity) -> Similarity:
        """This transform followed by ``other``."""
        return Similarity(other.rotation @ self.rotation,
                          other.scale * other.rotation @ self.translation + other.translation,
                          self.scale * other.scale)

    def apply(self, scene: Scene) -> Scene:
        coord = (self.scale * scene.coord.astype(np.float64) @ self.rotation.T + self.translation).astype(np.float32)
        normal = None if scene.normal is None else (scene.normal @ self.rotation.T).astype(np.float32)
        views = None if scene.views is None else self.apply_views(scene.views)
        return replace(scene, coord=coord, normal=normal, views=views)

    def apply_views(self, views: PosedViews) -> PosedViews:
        """New camera-to-world poses, still rigid (scale goes into depth, not the pose)."""
        c2w = views.cam_to_world.copy()
        c2w[:, :3, :3] = self.rotation @ views.cam_to_world[:, :3, :3]
        c2w[:, :3, 3] = self.scale * views.cam_to_world[:, :3, 3] @ self.rotation.T + self.translation
        return PosedViews(views.image, views.depth * np.float32(self.scale), views.intrinsics, c2w, views.names)


def identity() -> Similarity:
    return Similarity(np.eye(3), np.zeros(3), 1.0)


def rotation_z(angle: float) -> Similarity:
    c, s = np.cos(angle), np.sin(angle)
    return Similarity(np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), np.zeros(3))


def normalize_to_unit_cube(scene: Scene) -> tuple[Scene, Similarity]:
    """Centre the scene's bounding box at the origin and scale its longest side to 1 (PonderV2 indoor)."""
    lo, hi = scene.coord.min(axis=0).astype(np.float64), scene.coord.max(axis=0).astype(np.float64)
    scale = 1.0 / max(float((hi - lo).max()), 1e-6)
    t = Similarity(np.eye(3), -scale * (lo + hi) / 2, scale)
    return t.apply(scene), t


def rotation(axis: str, angle: float) -> Similarity:
    """A rotation by ``angle`` radians about the x, y or z axis."""
    if axis == "z":
        return rotation_z(angle)
    c, s = np.cos(angle), np.sin(angle)
    m = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]) if axis == "x" else \
        np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return Similarity(m, np.zeros(3))


# a test-time view (Pointcept's ``aug_transform``): a rotation about z (in units of pi), a scale, the axes mirrored
TestView = tuple[float, float, str]
IDENTITY_VIEW: TestView = (0.0, 1.0, "")


def view_transform(view: TestView) -> Similarity | None:
    """The similarity of a test-time view; None for the identity."""
    angle, scale, flip = view
    if not set(flip) <= set("xyz"):
        raise ValueError(f"test view {view}: flip must be letters of xyz, got {flip!r}")
    if (angle, scale, flip) == IDENTITY_VIEW:
        return None
    t = rotation_z(angle * np.pi)
    if scale != 1.0:
        t = t.then(Similarity(np.eye(3), np.zeros(3), float(scale)))
    if flip:
        t = t.then(Similarity(np.diag([-1.0 if a in flip else 1.0 for a in "xyz"]), np.zeros(3)))
    return t


# ---------------------------------------------------------------------------------------------- augmentation
# Training augmentations as Pointcept names and parametrises them, so that a recipe's list reads like the config it
# comes from. A recipe holds each as its ``repr`` (``RandomRotate(angle=(-1, 1), axis='z', p=0.5)``), which
# :func:`parse_transform` reads back. Draws come from the sample's generator, in list order; a probability of 1
# draws no coin. Geometric transforms are similarities, composed and applied at once (to points, normals and the
# cameras, so rendering targets still line up); the others change points or colours.


@dataclass(frozen=True)
class RandomRotate:
    """A rotation about ``axis`` by a uniform angle in ``angle`` (in units of pi), with probability ``p``."""

    angle: tuple[float, float] = (-1.0, 1.0)
    axis: str = "z"
    p: float = 1.0

    def __post_init__(self) -> None:
        if self.axis not in ("x", "y", "z"):
            raise ValueError(f"RandomRotate: axis must be x, y or z, got {self.axis!r}")

    def draw(self, rng: np.random.Generator) -> Similarity | None:
        if not _coin(rng, self.p):
            return None
        return rotation(self.axis, rng.uniform(self.angle[0] * np.pi, self.angle[1] * np.pi))


@dataclass(frozen=True)
class RandomScale:
    """An isotropic scale, uniform in ``scale`` (isotropic, so depth stays a valid target)."""

    scale: tuple[float, float] = (0.9, 1.1)

    def draw(self, rng: np.random.Generator) -> Similarity | None:
        return Similarity(np.eye(3), np.zeros(3), float(rng.uniform(*self.scale)))


@dataclass(frozen=True)
class RandomFlip:
    """Mirror each of ``axes`` with probability ``p``, independently (Pointcept flips x and y)."""

    p: float = 0.5
    axes: str = "xy"

    def __post_init__(self) -> None:
        if not self.axes or not set(self.axes) <= set("xyz"):
            raise ValueError(f"RandomFlip: axes must be letters of xyz, got {self.axes!r}")

    def draw(self, rng: np.random.Generator) -> Similarity | None:
        flip = np.ones(3)
        for axis in self.axes:
            if rng.random() < self.p:
                flip["xyz".index(axis)] = -1.0
        return None if (flip == 1).all() else Similarity(np.diag(flip), np.zeros(3))


@dataclass(frozen=True)
class RandomShift:
    """A translation, uniform in +-``shift`` metres along each axis."""

    shift: tuple[float, float, float] = (0.2, 0.2, 0.2)

    def draw(self, rng: np.random.Generator) -> Similarity | None:
        return Similarity(np.eye(3), np.array([rng.uniform(-s, s) for s in self.shift]))


@dataclass(frozen=True)
class RandomJitter:
    """Gaussian noise on every coordinate, clipped to +-``clip`` metres."""

    sigma: float = 0.005
    clip: float = 0.02

    def __call__(self, scene: Scene, rng: np.random.Generator) -> Scene:
        noise = np.clip(rng.normal(0, self.sigma, scene.coord.shape), -self.clip, self.clip)
        return replace(scene, coord=(scene.coord + noise).astype(np.float32))


@dataclass(frozen=True)
class RandomDropout:
    """With probability ``p``, keep a random ``1 - ratio`` of the points."""

    ratio: float = 0.2
    p: float = 0.2

    def __call__(self, scene: Scene, rng: np.random.Generator) -> Scene:
        if not _coin(rng, self.p):
            return scene
        keep = rng.choice(len(scene), int(len(scene) * (1 - self.ratio)), replace=False)
        return scene.subset(np.sort(keep))


@dataclass(frozen=True)
class ElasticDistortion:
    """With probability ``p``, a smooth random displacement field per (granularity, magnitude) pair, in metres:
    Gaussian noise on a grid of that spacing, box-blurred three times along each axis, interpolated at the points.
    Not a similarity: the cameras cannot follow, so the scene's views are dropped (fine-tuning only)."""

    params: tuple[tuple[float, float], ...] = ((0.2, 0.4), (0.8, 1.6))
    p: float = 0.95

    def __call__(self, scene: Scene, rng: np.random.Generator) -> Scene:
        from scipy.interpolate import RegularGridInterpolator
        from scipy.ndimage import uniform_filter1d

        if not _coin(rng, self.p):
            return scene
        coord = scene.coord.astype(np.float64)
        for granularity, magnitude in self.params:
            lo = coord.min(0) - granularity * 3
            cells = ((coord.max(0) - lo) // granularity).astype(int) + 4
            noise = rng.standard_normal((*cells, 3))
            for _ in range(2):
                for axis in range(3):
                    noise = uniform_filter1d(noise, 3, axis=axis, mode="constant")
            axes = [lo[i] + granularity * np.arange(cells[i]) for i in range(3)]
            field = RegularGridInterpolator(axes, noise, bounds_error=False, fill_value=0.0)
            coord = coord + field(coord) * magnitude
        return replace(scene, coord=coord.astype(np.float32), views=None)


@dataclass(frozen=True)
class ChromaticAutoContrast:
    """With probability ``p``, stretch each colour channel to 0-255 and blend it with the original
    (``blend_factor``; None: uniform in [0, 1) per draw)."""

    p: float = 0.2
    blend_factor: float | None = None

    def __call__(self, scene: Scene, rng: np.random.Generator) -> Scene:
        if scene.color is None or not _coin(rng, self.p):
            return scene
        lo, hi = scene.color.min(0), scene.color.max(0)
        stretched = (scene.color - lo) * (255.0 / np.maximum(hi - lo, 1e-6))
        blend = rng.random() if self.blend_factor is None else self.blend_factor
        return replace(scene, color=((1 - blend) * scene.color + blend * stretched).astype(np.float32))


class _ColourOffset:
    """With probability ``p``, add :meth:`offset` to the colours (clipped to 0-255)."""

    p: float

    def offset(self, scene: Scene, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, scene: Scene, rng: np.random.Generator) -> Scene:
        if scene.color is None or not _coin(rng, self.p):
            return scene
        return replace(scene, color=np.clip(scene.color + self.offset(scene, rng), 0, 255).astype(np.float32))


@dataclass(frozen=True)
class ChromaticTranslation(_ColourOffset):
    """With probability ``p``, shift all colours by one offset per channel, uniform in +-``ratio`` x 255."""

    p: float = 0.95
    ratio: float = 0.05

    def offset(self, scene: Scene, rng: np.random.Generator) -> np.ndarray:
        return (rng.random((1, 3)) - 0.5) * 255 * 2 * self.ratio


@dataclass(frozen=True)
class ChromaticJitter(_ColourOffset):
    """With probability ``p``, Gaussian noise of ``std`` x 255 on every point's colour."""

    p: float = 0.95
    std: float = 0.005

    def offset(self, scene: Scene, rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal(scene.color.shape) * self.std * 255


Geometric = RandomRotate | RandomScale | RandomFlip | RandomShift
Transform = Geometric | RandomJitter | RandomDropout | ElasticDistortion | ChromaticAutoContrast | \
    ChromaticTranslation | ChromaticJitter
TRANSFORMS: dict[str, type] = {cls.__name__: cls for cls in (
    RandomRotate, RandomScale, RandomFlip, RandomShift, RandomJitter, RandomDropout, ElasticDistortion,
    ChromaticAutoContrast, ChromaticTranslation, ChromaticJitter)}


def _coin(rng: np.random.Generator, p: float) -> bool:
    return p >= 1.0 or (p > 0.0 and rng.random() < p)


def parse_transform(text: str) -> Transform:
    """A transform from its ``repr`` (keyword arguments, Python literals): ``RandomFlip(p=0.5, axes='x')``."""
    import ast

    try:
        call = ast.parse(text.strip(), mode="eval").body
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name) or call.args:
            raise ValueError("not Name(key=value, ...)")
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except (SyntaxError, ValueError) as err:
        raise ValueError(f"transform {text!r}: write it as Name(key=value, ...) with literal values ({err})") from None
    if call.func.id not in TRANSFORMS:
        raise ValueError(f"transform {text!r}: unknown {call.func.id!r}; known: {', '.join(TRANSFORMS)}")
    cls = TRANSFORMS[call.func.id]
    unknown = set(kwargs) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"transform {text!r}: {cls.__name__} has no {', '.join(sorted(unknown))}; it takes "
                         f"{', '.join(f.name for f in fields(cls))}")
    return cls(**{k: _canonical(v) for k, v in kwargs.items()})


def _canonical(value: object) -> object:
    """Numbers as floats and lists as tuples, so that two spellings of one transform make one recipe."""
    if isinstance(value, list | tuple):
        return tuple(_canonical(v) for v in value)
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


@functools.lru_cache(maxsize=64)
def parse_transforms(texts: tuple[str, ...]) -> tuple[Transform, ...]:
    """A recipe's augmentation list, parsed once."""
    return tuple(parse_transform(t) for t in texts)


def augment(scene: Scene, transforms: tuple[Transform, ...], rng: np.random.Generator) -> Scene:
    """``scene`` through ``transforms`` in order; consecutive geometric ones are composed and applied once."""
    pending: Similarity | None = None
    for t in transforms:
        if isinstance(t, Geometric):
            drawn = t.draw(rng)
            if drawn is not None:
                pending = drawn if pending is None else pending.then(drawn)
            continue
        if pending is not None:
            scene, pending = pending.apply(scene), None
        scene = t(scene, rng)
    return scene if pending is None else pending.apply(scene)
