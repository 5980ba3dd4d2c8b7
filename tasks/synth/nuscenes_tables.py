"""Writes generated street drives as a nuScenes-schema dataset that ``nuscenes.nuscenes.NuScenes`` loads.

The tables follow the v1.0 schema (with the lidarseg category 'index' field); sweeps, lidarseg labels,
camera images and the map mask go where the real dataset keeps them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pyquaternion import Quaternion

from tasks.classes import NUSCENES_GENERAL32
from tasks.formats.nuscenes import CAMERAS
from tasks.io import atomic_write, save_image
from tasks.synth.geometry import Boxes
from tasks.synth.outdoor import OUTDOOR_CLASSES, Street, render_camera, scan_lidar, street_motion

GLOBAL_OFFSET = np.array([400.0, 1100.0, 0.0])  # map coordinates of the street's origin
CAMERA_YAWS = {"CAM_FRONT": 0.0, "CAM_FRONT_RIGHT": -55.0, "CAM_FRONT_LEFT": 55.0, "CAM_BACK": 180.0,
               "CAM_BACK_LEFT": 110.0, "CAM_BACK_RIGHT": -110.0}
ATTRIBUTES = ("vehicle.moving", "vehicle.stopped", "vehicle.parked", "cycle.with_rider", "cycle.without_rider",
              "pedestrian.sitting_lying_down", "pedestrian.standing", "pedestrian.moving")
VISIBILITY = (("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100"))
KEYFRAME_SECONDS = 0.5  # nuScenes annotates keyframes at 2 Hz
LIDAR_TO_EGO = (np.array([0.943, 0.0, 1.84]), Quaternion(axis=[0, 0, 1], angle=-np.pi / 2))


def make_token(*parts: object) -> str:
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def rigid(translation: np.ndarray, rotation: Quaternion) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rotation.rotation_matrix
    m[:3, 3] = translation
    return m


def camera_to_ego(yaw_deg: float) -> tuple[np.ndarray, Quaternion]:
    """Mounting of a camera facing ``yaw_deg`` (OpenCV axes: x right, y down, z forward)."""
    yaw = np.deg2rad(yaw_deg)
    forward = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    rot = np.stack([right, [0.0, 0.0, -1.0], forward], axis=1)
    return np.array([1.0, 0.0, 1.5]) + 0.5 * forward * np.array([1.0, 0.6, 0.0]), Quaternion(matrix=rot)


def attribute(category: str, moving: bool) -> str | None:
    """The nuScenes attribute of an object of ``category`` (barriers and cones have none)."""
    if category in ("vehicle.bicycle", "vehicle.motorcycle"):
        return "cycle.with_rider" if moving else "cycle.without_rider"
    if category.startswith("vehicle."):
        return "vehicle.moving" if moving else "vehicle.parked"
    if category.startswith("human."):
        return "pedestrian.moving" if moving else "pedestrian.standing"
    return None


@dataclass
class NuScenesWriter:
    """Accumulates records; ``add_scene`` renders one drive, ``finish`` writes the json tables."""

    root: Path
    version: str
    seed: int
    image_size: tuple[int, int]  # width, height
    azimuths: int
    tables: dict[str, list[dict]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose",
                 "log", "scene", "sample", "sample_data", "sample_annotation", "map", "lidarseg")
        self.tables = {n: [] for n in names}
        for i, name in enumerate(NUSCENES_GENERAL32):
            self.tables["category"].append(dict(token=make_token("category", name), name=name,
                                                description=name, index=i))
        for name in ATTRIBUTES:
            self.tables["attribute"].append(dict(token=make_token("attribute", name), name=name, description=name))
        for token, level in VISIBILITY:
            self.tables["visibility"].append(dict(token=token, level=level, description=f"visibility {level}"))
        for channel in ("LIDAR_TOP", *CAMERAS):
            self.tables["sensor"].append(dict(token=make_token("sensor", channel), channel=channel,
                                              modality="lidar" if channel == "LIDAR_TOP" else "camera"))

    def add_scene(self, name: str, street: Street, n_samples: int, rng: np.random.Generator, step: float = 4.0
                  ) -> None:
        """One drive of ``n_samples`` keyframes, ``step`` metres apart, down the street; some objects move."""
        velocity = street_motion(street, rng, (n_samples - 1) * KEYFRAME_SECONDS)
        log_token = make_token(self.seed, "log", name)
        logfile = f"n000-2026-01-01-00-00-00+0000-{name}"
        self.tables["log"].append(dict(token=log_token, logfile=logfile, vehicle="n000",
                                       date_captured="2026-01-01", location="singapore-onenorth"))
        map_token = make_token(self.seed, "map", name)
        self.tables["map"].append(dict(token=map_token, log_tokens=[log_token], category="semantic_prior",
                                       filename=f"maps/{map_token}.png"))
        save_image(self.root / "maps" / f"{map_token}.png", np.full((64, 64), 255, dtype=np.uint8))
        w, h = self.image_size
        f = 1266.4 / 1600 * w
        k = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1.0]])
        calib = {"LIDAR_TOP": (*LIDAR_TO_EGO, [])}
        calib.update({c: (*camera_to_ego(CAMERA_YAWS[c]), k.tolist()) for c in CAMERAS})
        cs_tokens = {}
        for channel, (t, q, intr) in calib.items():
            cs_tokens[channel] = make_token(self.seed, "calibrated_sensor", name, channel)
            self.tables["calibrated_sensor"].append(dict(
                token=cs_tokens[channel], sensor_token=make_token("sensor", channel), translation=t.tolist(),
                rotation=list(q.elements), camera_intrinsic=intr))
        sample_tokens = [make_token(self.seed, "sample", name, i) for i in range(n_samples)]
        scene_token = make_token(self.seed, "scene", name)
        self.tables["scene"].append(dict(token=scene_token, log_token=log_token, nbr_samples=n_samples,
                                         first_sample_token=sample_tokens[0], last_sample_token=sample_tokens[-1],
                                         name=name, description=f"generated street drive {name}"))
        last_sd: dict[str, str] = {}
        last_ann: dict[int, dict] = {}
        for i, token in enumerate(sample_tokens):
            timestamp = 1_700_000_000_000_000 + int(i * KEYFRAME_SECONDS * 1e6)
            boxes = street.moved(velocity, i * KEYFRAME_SECONDS)
            self.tables["sample"].append(dict(
                token=token, timestamp=timestamp, scene_token=scene_token,
                prev=sample_tokens[i - 1] if i > 0 else "", next=sample_tokens[i + 1] if i + 1 < n_samples else ""))
            ego_world = np.array([-street.length / 2 + 20.0 + i * step, 0.0, 0.0])
            ego_pose = rigid(ego_world, Quaternion())
            for channel, (t, q, _) in calib.items():
                sensor_to_world = ego_pose @ rigid(t, q)
                sd_token = make_token(self.seed, "sample_data", name, i, channel)
                ep_token = make_token(self.seed, "ego_pose", name, i, channel)
                self.tables["ego_pose"].append(dict(token=ep_token, timestamp=timestamp, rotation=[1.0, 0, 0, 0],
                                                    translation=(ego_world + GLOBAL_OFFSET).tolist()))
                stem = f"{logfile}__{channel}__{timestamp}"
                if channel == "LIDAR_TOP":
                    filename = f"samples/LIDAR_TOP/{stem}.pcd.bin"
                    labels = self._write_lidar(self.root / filename, boxes, sensor_to_world, rng)
                    label_file = f"lidarseg/{self.version}/{sd_token}_lidarseg.bin"
                    atomic_write(self.root / label_file, lambda tmp, lab=labels: lab.tofile(tmp))
                    self.tables["lidarseg"].append(dict(token=sd_token, sample_data_token=sd_token,
                                                        filename=label_file))
                    size, fmt = (0, 0), "pcd"
                else:
                    filename = f"samples/{channel}/{stem}.jpg"
                    save_image(self.root / filename, render_camera(boxes, k, sensor_to_world, w, h))
                    size, fmt = (w, h), "jpg"
                record = dict(token=sd_token, sample_token=token, ego_pose_token=ep_token,
                              calibrated_sensor_token=cs_tokens[channel], timestamp=timestamp, fileformat=fmt,
                              is_key_frame=True, width=size[0], height=size[1], filename=filename,
                              prev=last_sd.get(channel, ""), next="")
                if channel in last_sd:
                    self._by_token("sample_data", last_sd[channel])["next"] = sd_token
                last_sd[channel] = sd_token
                self.tables["sample_data"].append(record)
            self._annotate(token, boxes, velocity, ego_world, name, last_ann)

    def _write_lidar(self, path: Path, boxes: Boxes, sensor_to_world: np.ndarray, rng: np.random.Generator
                     ) -> np.ndarray:
        scan = scan_lidar(boxes, sensor_to_world, self.azimuths, rng)
        world_to_sensor = np.linalg.inv(sensor_to_world)
        local = scan.points @ world_to_sensor[:3, :3].T + world_to_sensor[:3, 3]
        pcd = np.c_[local, scan.intensity * 255.0, scan.ring].astype(np.float32)
        atomic_write(path, lambda tmp: pcd.tofile(tmp))
        general = np.array([NUSCENES_GENERAL32.index(c.nuscenes) for c in OUTDOOR_CLASSES], dtype=np.uint8)
        self._last_scan = scan
        return general[scan.kind]

    def _annotate(self, sample_token: str, boxes: Boxes, velocity: np.ndarray, ego_world: np.ndarray, scene: str,
                  last_ann: dict[int, dict]) -> None:
        """Every object within 50 m, with the LiDAR points inside it and the attribute its motion implies (the
        devkit derives velocities from consecutive annotations, so they are the generated ones)."""
        scan = self._last_scan
        for b in np.flatnonzero(boxes.instance >= 0):
            if np.linalg.norm(boxes.center[b, :2] - ego_world[:2]) > 50.0:
                continue
            cls = OUTDOOR_CLASSES[boxes.kind[b]]
            inst = int(boxes.instance[b])
            inst_token = make_token(self.seed, "instance", scene, inst)
            token = make_token(self.seed, "sample_annotation", sample_token, inst)
            attrs = attribute(cls.box, bool(np.any(velocity[b] != 0)))
            half = boxes.half[b]
            record = dict(
                token=token, sample_token=sample_token, instance_token=inst_token, visibility_token="4",
                attribute_tokens=[make_token("attribute", attrs)] if attrs else [],
                translation=(boxes.center[b] + GLOBAL_OFFSET).tolist(),
                size=[2 * half[1], 2 * half[0], 2 * half[2]],  # width, length, height
                rotation=list(Quaternion(axis=[0, 0, 1], angle=boxes.yaw[b]).elements),
                prev="", next="", num_lidar_pts=int((scan.box_index == b).sum()), num_radar_pts=0)
            if inst in last_ann:
                record["prev"] = last_ann[inst]["token"]
                last_ann[inst]["next"] = token
                self._by_token("instance", inst_token)["nbr_annotations"] += 1
                self._by_token("instance", inst_token)["last_annotation_token"] = token
            else:
                self.tables["instance"].append(dict(
                    token=inst_token, category_token=make_token("category", cls.box), nbr_annotations=1,
                    first_annotation_token=token, last_annotation_token=token))
            last_ann[inst] = record
            self.tables["sample_annotation"].append(record)

    def _by_token(self, table: str, token: str) -> dict:
        index = self.__dict__.setdefault("_index", {})
        key = (table, token)
        if key not in index:
            index.update({(table, r["token"]): r for r in self.tables[table]})
        return index[key]

    def finish(self) -> None:
        for name, records in self.tables.items():
            text = json.dumps(records, indent=0)
            atomic_write(self.root / self.version / f"{name}.json", lambda tmp, t=text: tmp.write_text(t))

