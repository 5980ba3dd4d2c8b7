"""S3DIS in Pointcept's layout: ``Area_N/<room>/{coord,color,normal,segment,instance}.npy``, 13 classes.

The standard protocol trains on Areas 1-4 and 6 and validates on Area 5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.classes import S3DIS13
from tasks.errors import DataFormatError
from tasks.formats.base import SceneDataset
from tasks.formats.pointcept import read_scene_folder, write_scene_folder
from tasks.formats.room_frames import frames_folder, is_frames_folder, read_room_frames
from tasks.structures import Scene

SPLIT_AREAS = {"train": (1, 2, 3, 4, 6), "val": (5,), "test": (5,)}


class S3DISDataset(SceneDataset):
    """Rooms of the areas of a split (or of explicit ``areas``); scene names are ``Area_N/room``. ``with_views``
    attaches each room's RGB-D frames (``Area_N/<room>_rgbd``, :mod:`tasks.formats.room_frames`)."""

    def __init__(self, root: str | Path, split: str = "train", areas: tuple[int, ...] | None = None,
                 with_views: bool = False):
        self.with_views = with_views
        if areas is None and split not in SPLIT_AREAS:
            raise ValueError(f"split must be one of {sorted(SPLIT_AREAS)} or areas given, got {split!r}")
        self.areas = areas or SPLIT_AREAS[split]
        super().__init__(root, split)

    def _scene_names(self) -> list[str]:
        present = [a for a in self.areas if (self.root / f"Area_{a}").is_dir()]
        if not present:
            raise DataFormatError(self.root, f"none of the folders Area_{{{','.join(map(str, self.areas))}}} exist")
        return [f"Area_{a}/{room.name}" for a in present
                for room in sorted((self.root / f"Area_{a}").iterdir()) if room.is_dir() and not is_frames_folder(room)]

    def load(self, name: str) -> Scene:
        scene = read_scene_folder(self.root / name, "segment", len(S3DIS13), name=name)
        if self.with_views:
            scene.views = read_room_frames(frames_folder(self.root / name))
        return scene


def write_s3dis_room(root: Path, area: int, room: str, arrays: dict[str, np.ndarray]) -> None:
    write_scene_folder(root / f"Area_{area}" / room, arrays)
