"""The Pointcept per-scene folder of ``.npy`` arrays, shared by its ScanNet and S3DIS layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.errors import DataFormatError
from tasks.io import check_labels, check_length, check_range, load_npy, save_npy
from tasks.structures import Scene


def read_scene_folder(folder: Path, segment_file: str, num_classes: int, name: str | None = None) -> Scene:
    """Read coord/color/normal/<segment_file>/instance ``.npy`` files of one scene folder.

    ``color`` and ``normal`` are optional (some exports lack normals); coord and labels are required.
    """
    if not folder.is_dir():
        raise DataFormatError(folder, "scene folder does not exist")
    coord_path = folder / "coord.npy"
    coord = _float32(coord_path, load_npy(coord_path, "f", 3))
    n = len(coord)
    if n == 0:
        raise DataFormatError(coord_path, "scene has no points")

    def per_point(key: str, kind: str, cols: int | None) -> np.ndarray:
        path = folder / f"{key}.npy"
        return check_length(path, load_npy(path, kind, cols), n, coord_path)

    def optional(key: str, kind: str, cols: int | None) -> np.ndarray | None:
        return per_point(key, kind, cols) if (folder / f"{key}.npy").exists() else None

    color = optional("color", "fu", 3)  # uint8 in Pointcept's exports, float in some others
    if color is not None:
        check_range(folder / "color.npy", color, "colour values", 0, 255)
    normal = optional("normal", "f", 3)
    segment = check_labels(folder / f"{segment_file}.npy", per_point(segment_file, "iu", None).astype(np.int64),
                           num_classes)
    instance = optional("instance", "iu", None)
    if instance is not None:
        instance = check_range(folder / "instance.npy", instance.astype(np.int64), "instance ids", -1)
    return Scene(
        name=name or folder.name, coord=coord,
        color=None if color is None else color.astype(np.float32),
        normal=None if normal is None else _float32(folder / "normal.npy", normal),
        segment=segment, instance=instance,
    )


def _float32(path: Path, arr: np.ndarray) -> np.ndarray:
    """Cast to float32, refusing (float64) values beyond its range, which would become inf."""
    if np.abs(arr).max(initial=0) > np.finfo(np.float32).max:
        raise DataFormatError(path, "values overflow float32")
    return arr.astype(np.float32)


def write_scene_folder(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write one scene's arrays with Pointcept's dtypes (float32 geometry, int16/int32 labels)."""
    dtypes = {"coord": np.float32, "color": np.uint8, "normal": np.float32, "instance": np.int32}
    for key, arr in arrays.items():
        save_npy(folder / f"{key}.npy", arr.astype(dtypes.get(key, np.int16)))
