"""ScanNet / ScanNet200 in Pointcept's layout, plus the posed RGB-D frames used for pre-training.

Point clouds::

    {train,val,test}/sceneXXXX_XX/{coord,color,normal,segment20,segment200,instance}.npy

RGB-D frames (exported from the .sens files)::

    rgbd/sceneXXXX_XX/color/N.jpg  depth/N.png (uint16 mm)  pose/N.txt (4x4 camera-to-world)
    rgbd/sceneXXXX_XX/intrinsic/intrinsic_depth.txt (4x4)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.classes import SCANNET20, SCANNET200
from tasks.errors import DataFormatError
from tasks.formats.base import SceneDataset
from tasks.formats.pointcept import read_scene_folder, write_scene_folder
from tasks.formats.rgbd_frames import FramePaths, read_frames
from tasks.io import load_intrinsics, save_image, save_text
from tasks.structures import PosedViews, Scene

LABEL_SETS = {"segment20": len(SCANNET20), "segment200": len(SCANNET200)}


class ScanNetDataset(SceneDataset):
    """ScanNet (``label_set='segment20'``) or ScanNet200 (``'segment200'``) scenes of one split.

    ``with_views=True`` attaches the scene's RGB-D frames from ``rgbd/`` (every ``frame_every``-th).
    """

    def __init__(self, root: str | Path, split: str = "train", label_set: str = "segment20",
                 with_views: bool = False, frame_every: int = 1):
        if label_set not in LABEL_SETS:
            raise ValueError(f"label_set must be one of {sorted(LABEL_SETS)}, got {label_set!r}")
        self.label_set = label_set
        self.with_views = with_views
        self.frame_every = frame_every
        super().__init__(root, split)

    def _scene_names(self) -> list[str]:
        folder = self.root / self.split
        if not folder.is_dir():
            raise DataFormatError(folder, f"split folder '{self.split}' does not exist")
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith("scene"))

    def load(self, name: str) -> Scene:
        scene = read_scene_folder(self.root / self.split / name, self.label_set, LABEL_SETS[self.label_set])
        if self.with_views:
            scene.views = self.views(name)
        return scene

    def views(self, name: str) -> PosedViews:
        return read_scannet_frames(self.root / "rgbd" / name, self.frame_every)


def read_scannet_frames(folder: Path, every: int = 1) -> PosedViews:
    """Read ``rgbd/sceneXXXX_XX`` frames (bad frames skipped with a warning)."""
    pose_dir = folder / "pose"
    if not pose_dir.is_dir():
        raise DataFormatError(pose_dir, "pose folder of the RGB-D frames does not exist")
    ids = sorted((p.stem for p in pose_dir.glob("*.txt")), key=lambda s: int(s) if s.isdigit() else s)[::every]
    if not ids:
        raise DataFormatError(pose_dir, "no pose/N.txt files")
    intrinsics = load_intrinsics(folder / "intrinsic" / "intrinsic_depth.txt", (4, 4))[:3, :3]
    frames = [FramePaths(i, folder / "color" / f"{i}.jpg", folder / "depth" / f"{i}.png", pose_dir / f"{i}.txt")
              for i in ids]
    return read_frames(frames, intrinsics)


def write_scannet_scene(root: Path, split: str, name: str, arrays: dict[str, np.ndarray]) -> None:
    """Write one scene (keys coord, color, normal, segment20, segment200, instance)."""
    write_scene_folder(root / split / name, arrays)


def write_scannet_frames(folder: Path, views: PosedViews) -> None:
    """Write frames in the ScanNet export layout (depth as uint16 millimetres)."""
    k = np.eye(4)
    k[:3, :3] = views.intrinsics[0]
    save_text(folder / "intrinsic" / "intrinsic_depth.txt", _matrix_text(k))
    save_text(folder / "intrinsic" / "intrinsic_color.txt", _matrix_text(k))
    for i in range(len(views)):
        save_image(folder / "color" / f"{i}.jpg", views.image[i])
        save_image(folder / "depth" / f"{i}.png", depth_to_millimetres(views.depth[i]))
        save_text(folder / "pose" / f"{i}.txt", _matrix_text(views.cam_to_world[i]))


def depth_to_millimetres(depth: np.ndarray) -> np.ndarray:
    return np.clip(np.round(depth * 1000.0), 0, 65534).astype(np.uint16)


def _matrix_text(mat: np.ndarray) -> str:
    return "\n".join(" ".join(f"{v:.9g}" for v in row) for row in mat) + "\n"


def read_scannet_points_bin(path: str | Path) -> Scene:
    """A ScanNet scan exported as float32 (N, 6) x, y, z, r, g, b (the mmdetection3d demo layout)."""
    from tasks.io import check_range, load_binary

    path = Path(path)
    arr = load_binary(path, np.float32, 6)
    if len(arr) == 0:
        raise DataFormatError(path, "scan has no points")
    check_range(path, arr[:, 3:6], "colour values (not x, y, z, r, g, b records?)", 0, 255)
    return Scene(name=path.stem, coord=arr[:, :3].copy(), color=arr[:, 3:6].copy())


def read_mmdet3d_posed_images(pkl: str | Path, index: int = 0) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Posed colour images of an mmdetection3d ScanNet info file: images, intrinsics (3x3), cam-to-world (V,4,4).

    Image paths in the file are relative to a data root; images are looked up beside the file by name.
    """
    from tasks.io import load_image, load_pickle

    pkl = Path(pkl)
    try:
        info = load_pickle(pkl, "an mmdet3d ScanNet info file")[index]
        paths, intrinsics, extrinsics = info["img_paths"], info["intrinsics"], info["extrinsics"]
    except (KeyError, IndexError, TypeError) as exc:
        raise DataFormatError(pkl, f"not an mmdet3d ScanNet info file with posed images ({exc})") from exc
    images = [load_image(pkl.parent / Path(p).name) for p in paths]
    return images, np.asarray(intrinsics, dtype=np.float64)[:3, :3], np.asarray(extrinsics, dtype=np.float64)
