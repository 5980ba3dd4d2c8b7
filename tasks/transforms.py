"""Point-cloud transforms: Pointcept GridSample semantics, unit-cube normalisation, augmentations.

Geometric augmentations are similarity transforms applied to points, normals *and* the camera poses
(and depth, for scaling), so rendering targets still line up with the augmented cloud.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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


@dataclass(frozen=True)
class Augment:
    """The reference training augmentations; each geometric one moves the cameras with the points."""

    rotate_z: float = np.pi  # uniform angle in [-rotate_z, rotate_z]
    scale: tuple[float, float] = (0.9, 1.1)  # isotropic, so depth stays a valid target
    flip_p: float = 0.5  # mirror x
    jitter_sigma: float = 0.005
    jitter_clip: float = 0.02
    dropout: float = 0.0  # fraction of points dropped

    def __call__(self, scene: Scene, rng: np.random.Generator) -> Scene:
        t = rotation_z(rng.uniform(-self.rotate_z, self.rotate_z))
        t = t.then(Similarity(np.eye(3), np.zeros(3), float(rng.uniform(*self.scale))))
        if rng.random() < self.flip_p:
            t = t.then(Similarity(np.diag([-1.0, 1.0, 1.0]), np.zeros(3)))
        scene = t.apply(scene)
        if self.jitter_sigma > 0:
            noise = np.clip(rng.normal(0, self.jitter_sigma, scene.coord.shape), -self.jitter_clip, self.jitter_clip)
            scene = replace(scene, coord=(scene.coord + noise).astype(np.float32))
        if self.dropout > 0:
            keep = rng.random(len(scene)) >= self.dropout
            scene = scene.subset(np.flatnonzero(keep))
        return scene
