"""A posed RGB-D folder in Microsoft 7-Scenes style, for pre-training on real RGB-D captures.

Layout::

    camera-intrinsics.txt            3x3
    frame-000000.color.jpg|png       RGB
    frame-000000.depth.png           uint16 millimetres, 0 and 65535 invalid
    frame-000000.pose.txt            4x4 camera-to-world
"""

from __future__ import annotations

from pathlib import Path

from tasks.errors import DataFormatError
from tasks.formats.rgbd_frames import FramePaths, fuse_views, read_frames
from tasks.io import load_intrinsics
from tasks.structures import PosedViews, Scene


class RGBDFolder:
    """Frames of one 7-Scenes-style capture; ``scene()`` fuses them into a coloured point cloud."""

    def __init__(self, path: str | Path, every: int = 1):
        self.path = Path(path)
        if not self.path.is_dir():
            raise DataFormatError(self.path, "RGB-D folder does not exist")
        poses = sorted(self.path.glob("frame-*.pose.txt"))[::every]
        if not poses:
            raise DataFormatError(self.path, "no frame-XXXXXX.pose.txt files")
        self.frames = [self._frame_paths(p) for p in poses]
        self.intrinsics = load_intrinsics(self.path / "camera-intrinsics.txt", (3, 3))

    def _frame_paths(self, pose: Path) -> FramePaths:
        stem = pose.name[: -len(".pose.txt")]
        color = next((c for c in (pose.with_name(f"{stem}.color.jpg"), pose.with_name(f"{stem}.color.png"))
                      if c.exists()), pose.with_name(f"{stem}.color.jpg"))
        return FramePaths(stem, color, pose.with_name(f"{stem}.depth.png"), pose)

    def __len__(self) -> int:
        return len(self.frames)

    def views(self, index: list[int] | None = None) -> PosedViews:
        frames = self.frames if index is None else [self.frames[i] for i in index]
        return read_frames(frames, self.intrinsics)

    def scene(self, voxel_size: float = 0.02, stride: int = 2, index: list[int] | None = None) -> Scene:
        return fuse_views(self.views(index), self.path.name, voxel_size, stride)
