"""Structured3D in Pointcept's layout: ``{train,val,test}/scene_XXXXX/room_YYY/{coord,color,normal,segment}.npy``.

One point cloud per room, fused from the dataset's panoramic renders; ``segment`` holds the 25 classes of
:data:`tasks.classes.STRUCTURED3D25` (-1: none of them). Pointcept's split: scenes 0-2999 train, 3000-3249 val,
3250-3499 test. PonderV2 pre-trains and fine-tunes its PPT models over it with ScanNet and S3DIS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.classes import STRUCTURED3D25
from tasks.errors import DataFormatError
from tasks.formats.base import SceneDataset
from tasks.formats.pointcept import read_scene_folder, write_scene_folder
from tasks.formats.room_frames import frames_folder, is_frames_folder, read_room_frames
from tasks.structures import Scene


class Structured3DDataset(SceneDataset):
    """The rooms of one split; scene names are ``scene_XXXXX/room_YYY``. ``with_views`` attaches each room's RGB-D
    frames (``room_YYY_rgbd``, :mod:`tasks.formats.room_frames`)."""

    def __init__(self, root: str | Path, split: str = "train", with_views: bool = False) -> None:
        self.with_views = with_views
        super().__init__(root, split)

    def _scene_names(self) -> list[str]:
        folder = self.root / self.split
        if not folder.is_dir():
            raise DataFormatError(folder, f"split folder '{self.split}' does not exist")
        return [f"{scene.name}/{room.name}" for scene in sorted(folder.iterdir())
                if scene.is_dir() and scene.name.startswith("scene_")
                for room in sorted(scene.iterdir())
                if room.is_dir() and room.name.startswith("room_") and not is_frames_folder(room)]

    def load(self, name: str) -> Scene:
        scene = read_scene_folder(self.root / self.split / name, "segment", len(STRUCTURED3D25), name=name)
        if self.with_views:
            scene.views = read_room_frames(frames_folder(self.root / self.split / name))
        return scene


def write_structured3d_room(root: Path, split: str, scene: str, room: str, arrays: dict[str, np.ndarray]) -> None:
    write_scene_folder(root / split / scene / room, arrays)
