"""Posed RGB-D frames: reading with the skip convention of real captures, and fusion into a point cloud.

Real ScanNet has frames with ``-inf`` poses and frames whose depth is empty; PonderV2's loaders drop
them. We do the same, with a logged warning per frame, instead of feeding NaN cameras to the renderer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tasks.errors import DataFormatError
from tasks.io import load_image, load_matrix
from tasks.structures import PosedViews, Scene

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FramePaths:
    name: str
    color: Path
    depth: Path
    pose: Path


def read_depth(path: Path, scale: float = 1000.0, invalid: tuple[int, ...] = (0, 65535)) -> np.ndarray:
    """A 16-bit depth PNG in millimetres -> float32 metres with 0 for invalid pixels."""
    raw = load_image(path, cv2.IMREAD_UNCHANGED)
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise DataFormatError(path, f"depth must be a single-channel uint16 PNG, got {raw.dtype} {raw.shape}")
    depth = raw.astype(np.float32) / scale
    depth[np.isin(raw, invalid)] = 0.0
    return depth


def read_frames(frames: list[FramePaths], intrinsics: np.ndarray) -> PosedViews:
    """Read frames that share one depth intrinsics matrix; colour is resized to the depth resolution.

    Frames with a non-finite pose or no valid depth are skipped with a warning.
    """
    images, depths, poses, names = [], [], [], []
    for frame in frames:
        pose = load_matrix(frame.pose, (4, 4))
        if not np.isfinite(pose).all():
            log.warning("skipping frame %s: non-finite camera pose in %s", frame.name, frame.pose)
            continue
        depth = read_depth(frame.depth)
        if depths and depth.shape != depths[0].shape:
            raise DataFormatError(frame.depth.parent, f"depth images differ in size (one intrinsics serves all): "
                                  f"{frame.depth.name} is {depth.shape}, frame {names[0]}'s is {depths[0].shape}")
        if not (depth > 0).any():
            log.warning("skipping frame %s: no valid depth in %s", frame.name, frame.depth)
            continue
        image = load_image(frame.color)
        if image.shape[:2] != depth.shape:
            image = cv2.resize(image, depth.shape[::-1], interpolation=cv2.INTER_AREA)
        images.append(image)
        depths.append(depth)
        poses.append(pose)
        names.append(frame.name)
    if not images:
        raise DataFormatError(frames[0].pose.parent if frames else Path("."), "no usable RGB-D frame")
    return PosedViews(
        image=np.stack(images), depth=np.stack(depths),
        intrinsics=np.repeat(intrinsics[None], len(images), axis=0), cam_to_world=np.stack(poses), names=names,
    )


def backproject(views: PosedViews, index: int, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """World points and colours of one view's valid depth pixels (every ``stride``-th pixel)."""
    depth = views.depth[index, ::stride, ::stride]
    v, u = np.nonzero(depth > 0)
    z = depth[v, u].astype(np.float64)
    u, v = u * stride, v * stride
    k = views.intrinsics[index]
    cam = np.stack([(u - k[0, 2]) * z / k[0, 0], (v - k[1, 2]) * z / k[1, 1], z], axis=1)
    c2w = views.cam_to_world[index]
    world = cam @ c2w[:3, :3].T + c2w[:3, 3]
    return world.astype(np.float32), views.image[index][v, u].astype(np.float32)


def fuse_views(views: PosedViews, name: str, voxel_size: float = 0.02, stride: int = 2) -> Scene:
    """Fuse all views into one coloured cloud, one point per ``voxel_size`` voxel (the first seen)."""
    parts = [backproject(views, i, stride) for i in range(len(views))]
    coord = np.concatenate([p[0] for p in parts])
    color = np.concatenate([p[1] for p in parts])
    keys = np.floor(coord / voxel_size).astype(np.int64)
    _, first = np.unique(keys, axis=0, return_index=True)
    first.sort()
    return Scene(name=name, coord=coord[first], color=color[first], views=views)
