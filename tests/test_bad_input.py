"""Every loader turns bad files into an error naming the file and the problem (or a logged frame skip)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from tasks.errors import DataFormatError
from tasks.formats.nuscenes import NuScenesLidarSegDataset
from tasks.formats.rgbd_folder import RGBDFolder
from tasks.formats.s3dis import S3DISDataset
from tasks.formats.scannet import ScanNetDataset, read_scannet_frames
from tasks.formats.semantickitti import SemanticKITTIDataset


def _scannet_scene(root: Path) -> Path:
    return root / "scannet" / "train" / "scene0000_00"


def _load_scannet(root: Path) -> None:
    ScanNetDataset(root / "scannet", "train").load("scene0000_00")


def _load_s3dis(root: Path) -> None:
    S3DISDataset(root / "s3dis", "train").load("Area_1/office_1")


def _kitti_files(root: Path) -> tuple[Path, Path]:
    base = root / "semantickitti" / "sequences" / "00"
    return base / "velodyne" / "000000.bin", base / "labels" / "000000.label"


def _load_kitti(root: Path) -> None:
    SemanticKITTIDataset(root / "semantickitti", "train").load("00/000000")


def _nus_files(root: Path) -> tuple[NuScenesLidarSegDataset, Path, Path]:
    ds = NuScenesLidarSegDataset(root / "nuscenes", "train", "v1.0-mini")
    sd_token = ds.nusc.get("sample", ds.names[0])["data"]["LIDAR_TOP"]
    points = root / "nuscenes" / ds.nusc.get("sample_data", sd_token)["filename"]
    labels = root / "nuscenes" / ds.nusc.get("lidarseg", sd_token)["filename"]
    return ds, points, labels


def _expect(load: Callable[[], object], path: Path, words: str) -> None:
    with pytest.raises(DataFormatError) as info:
        load()
    assert str(path) in str(info.value), str(info.value)
    assert words in str(info.value), str(info.value)


# --- Pointcept layouts (ScanNet, S3DIS): one case per kind of damage -------------------------------------------
POINTCEPT_CASES = {
    "missing": (lambda p: p.unlink(), "coord.npy", "missing"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:100]), "coord.npy", "cannot be read"),
    "wrong dtype": (lambda p: np.save(p, np.load(p).astype(np.int32)), "coord.npy", "dtype"),
    "wrong shape": (lambda p: np.save(p, np.load(p)[:, :2]), "coord.npy", "shape"),
    "length mismatch": (lambda p: np.save(p, np.load(p)[:-5]), "color.npy", "entries"),
    "nan coordinates": (lambda p: np.save(p, np.where(np.arange(len(np.load(p)))[:, None] == 3, np.nan,
                                                       np.load(p)).astype(np.float32)), "coord.npy", "non-finite"),
}


@pytest.mark.parametrize("case", sorted(POINTCEPT_CASES))
def test_scannet_bad_files(tiny_copy: Path, case: str) -> None:
    damage, file, words = POINTCEPT_CASES[case]
    path = _scannet_scene(tiny_copy) / file
    damage(path)
    _expect(lambda: _load_scannet(tiny_copy), path, words)


@pytest.mark.parametrize("case", sorted(POINTCEPT_CASES))
def test_s3dis_bad_files(tiny_copy: Path, case: str) -> None:
    damage, file, words = POINTCEPT_CASES[case]
    path = tiny_copy / "s3dis" / "Area_1" / "office_1" / file
    damage(path)
    _expect(lambda: _load_s3dis(tiny_copy), path, words)


@pytest.mark.parametrize(("loader", "folder", "file"), [
    (_load_scannet, "scannet/train/scene0000_00", "segment20.npy"),
    (_load_s3dis, "s3dis/Area_1/office_1", "segment.npy"),
])
def test_pointcept_labels_out_of_range(tiny_copy: Path, loader: Callable, folder: str, file: str) -> None:
    path = tiny_copy / folder / file
    labels = np.load(path)
    labels[7] = 250
    np.save(path, labels)
    _expect(lambda: loader(tiny_copy), path, "outside")


def test_scannet_missing_split(tiny_copy: Path) -> None:
    _expect(lambda: ScanNetDataset(tiny_copy / "scannet", "nosuch"), tiny_copy / "scannet" / "nosuch", "does not exist")


# --- SemanticKITTI ------------------------------------------------------------------------------------------------
def test_kitti_truncated_scan(tiny_copy: Path) -> None:
    scan, _ = _kitti_files(tiny_copy)
    scan.write_bytes(scan.read_bytes()[:-6])
    _expect(lambda: _load_kitti(tiny_copy), scan, "truncated")


def test_kitti_missing_labels(tiny_copy: Path) -> None:
    _, labels = _kitti_files(tiny_copy)
    labels.unlink()
    _expect(lambda: _load_kitti(tiny_copy), labels, "missing")


def test_kitti_label_count_mismatch(tiny_copy: Path) -> None:
    _, labels = _kitti_files(tiny_copy)
    labels.write_bytes(labels.read_bytes()[:-8])
    _expect(lambda: _load_kitti(tiny_copy), labels, "entries")


def test_kitti_unknown_raw_label(tiny_copy: Path) -> None:
    _, labels = _kitti_files(tiny_copy)
    raw = np.fromfile(labels, dtype=np.uint32)
    raw[0] = 123  # not in the learning map
    raw.tofile(labels)
    _expect(lambda: _load_kitti(tiny_copy), labels, "unknown raw id")


def test_kitti_nan_coordinates(tiny_copy: Path) -> None:
    scan, _ = _kitti_files(tiny_copy)
    xyzi = np.fromfile(scan, dtype=np.float32)
    xyzi[5] = np.inf
    xyzi.tofile(scan)
    _expect(lambda: _load_kitti(tiny_copy), scan, "non-finite")


# --- nuScenes -----------------------------------------------------------------------------------------------------
def test_nuscenes_truncated_sweep(tiny_copy: Path) -> None:
    ds, points, _ = _nus_files(tiny_copy)
    points.write_bytes(points.read_bytes()[:-4])
    _expect(lambda: ds.load(ds.names[0]), points, "truncated")


def test_nuscenes_label_count_mismatch(tiny_copy: Path) -> None:
    ds, _, labels = _nus_files(tiny_copy)
    labels.write_bytes(labels.read_bytes()[:-10])
    _expect(lambda: ds.load(ds.names[0]), labels, "entries")


def test_nuscenes_label_out_of_range(tiny_copy: Path) -> None:
    ds, _, labels = _nus_files(tiny_copy)
    raw = np.fromfile(labels, dtype=np.uint8)
    raw[0] = 40
    raw.tofile(labels)
    _expect(lambda: ds.load(ds.names[0]), labels, "outside")


def test_nuscenes_missing_tables(tiny_copy: Path) -> None:
    (tiny_copy / "nuscenes" / "v1.0-mini").rename(tiny_copy / "nuscenes" / "elsewhere")
    with pytest.raises(DataFormatError, match="table folder does not exist"):
        NuScenesLidarSegDataset(tiny_copy / "nuscenes", "train", "v1.0-mini")


# --- RGB-D frames: bad frames are skipped with a warning, broken files are errors ---------------------------------
def test_scannet_frames_with_bad_pose_or_empty_depth_are_skipped(tiny_copy: Path, caplog) -> None:
    folder = tiny_copy / "scannet" / "rgbd" / "scene0000_00"
    n = len(list((folder / "pose").glob("*.txt")))
    (folder / "pose" / "0.txt").write_text("-inf -inf -inf -inf\n" * 4)
    cv2.imwrite(str(folder / "depth" / "1.png"), np.zeros((48, 64), dtype=np.uint16))
    with caplog.at_level(logging.WARNING):
        views = read_scannet_frames(folder)
    assert views.names == [str(i) for i in range(2, n)]
    assert "non-finite camera pose" in caplog.text and "no valid depth" in caplog.text


def test_scannet_frames_corrupt_depth_is_an_error(tiny_copy: Path) -> None:
    path = tiny_copy / "scannet" / "rgbd" / "scene0000_00" / "depth" / "0.png"
    path.write_bytes(b"not a png")
    _expect(lambda: read_scannet_frames(path.parent.parent), path, "cannot be decoded")


def test_scannet_frames_8bit_depth_is_an_error(tiny_copy: Path) -> None:
    path = tiny_copy / "scannet" / "rgbd" / "scene0000_00" / "depth" / "0.png"
    cv2.imwrite(str(path), np.ones((48, 64), dtype=np.uint8))
    _expect(lambda: read_scannet_frames(path.parent.parent), path, "uint16")


def test_rgbd_folder_bad_pose_file(tmp_path: Path, tiny_root: Path) -> None:
    src = tiny_root / "scannet" / "rgbd" / "scene0000_00"
    (tmp_path / "camera-intrinsics.txt").write_text("585 0 32\n0 585 24\n0 0 1\n")
    (tmp_path / "frame-000000.color.jpg").write_bytes((src / "color" / "0.jpg").read_bytes())
    (tmp_path / "frame-000000.depth.png").write_bytes((src / "depth" / "0.png").read_bytes())
    (tmp_path / "frame-000000.pose.txt").write_text("1 0 0\n0 1 0\n")
    _expect(lambda: RGBDFolder(tmp_path).views(), tmp_path / "frame-000000.pose.txt", "shape")
