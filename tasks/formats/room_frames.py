"""RGB-D frames beside a room, as PonderV2 prepares them for S3DIS and Structured3D: ``<room>_rgbd/<frame>.pth``.

PonderV2 pre-trains on these two datasets by rendering their frames (its ``S3DISRGBDDataset`` and
``Structured3DRGBDDataset``). Each frame is a ``torch.save``'d dict of numpy arrays:

- ``rgb`` (H, W, 3) uint8;
- ``depth`` (H, W) uint16 millimetres, 65535 where the renderer saw nothing;
- ``depth_mask`` (H, W) bool, the pixels to trust;
- ``intrinsic`` (3, 3) (a (4, 4) is read by its top-left block);
- ``extrinsic`` (4, 4) camera-to-world, OpenCV camera axes (PonderV2 inverts it into its world-to-camera);
- ``semantic_map`` (H, W), which the suite does not read: pixel labels come from projecting the room's labelled
  cloud, as for ScanNet.

The frames folder sits beside the room's folder (``Area_1/office_1_rgbd`` beside ``Area_1/office_1``), as
PonderV2 puts it beside a room's ``.pth``. A frame whose mask keeps under a quarter of its pixels is skipped with a
warning (PonderV2 renames such a file ``.bad``; the suite never changes a user's files).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import torch

from tasks.errors import DataFormatError
from tasks.formats.scannet import depth_to_millimetres
from tasks.io import atomic_write, load_torch
from tasks.structures import PosedViews

log = logging.getLogger(__name__)

SUFFIX = "_rgbd"
MIN_VALID = 0.25  # PonderV2's rule: a frame whose depth mask keeps less than this is bad
KEYS = ("rgb", "depth", "depth_mask", "intrinsic", "extrinsic")


def frames_folder(room: Path) -> Path:
    return room.with_name(room.name + SUFFIX)


def is_frames_folder(path: Path) -> bool:
    return path.name.endswith(SUFFIX)


def read_room_frames(folder: Path) -> PosedViews:
    """The usable frames of ``folder``, in name order."""
    if not folder.is_dir():
        raise DataFormatError(folder, "RGB-D frames folder of the room does not exist")
    paths = sorted(folder.glob("*.pth"), key=lambda p: (len(p.stem), p.stem))
    if not paths:
        raise DataFormatError(folder, "no <frame>.pth files")
    images, depths, intrinsics, poses, names = [], [], [], [], []
    for path in paths:
        frame = load_torch(path, "an RGB-D frame")
        missing = [k for k in KEYS if not isinstance(frame, dict) or k not in frame]
        if missing:
            raise DataFormatError(path, f"an RGB-D frame needs the keys {', '.join(KEYS)}; missing {missing}")
        rgb, raw, mask = (np.asarray(frame[k]) for k in ("rgb", "depth", "depth_mask"))
        if rgb.ndim != 3 or rgb.shape[2] != 3 or raw.shape != rgb.shape[:2] or mask.shape != raw.shape:
            raise DataFormatError(path, f"rgb {rgb.shape}, depth {raw.shape} and depth_mask {mask.shape} must be "
                                  "(H, W, 3), (H, W) and (H, W)")
        k = np.asarray(frame["intrinsic"], dtype=np.float64)
        pose = np.asarray(frame["extrinsic"], dtype=np.float64)
        if k.shape not in ((3, 3), (4, 4)) or pose.shape != (4, 4):
            raise DataFormatError(path, f"intrinsic must be 3x3 (or 4x4) and extrinsic 4x4, got {k.shape} and "
                                  f"{pose.shape}")
        keep = mask.astype(bool) & (raw < 65535) & (raw > 0)
        if keep.mean() < MIN_VALID or not np.isfinite(pose).all():
            log.warning("skipping frame %s: %s", path, "non-finite pose" if not np.isfinite(pose).all() else
                        f"its depth mask keeps {keep.mean():.0%} of the pixels (under {MIN_VALID:.0%})")
            continue
        if images and rgb.shape != images[0].shape:
            raise DataFormatError(path, f"frames differ in size: {rgb.shape[:2]}, where {names[0]}'s is "
                                  f"{images[0].shape[:2]}")
        images.append(rgb.astype(np.uint8))
        depths.append(np.where(keep, raw.astype(np.float32) / 1000.0, 0.0).astype(np.float32))
        intrinsics.append(k[:3, :3])
        poses.append(pose)
        names.append(path.stem)
    if not images:
        raise DataFormatError(folder, "no usable RGB-D frame")
    return PosedViews(image=np.stack(images), depth=np.stack(depths), intrinsics=np.stack(intrinsics),
                      cam_to_world=np.stack(poses), names=names)


def write_room_frames(folder: Path, views: PosedViews) -> None:
    """Write ``views`` as PonderV2's frame files (the generator's S3DIS and Structured3D frames)."""
    for i in range(len(views)):
        depth = views.depth[i]
        frame = {"rgb": views.image[i], "depth": depth_to_millimetres(depth),
                 "depth_mask": depth > 0, "intrinsic": views.intrinsics[i], "extrinsic": views.cam_to_world[i],
                 "semantic_map": np.full(depth.shape, -1, dtype=np.int16)}
        buffer = io.BytesIO()  # not saved to the temporary file directly: torch names the zip's records after it
        torch.save(frame, buffer)
        atomic_write(folder / f"{i}.pth", lambda tmp, data=buffer: tmp.write_bytes(data.getvalue()))
