"""Typed containers for what the loaders produce: a point-cloud scene and its posed RGB-D views."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass
class PosedViews:
    """V posed images of one scene.

    ``depth`` is planar depth (camera z) in metres with 0 marking invalid pixels; ``cam_to_world``
    maps camera coordinates (OpenCV convention: x right, y down, z forward) to the scene frame.
    """

    image: np.ndarray  # (V, H, W, 3) uint8 RGB
    depth: np.ndarray  # (V, H, W) float32 metres, 0 = invalid
    intrinsics: np.ndarray  # (V, 3, 3) float64
    cam_to_world: np.ndarray  # (V, 4, 4) float64
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        v = len(self.image)
        if self.image.ndim != 4 or self.image.shape[-1] != 3:
            raise ValueError(f"image must be (V, H, W, 3), got {self.image.shape}")
        if self.depth.shape != self.image.shape[:3]:
            raise ValueError(f"depth {self.depth.shape} does not match images {self.image.shape[:3]}")
        if self.intrinsics.shape != (v, 3, 3) or self.cam_to_world.shape != (v, 4, 4):
            raise ValueError(
                f"expected intrinsics (V,3,3) and cam_to_world (V,4,4) for V={v}, "
                f"got {self.intrinsics.shape} and {self.cam_to_world.shape}"
            )
        if not self.names:
            self.names = [str(i) for i in range(v)]

    def __len__(self) -> int:
        return len(self.image)

    def select(self, index: np.ndarray | list[int]) -> PosedViews:
        index = np.asarray(index)
        return PosedViews(
            self.image[index], self.depth[index], self.intrinsics[index], self.cam_to_world[index],
            [self.names[i] for i in index],
        )


@dataclass
class Scene:
    """One point cloud with per-point attributes, the unit every 3D loader returns.

    ``segment``/``instance`` use -1 for "ignore"/"no instance". ``strength`` holds LiDAR intensity.
    ``views`` carries the posed RGB-D frames used as rendering targets, when the dataset has them.
    """

    name: str
    coord: np.ndarray  # (N, 3) float32
    color: np.ndarray | None = None  # (N, 3) float32 in [0, 255]
    normal: np.ndarray | None = None  # (N, 3) float32, unit length
    segment: np.ndarray | None = None  # (N,) int64
    instance: np.ndarray | None = None  # (N,) int64
    strength: np.ndarray | None = None  # (N, 1) float32
    views: PosedViews | None = None

    def __post_init__(self) -> None:
        if self.coord.ndim != 2 or self.coord.shape[1] != 3:
            raise ValueError(f"{self.name}: coord must be (N, 3), got {self.coord.shape}")
        n = len(self.coord)
        for key in ("color", "normal", "segment", "instance", "strength"):
            value = getattr(self, key)
            if value is not None and len(value) != n:
                raise ValueError(f"{self.name}: {key} has {len(value)} entries for {n} points")

    def __len__(self) -> int:
        return len(self.coord)

    def subset(self, index: np.ndarray) -> Scene:
        """The scene restricted to some points (views untouched)."""
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return replace(
            self, coord=self.coord[index], color=pick(self.color), normal=pick(self.normal),
            segment=pick(self.segment), instance=pick(self.instance), strength=pick(self.strength),
        )
