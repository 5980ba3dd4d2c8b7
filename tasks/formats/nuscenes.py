"""nuScenes through nuscenes-devkit: LIDAR_TOP keyframes, lidarseg labels, the 6 cameras and 3D boxes.

Labels are read as the 32 general lidarseg classes and mapped to the 16 challenge classes with the
devkit's own ``LidarsegClassMapper`` (its 0 'ignore' becomes -1, the rest shift to 0..15).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from tasks.classes import NUSCENES_GENERAL32
from tasks.errors import DataFormatError
from tasks.formats.base import SceneDataset
from tasks.io import check_length, load_binary, load_image, load_pickle
from tasks.structures import PosedViews, Scene

CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
SPLITS = {  # our split name -> devkit split name, per version
    "v1.0-trainval": {"train": "train", "val": "val"},
    "v1.0-mini": {"train": "mini_train", "val": "mini_val"},
    "v1.0-test": {"test": "test"},
}


def general_to_challenge_lut() -> np.ndarray:
    """uint8 general class (0..31) -> challenge class 0..15, or -1 for ignored classes (devkit mapping)."""
    from nuscenes.eval.lidarseg.utils import LidarsegClassMapper

    # The mapper only reads the category name->index table, which is fixed by the lidarseg release.
    table = SimpleNamespace(lidarseg_name2idx_mapping={n: i for i, n in enumerate(NUSCENES_GENERAL32)})
    mapping = LidarsegClassMapper(table).fine_idx_2_coarse_idx_mapping  # type: ignore[arg-type]
    lut = np.array([mapping[i] for i in range(len(NUSCENES_GENERAL32))], dtype=np.int64)
    return lut - 1


def read_lidarseg_labels(path: Path, n_points: int, lut: np.ndarray, points: Path | None = None) -> np.ndarray:
    """uint8 general-class labels of the ``n_points`` points of the ``points`` file, mapped through ``lut``."""
    raw = check_length(path, load_binary(path, np.uint8), n_points, points)
    if raw.max(initial=0) >= len(lut):
        raise DataFormatError(path, f"label {int(raw.max())} outside the {len(lut)} lidarseg classes")
    return lut[raw]


def read_lidar_points(path: Path) -> np.ndarray:
    """A ``.pcd.bin`` sweep: float32 x5 (x, y, z, intensity, ring index) in the LiDAR frame."""
    return load_binary(path, np.float32, 5)


def intensity(points: np.ndarray) -> np.ndarray:
    """(N, 1) return strength in [0, 1]: nuScenes stores 0-255; Pointcept (and PonderV2) divide by 255, so that
    it is on SemanticKITTI's remission scale."""
    return points[:, 3:4] / np.float32(255.0)


