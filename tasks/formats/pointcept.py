"""The Pointcept per-scene folder of ``.npy`` arrays, shared by its ScanNet and S3DIS layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.errors import DataFormatError
from tasks.io import check_labels, check_length, load_npy, save_npy
from tasks.structures import Scene


def read_scene_folder(folder: Path, segment_file: str, num_classes: int, name: str | None = None) -> Scene:
    """Read coord/color/normal/<segment_file>/instance ``.npy`` files of one scene folder.

    ``color`` and ``normal`` are optional (some exports lack normals); coord and labels are required.
    """
    if not folder.is_dir():
        raise DataFormatError(folder, "scene folder does not exist")
    coord = load_npy(folder / "coord.npy", "f", 3).astype(np.float32)
    n = len(coord)
    if n == 0:
        raise DataFormatError(folder / "coord.npy", "scene has no points")

    def optional(key: str, kind: str, cols: int | None) -> np.ndarray | None:
        path = folder / f"{key}.npy"
        return check_length(path, load_npy(path, kind, cols), n) if path.exists() else None

    color = optional("color", "fu", 3)  # uint8 in Pointcept's exports, float in some others
    normal = optional("normal", "f", 3)
    seg_path = folder / f"{segment_file}.npy"
    segment = check_labels(seg_path, check_length(seg_path, load_npy(seg_path, "iu"), n).astype(np.int64),
                           num_classes)
    instance = optional("instance", "iu", None)
    return Scene(
        name=name or folder.name, coord=coord,
        color=None if color is None else color.astype(np.float32),
        normal=None if normal is None else normal.astype(np.float32),
        segment=segment, instance=None if instance is None else instance.astype(np.int64),
    )


def write_scene_folder(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write one scene's arrays with Pointcept's dtypes (float32 geometry, int16/int32 labels)."""
    dtypes = {"coord": np.float32, "color": np.uint8, "normal": np.float32, "instance": np.int32}
    for key, arr in arrays.items():
        save_npy(folder / f"{key}.npy", arr.astype(dtypes.get(key, np.int16)))
