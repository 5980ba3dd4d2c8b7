"""SemanticKITTI: ``sequences/XX/velodyne/NNNNNN.bin`` (float32 x4) + ``labels/NNNNNN.label`` (uint32).

A label's low 16 bits are the raw semantic id, the high 16 bits the instance id. Raw ids map to 19
classes through the official learning map; train on 00-07, 09, 10 and validate on 08.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.classes import IGNORE_INDEX, semantic_kitti_lut
from tasks.errors import DataFormatError
from tasks.formats.base import SceneDataset
from tasks.io import atomic_write, check_length, load_binary, save_text
from tasks.structures import Scene

SPLIT_SEQUENCES = {"train": (0, 1, 2, 3, 4, 5, 6, 7, 9, 10), "val": (8,), "test": tuple(range(11, 22))}


class SemanticKITTIDataset(SceneDataset):
    """Scans of the sequences of a split; scene names are ``XX/NNNNNN``. Test scans have no labels."""

    def __init__(self, root: str | Path, split: str = "train"):
        if split not in SPLIT_SEQUENCES:
            raise ValueError(f"split must be one of {sorted(SPLIT_SEQUENCES)}, got {split!r}")
        self.lut = semantic_kitti_lut()
        super().__init__(root, split)

    def _scene_names(self) -> list[str]:
        seq_root = self.root / "sequences"
        if not seq_root.is_dir():
            raise DataFormatError(seq_root, "SemanticKITTI 'sequences' folder does not exist")
        names = []
        for seq in SPLIT_SEQUENCES[self.split]:
            velodyne = seq_root / f"{seq:02d}" / "velodyne"
            names += [f"{seq:02d}/{p.stem}" for p in sorted(velodyne.glob("*.bin"))]
        return names

    def load(self, name: str) -> Scene:
        seq, frame = name.split("/")
        base = self.root / "sequences" / seq
        scan_path = base / "velodyne" / f"{frame}.bin"
        scan = load_binary(scan_path, np.float32, 4)
        label_path = base / "labels" / f"{frame}.label"
        segment = instance = None
        if self.split != "test" or label_path.exists():
            raw = check_length(label_path, load_binary(label_path, np.uint32), len(scan), scan_path)
            semantic = (raw & 0xFFFF).astype(np.int64)
            known = semantic < len(self.lut)
            known[known] = self.lut[semantic[known]] != -2
            if not known.all():
                bad = int(semantic[~known][0])
                raise DataFormatError(label_path, f"{int((~known).sum())} labels with unknown raw id (e.g. {bad})")
            segment = self.lut[semantic]
            instance = (raw >> 16).astype(np.int64)
            instance[segment == IGNORE_INDEX] = -1
        return Scene(name=name, coord=scan[:, :3].copy(), strength=scan[:, 3:4].copy(), segment=segment,
                     instance=instance)


def write_semantickitti_scan(root: Path, seq: int, frame: int, xyzi: np.ndarray, raw_label: np.ndarray,
                             instance: np.ndarray) -> None:
    base = root / "sequences" / f"{seq:02d}"
    xyzi = np.ascontiguousarray(xyzi, dtype=np.float32)
    label = (raw_label.astype(np.uint32) & 0xFFFF) | (instance.astype(np.uint32) << 16)
    atomic_write(base / "velodyne" / f"{frame:06d}.bin", lambda tmp: xyzi.tofile(tmp))
    atomic_write(base / "labels" / f"{frame:06d}.label", lambda tmp: label.tofile(tmp))


def write_semantickitti_sequence_meta(root: Path, seq: int, poses: np.ndarray, times: np.ndarray) -> None:
    """calib.txt (identity Tr: scans already in the camera-aligned frame), poses.txt (3x4 rows), times.txt."""
    base = root / "sequences" / f"{seq:02d}"
    eye = " ".join(f"{v:.6e}" for v in np.eye(4)[:3].ravel())
    proj = " ".join(f"{v:.6e}" for v in np.hstack([np.diag([500.0, 500.0, 1.0]), np.zeros((3, 1))]).ravel())
    save_text(base / "calib.txt", "".join(f"{k}: {proj}\n" for k in ("P0", "P1", "P2", "P3")) + f"Tr: {eye}\n")
    save_text(base / "poses.txt", "".join(" ".join(f"{v:.6e}" for v in p[:3].ravel()) + "\n" for p in poses))
    save_text(base / "times.txt", "".join(f"{t:.6e}\n" for t in times))