@dataclass
class SensorSample:
    """One multi-sensor sample in the LiDAR frame: points, the 6 cameras and the 3D boxes."""

    token: str
    points: np.ndarray  # (N, 5)
    cameras: list[str]
    images: list[np.ndarray]  # RGB uint8, full resolution
    intrinsics: np.ndarray  # (V, 3, 3)
    lidar_to_cam: np.ndarray  # (V, 4, 4)
    box_centers: np.ndarray  # (M, 3) LiDAR frame
    box_sizes: np.ndarray  # (M, 3) width, length, height
    box_yaws: np.ndarray  # (M,)
    box_labels: list[str]  # detection class names; "ignore" for objects outside the 10 classes
    box_velocities: np.ndarray | None = None  # (M, 2) m/s in the LiDAR frame; NaN where unknown
    lidar_to_global: np.ndarray | None = None  # (4, 4): where predictions go for the devkit
    box_lidar_points: np.ndarray | None = None  # (M,) LiDAR returns inside each box
    box_radar_points: np.ndarray | None = None  # (M,) radar returns (the devkit drops boxes with neither)

    def project(self, view: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N, 2) of all points in one camera and a mask of those in front of it and inside."""
        xyz1 = np.c_[self.points[:, :3], np.ones(len(self.points))]
        cam = (xyz1 @ self.lidar_to_cam[view].T)[:, :3]
        z = cam[:, 2]
        uv = (cam @ self.intrinsics[view].T)[:, :2] / np.maximum(z, 1e-6)[:, None]
        h, w = self.images[view].shape[:2]
        inside = (z > 0.1) & (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h - 1)
        return uv, inside


class NuScenesLidarSegDataset(SceneDataset):
    """LIDAR_TOP keyframes of a split with lidarseg labels; scene names are sample tokens."""

    def __init__(self, root: str | Path, split: str = "train", version: str = "v1.0-trainval",
                 with_cameras: bool = False):
        if version not in SPLITS or split not in SPLITS[version]:
            raise ValueError(f"version/split must be one of {SPLITS}, got {version}/{split}")
        self.version = version
        self.with_cameras = with_cameras  # attach the 6 cameras as posed views (outdoor camera-ray pre-training)
        self.lut = general_to_challenge_lut()
        super().__init__(root, split)

    @cached_property
    def nusc(self):  # noqa: ANN201 - the devkit class
        from nuscenes.nuscenes import NuScenes

        tables = self.root / self.version
        if not tables.is_dir():
            raise DataFormatError(tables, "nuScenes table folder does not exist")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                return NuScenes(version=self.version, dataroot=str(self.root), verbose=False)
        except Exception as exc:  # the devkit raises bare Exception, AssertionError, KeyError, JSON errors...
            path = Path(exc.filename) if isinstance(exc, OSError) and exc.filename else _unreadable_table(tables)
            raise DataFormatError(path or tables, f"nuScenes devkit cannot load the tables ({type(exc).__name__}: "
                                  f"{exc})") from exc

    @contextlib.contextmanager
    def _table_lookups(self) -> Iterator[None]:
        """Name the table folder when records are inconsistent (dangling tokens, missing or retyped fields)."""
        try:
            yield
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            raise DataFormatError(self.root / self.version, f"inconsistent nuScenes tables ({type(exc).__name__}: "
                                  f"{exc})") from exc

    def _scene_names(self) -> list[str]:
        from nuscenes.utils.splits import create_splits_scenes

        wanted = set(create_splits_scenes()[SPLITS[self.version][self.split]])
        tokens = []
        with self._table_lookups():
            for scene in self.nusc.scene:
                if scene["name"] not in wanted:
                    continue
                token = scene["first_sample_token"]
                while token:
                    tokens.append(token)
                    token = self.nusc.get("sample", token)["next"]
        return tokens

    def load(self, name: str) -> Scene:
        with self._table_lookups():
            sd_token = self.nusc.get("sample", name)["data"]["LIDAR_TOP"]
            points_file = self.root / self.nusc.get("sample_data", sd_token)["filename"]
            label_file = (self.root / self.nusc.get("lidarseg", sd_token)["filename"]
                          if hasattr(self.nusc, "lidarseg") else None)
        for path, table in ((points_file, "sample_data"), (label_file, "lidarseg")):
            if path is not None and not path.is_file():
                raise DataFormatError(path, f"file is missing (listed in {self.version}/{table}.json)")
        points = read_lidar_points(points_file)
        segment = None if label_file is None else read_lidarseg_labels(label_file, len(points), self.lut, points_file)
        views = self.camera_views(name) if self.with_cameras else None
        return Scene(name=name, coord=points[:, :3].copy(), strength=intensity(points), segment=segment, views=views)

    def _sensor_to_global(self, sd_token: str) -> np.ndarray:
        from nuscenes.utils.geometry_utils import transform_matrix
        from pyquaternion import Quaternion

        sd = self.nusc.get("sample_data", sd_token)
        cs = self.nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        pose = self.nusc.get("ego_pose", sd["ego_pose_token"])
        return (transform_matrix(pose["translation"], Quaternion(pose["rotation"]))
                @ transform_matrix(cs["translation"], Quaternion(cs["rotation"])))

    def _cameras(self, sample: dict) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """The sample's camera images (RGB), intrinsics (V, 3, 3) and LiDAR-to-camera transforms (V, 4, 4)."""
        lidar_to_global = self._sensor_to_global(sample["data"]["LIDAR_TOP"])
        images, intrinsics, lidar_to_cam = [], [], []
        for cam in CAMERAS:
            sd_token = sample["data"][cam]
            sd = self.nusc.get("sample_data", sd_token)
            images.append(load_image(self.root / sd["filename"]))
            intrinsics.append(np.array(self.nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
                                       ["camera_intrinsic"]))
            lidar_to_cam.append(np.linalg.inv(self._sensor_to_global(sd_token)) @ lidar_to_global)
        return images, np.stack(intrinsics), np.stack(lidar_to_cam)

    def camera_views(self, name: str) -> PosedViews:
        """The sample's cameras as posed views in the LiDAR frame (images and calibration; no depth maps)."""
        with self._table_lookups():
            images, intrinsics, lidar_to_cam = self._cameras(self.nusc.get("sample", name))
        if len({img.shape for img in images}) != 1:
            raise DataFormatError(self.root / self.version, f"sample {name}: its cameras' images differ in size "
                                  f"({sorted({img.shape[:2] for img in images})})")
        image = np.stack(images)
        return PosedViews(image, np.zeros(image.shape[:3], np.float32), intrinsics, np.linalg.inv(lidar_to_cam),
                          names=list(CAMERAS))

    def sensors(self, name: str, cameras: bool = True) -> SensorSample:
        """The sample's LiDAR sweep, 6 camera images with calibration (``cameras``), and boxes with their
        detection class and velocity (the devkit's, from the neighbouring annotations), all in the LiDAR frame."""
        from nuscenes.eval.detection.utils import category_to_detection_name

        sample = self.nusc.get("sample", name)
        lidar_sd = sample["data"]["LIDAR_TOP"]
        lidar_to_global = self._sensor_to_global(lidar_sd)
        images, intrinsics, lidar_to_cam = self._cameras(sample) if cameras else ([], np.zeros((0, 3, 3)),
                                                                                  np.zeros((0, 4, 4)))
        path, boxes, _ = self.nusc.get_sample_data(lidar_sd)
        to_lidar = np.linalg.inv(lidar_to_global)[:3, :3]
        velocity = np.array([self.nusc.box_velocity(b.token) for b in boxes]).reshape(-1, 3) @ to_lidar.T
        points_file = Path(path)
        if not points_file.is_file():
            raise DataFormatError(points_file, f"file is missing (listed in {self.version}/sample_data.json)")
        return SensorSample(
            token=name, points=read_lidar_points(points_file), cameras=list(CAMERAS) if cameras else [],
            images=images, intrinsics=intrinsics, lidar_to_cam=lidar_to_cam,
            box_centers=np.array([b.center for b in boxes]).reshape(-1, 3),
            box_sizes=np.array([b.wlh for b in boxes]).reshape(-1, 3),
            box_yaws=np.array([b.orientation.yaw_pitch_roll[0] for b in boxes]),
            box_labels=[category_to_detection_name(b.name) or "ignore" for b in boxes],
            box_velocities=velocity[:, :2], lidar_to_global=lidar_to_global,
            box_lidar_points=np.array([self.nusc.get("sample_annotation", b.token)["num_lidar_pts"] for b in boxes],
                                      dtype=np.int64),
            box_radar_points=np.array([self.nusc.get("sample_annotation", b.token)["num_radar_pts"] for b in boxes],
                                      dtype=np.int64),
        )


def read_lidarseg_frames(folder: str | Path) -> list[Scene]:
    """Loose lidarseg frames: ``frameNN/points.bin`` (float32 x5) + ``frameNN/lidarseg.bin`` (uint8 general)."""
    folder = Path(folder)
    frames = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not frames:
        raise DataFormatError(folder, "no frame folders with points.bin + lidarseg.bin")
    lut = general_to_challenge_lut()
    scenes = []
    for frame in frames:
        points = read_lidar_points(frame / "points.bin")
        segment = read_lidarseg_labels(frame / "lidarseg.bin", len(points), lut, frame / "points.bin")
        scenes.append(Scene(name=frame.name, coord=points[:, :3].copy(), strength=intensity(points),
                            segment=segment))
    return scenes


def _unreadable_table(folder: Path) -> Path | None:
    """The first table of ``folder`` that is not valid JSON (the devkit's errors do not name it)."""
    for path in sorted(folder.glob("*.json")):
        try:
            json.loads(path.read_bytes())
        except ValueError:
            return path
    return None


def read_mmdet3d_info(pkl: str | Path, index: int = 0) -> SensorSample:
    """One sample of an mmdetection3d v2 nuScenes info file (``data_list`` of plain dicts), images beside it."""
    pkl = Path(pkl)
    try:
        table = load_pickle(pkl, "an mmdet3d info file")
        info = table["data_list"][index]
        label_names = {v: k for k, v in table["metainfo"]["categories"].items()}
    except (KeyError, IndexError, TypeError) as exc:
        raise DataFormatError(pkl, f"not an mmdet3d info file with data_list[{index}] ({exc})") from exc
    folder = pkl.parent
    cams = [c for c in CAMERAS if c in info["images"]]
    boxes = np.array([inst["bbox_3d"] for inst in info["instances"]], dtype=np.float64).reshape(-1, 7)
    return SensorSample(
        token=info["token"], points=read_lidar_points(folder / Path(info["lidar_points"]["lidar_path"]).name),
        cameras=cams, images=[load_image(folder / Path(info["images"][c]["img_path"]).name) for c in cams],
        intrinsics=np.array([info["images"][c]["cam2img"] for c in cams], dtype=np.float64)[:, :3, :3],
        lidar_to_cam=np.array([info["images"][c]["lidar2cam"] for c in cams], dtype=np.float64),
        # mmdet3d's nuScenes infos keep (x, y, z, l, w, h, yaw) with z at the box's centre (its dataset builds
        # the boxes with origin (0.5, 0.5, 0.5)); we report centres and (w, l, h). The returns the info file
        # counts inside each box lie inside it (tests/test_detection.py).
        box_centers=boxes[:, :3],
        box_sizes=boxes[:, [4, 3, 5]], box_yaws=boxes[:, 6],
        # label -1 marks objects outside the 10 detection classes
        box_labels=[label_names.get(inst["bbox_label_3d"], "ignore") for inst in info["instances"]],
        box_velocities=np.array([inst.get("velocity", [np.nan, np.nan]) for inst in info["instances"]],
                                dtype=np.float64).reshape(-1, 2),
        lidar_to_global=np.asarray(info["ego2global"], dtype=np.float64)
        @ np.asarray(info["lidar_points"]["lidar2ego"], dtype=np.float64),
        box_lidar_points=np.array([inst.get("num_lidar_pts", -1) for inst in info["instances"]], dtype=np.int64),
        box_radar_points=np.array([inst.get("num_radar_pts", -1) for inst in info["instances"]], dtype=np.int64),
    )
