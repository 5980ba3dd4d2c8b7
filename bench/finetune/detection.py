"""The detection part of the fine-tuning engine: nuScenes samples in, the devkit's NDS out.

A training sample is a keyframe's LiDAR sweep and/or its six camera images, with its boxes. Augmentation is one
similarity of the LiDAR frame (rotation about z, scale, flip), applied to the points, the boxes and the cameras'
poses alike, so the lifted camera features stay where the points are. Training follows the engine: its
optimiser and one-cycle schedule, the one training loop (draws, checkpoints, run log, data parallelism), and
BatchNorm statistics recomputed on training samples before evaluation. Evaluation predicts every sample of the
split, writes the official submission file and scores it with the devkit (:mod:`tasks.metrics.detection`).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from backbones.registry import create_backbone, get_backbone_config
from backbones.structures import PointBatch
from bench import distributed
from bench.finetune.draws import Draw
from bench.finetune.engine import FinetuneContext, Inits, Pretraining, TrainedTaskType, register_task_type
from bench.finetune.exports import NotApplicable, load_export
from bench.hooks import Evaluation
from bench.recipes import FinetuneRecipe
from tasks.contract import OUTDOOR_VOXEL, in_channels, point_features
from tasks.datasets import nuscenes_version
from tasks.errors import DataFormatError
from tasks.formats.nuscenes import SPLITS, NuScenesLidarSegDataset, SensorSample, intensity
from tasks.heads.detection import (
    BEVGrid,
    DetectionInput,
    Detector,
    HeadTargets,
    decode,
    detection_loss,
    head_targets,
)
from tasks.io import atomic_write, load_torch, require_file, save_text
from tasks.metrics.detection import LidarBoxes, evaluate_submission, submission_entries, write_submission
from tasks.spec import TaskSpec
from tasks.structures import Scene
from tasks.transforms import grid_sample_train, voting_fragments

log = logging.getLogger(__name__)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
BN_SAMPLES = 16  # training samples over which BatchNorm statistics are recomputed before evaluation


@dataclass(frozen=True)
class DetectorConfig:
    """What rebuilds a trained detector: its backbones, sensors, BEV map and image size."""

    sensors: tuple[str, ...]
    lidar_backbone: str | None
    camera_backbone: str | None
    image_size: tuple[int, int]
    grid: BEVGrid = BEVGrid()

    def build(self) -> Detector:
        lidar = (create_backbone(self.lidar_backbone, in_channels=in_channels("outdoor")) if self.lidar_backbone
                 else None)
        camera = create_backbone(self.camera_backbone) if self.camera_backbone else None
        return Detector(self.grid, lidar, camera)


def detection_backbones(spec: TaskSpec, backbone: str, image_backbone: str) -> tuple[str | None, str | None]:
    """(3D, 2D) backbone names of a track: LiDAR uses the run's 3D backbone, camera the run's 2D one, fusion the
    run's 3D backbone and ``image_backbone``."""
    modality = get_backbone_config(backbone).modality
    if spec.sensors == ("camera",):
        if modality != "2d":
            raise NotApplicable(f"{spec.id} reads camera images: it needs a 2D backbone, {backbone} is {modality}")
        return None, backbone
    if modality != "3d":
        raise NotApplicable(f"{spec.id} reads LiDAR sweeps: it needs a 3D backbone, {backbone} is {modality}")
    return backbone, (image_backbone if "camera" in spec.sensors else None)


# ----------------------------------------------------------------------------------------------- samples
def sample_boxes(sample: SensorSample, training: bool) -> LidarBoxes:
    """The sample's ground-truth boxes; for training, only those the devkit scores (with a LiDAR or radar return)."""
    keep = np.ones(len(sample.box_centers), dtype=bool)
    if training and sample.box_lidar_points is not None:
        radar = sample.box_radar_points if sample.box_radar_points is not None else 0
        keep &= (sample.box_lidar_points + radar) != 0
    velocities = (sample.box_velocities if sample.box_velocities is not None
                  else np.full((len(keep), 2), np.nan))
    return LidarBoxes(sample.box_centers[keep], sample.box_sizes[keep], sample.box_yaws[keep], velocities[keep],
                      [n for n, k in zip(sample.box_labels, keep, strict=True) if k], np.ones(int(keep.sum())))


def random_similarity(rng: np.random.Generator) -> np.ndarray:
    """A 4x4 map of the LiDAR frame: rotation about z (+-22.5 deg), scale 0.95-1.05, a flip across x or y."""
    angle, scale = rng.uniform(-np.pi / 8, np.pi / 8), rng.uniform(0.95, 1.05)
    c, s = np.cos(angle), np.sin(angle)
    flip = np.diag([1.0 if rng.random() < 0.5 else -1.0, 1.0 if rng.random() < 0.5 else -1.0, 1.0])
    m = np.eye(4)
    m[:3, :3] = scale * np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ flip
    return m


def transform_boxes(boxes: LidarBoxes, m: np.ndarray) -> LidarBoxes:
    """Boxes under a similarity ``m`` (4x4): centres, sizes, headings and velocities move with the frame."""
    linear = m[:2, :2]
    scale = float(np.cbrt(abs(np.linalg.det(m[:3, :3]))))
    heading = np.stack([np.cos(boxes.yaws), np.sin(boxes.yaws)], 1) @ linear.T
    return LidarBoxes(boxes.centers @ m[:3, :3].T + m[:3, 3], boxes.sizes * scale,
                      np.arctan2(heading[:, 1], heading[:, 0]), boxes.velocities @ linear.T, boxes.names, boxes.scores)


def sweep_cloud(points: np.ndarray, grid: BEVGrid, rng: np.random.Generator | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sweep's points on the BEV map, one per 10 cm voxel (random when training, the first test-mode fragment
    when evaluating), as (coord, grid_coord, features)."""
    inside = ((np.abs(points[:, :2]) < grid.extent).all(1) & (points[:, 2] > grid.z_range[0])
              & (points[:, 2] < grid.z_range[1]))
    points = points[inside]
    scene = Scene(name="sweep", coord=points[:, :3].astype(np.float32), strength=intensity(points))
    if rng is None:
        fragment = voting_fragments(scene.coord, OUTDOOR_VOXEL, 1)[0][0]
    else:
        fragment = grid_sample_train(scene.coord, OUTDOOR_VOXEL, rng)
    return scene.coord[fragment.index], fragment.grid_coord, point_features(scene, "outdoor")[fragment.index]


def camera_inputs(sample: SensorSample, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images resized to ``size`` (H, W) and normalised (V, 3, H, W), their intrinsics (V, 3, 3) and camera-to-LiDAR
    poses (V, 4, 4)."""
    h, w = size
    images, intrinsics = [], []
    for image, k in zip(sample.images, sample.intrinsics, strict=True):
        sy, sx = h / image.shape[0], w / image.shape[1]
        resized = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        images.append(((resized - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1))
        scaled = np.diag([sx, sy, 1.0]) @ k
        scaled[0, 2], scaled[1, 2] = (k[0, 2] + 0.5) * sx - 0.5, (k[1, 2] + 0.5) * sy - 0.5  # pixel centres
        intrinsics.append(scaled)
    return np.stack(images), np.stack(intrinsics), np.linalg.inv(sample.lidar_to_cam)


def make_batch(samples: list[SensorSample], config: DetectorConfig, rngs: Sequence[np.random.Generator] | None
               ) -> tuple[DetectionInput, list[LidarBoxes]]:
    """Model input and ground truth of ``samples``; with ``rngs`` (one per sample), each sample is augmented by its
    own generator (training)."""
    clouds, images, intrinsics, poses, truth = [], [], [], [], []
    for sample, rng in zip(samples, rngs if rngs is not None else [None] * len(samples), strict=True):
        m = random_similarity(rng) if rng is not None else np.eye(4)
        truth.append(transform_boxes(sample_boxes(sample, rng is not None), m))
        if "lidar" in config.sensors:
            points = sample.points.copy()
            points[:, :3] = points[:, :3] @ m[:3, :3].T + m[:3, 3]
            clouds.append(sweep_cloud(points, config.grid, rng))
        if "camera" in config.sensors:
            img, k, cam_to_lidar = camera_inputs(sample, config.image_size)
            images.append(img)
            intrinsics.append(k)
            poses.append(m @ cam_to_lidar)
    stacked = [torch.from_numpy(np.stack(arrays)).float() if arrays else None for arrays in (images, intrinsics, poses)]
    batch = DetectionInput(len(samples), PointBatch.collate(clouds) if clouds else None, *stacked)
    return batch, truth


def detect(model: Detector, config: DetectorConfig, sample: SensorSample, device: torch.device) -> LidarBoxes:
    """The trained detector's boxes on one sample (LiDAR frame): the top 100 after NMS, whatever their score (an
    empty submission is one the devkit cannot score)."""
    model.eval()
    batch, _ = make_batch([sample], config, None)
    heatmap, regression = model(batch.to(device))
    return decode(heatmap, regression, config.grid, score_threshold=0.0)[0]  # the devkit ranks by score itself


def save_detector(path: Path, model: Detector, config: DetectorConfig) -> None:
    """The weights as a plain state dict (``model.pt``) and, beside them, the description that rebuilds the model
    (``model.json``): loading a detector reads data, never code."""
    save_text(path.with_suffix(".json"), json.dumps(asdict(config), indent=1))
    atomic_write(path, lambda tmp: torch.save(model.state_dict(), tmp))


def load_detector(path: str | Path) -> tuple[Detector, DetectorConfig]:
    """A detector saved by a detection run (``model.pt`` and ``model.json`` in its artifacts folder)."""
    path = Path(path)
    state = load_torch(path, "a detector's weights")
    if isinstance(state, dict) and {"config", "state"} <= state.keys():  # a model.pt from before model.json
        described, raw, state = path, state["config"], state["state"]
    else:
        described = require_file(path.with_suffix(".json"))
        try:
            raw = json.loads(described.read_text())
        except ValueError as exc:
            raise DataFormatError(described, f"not JSON ({exc})") from exc
    try:
        grid = BEVGrid(**{**raw["grid"], "z_range": tuple(raw["grid"]["z_range"])})
        config = DetectorConfig(**{**raw, "grid": grid, "sensors": tuple(raw["sensors"]),
                                   "image_size": tuple(raw["image_size"])})
    except (ValueError, KeyError, TypeError) as exc:
        raise DataFormatError(described, f"not a detector description ({exc!r})") from exc
    model = config.build()
    model.load_state_dict(state)
    return model.eval(), config


@dataclass(frozen=True)
class SampleBatch:
    """Makes a training batch from draws: the samples' sensors, each augmented by its draw's generator, and the
    head's targets. Runs in the DataLoader's workers."""

    samples: NuScenesLidarSegDataset
    config: DetectorConfig

    def __call__(self, draws: list[Draw]) -> tuple[DetectionInput, list[HeadTargets]]:
        cameras = "camera" in self.config.sensors
        sensors = [self.samples.sensors(self.samples.names[i], cameras) for i, _ in draws]
        batch, truth = make_batch(sensors, self.config, [rng for _, rng in draws])
        return batch, [head_targets(t, self.config.grid) for t in truth]


# ----------------------------------------------------------------------------------------------- the task
@dataclass(frozen=True)
class DetectionSettings:
    # the image backbone of the fusion track (and of the camera track when the matrix names no 2D backbone), the
    # size camera images are resized to (H, W; multiples of 32), and the epochs (mini splits hold few samples)
    image_backbone: str = "timm:resnet18"
    image_size: tuple[int, int] = (256, 704)
    epochs: int = 20


@register_task_type("detection")
class Detection(TrainedTaskType):
    """nuScenes 3D detection: the items are keyframe samples (their sensors read when drawn)."""

    section, Settings = "detection", DetectionSettings

    def check(self, spec: TaskSpec, backbone: str, linear_probe: bool) -> None:
        if linear_probe:
            raise NotApplicable(f"{spec.id}: the probe protocol reads per-point classes linearly; a detection "
                                "head has no linear read-out")
        detection_backbones(spec, backbone, DetectionSettings().image_backbone)

    def pretrainings(self, spec: TaskSpec, backbone: str, recipe: FinetuneRecipe) -> list[Pretraining]:
        modality = get_backbone_config(backbone).modality
        if spec.sensors == ("camera",):
            return [Pretraining(backbone, "image", "init_path")] if modality == "2d" else []
        jobs = super().pretrainings(spec, backbone, recipe)
        if jobs and "camera" in spec.sensors:
            jobs.append(Pretraining(self.settings(recipe).image_backbone, "image", "image_init_path"))
        return jobs

    def matrix_backbones(self, spec: TaskSpec, backbones: Sequence[str], recipe: FinetuneRecipe) -> list[str]:
        """A camera-only track runs the 2D backbones, or its image backbone when none is named (so
        ``run --tasks 'nuscenes-det*'`` runs every track with the defaults)."""
        if spec.sensors != ("camera",):
            return list(backbones)
        return ([b for b in backbones if get_backbone_config(b).modality == "2d"]
                or [self.settings(recipe).image_backbone])

    def dataset(self, spec: TaskSpec, data_root: Path, split: str) -> NuScenesLidarSegDataset:
        root = data_root / spec.dataset
        return NuScenesLidarSegDataset(root, spec.train_split if split == "train" else split, nuscenes_version(root))

    def epochs(self, recipe: FinetuneRecipe) -> int:
        return self.settings(recipe).epochs

    def config(self, ctx: FinetuneContext) -> DetectorConfig:
        settings = self.settings(ctx.recipe)
        lidar, camera = detection_backbones(ctx.spec, ctx.backbone, settings.image_backbone)
        return DetectorConfig(ctx.spec.sensors, lidar, camera, settings.image_size)

    def sensor_backbones(self, ctx: FinetuneContext) -> dict[str, str | None]:
        config = self.config(ctx)
        return {"lidar": config.lidar_backbone, "camera": config.camera_backbone}

    def build(self, ctx: FinetuneContext, init: str | Path | None, image_init: str | Path | None
              ) -> tuple[Detector, Inits]:
        """The detector; ``init`` is the run's backbone's export, ``image_init`` the fusion track's image one."""
        config = self.config(ctx)
        model = config.build()
        lidar = config.lidar_backbone
        shas = {}
        for branch, name, path, channels in (("lidar", lidar, init if lidar else None, in_channels("outdoor")),
                                             ("camera", config.camera_backbone, image_init if lidar else init, 3)):
            if name and path:
                shas[branch] = load_export(model.backbone[branch], path, name, channels)
        return model, Inits(shas.get("lidar" if lidar else "camera"), shas.get("camera") if lidar else None)

    def collate(self, data: NuScenesLidarSegDataset, ctx: FinetuneContext) -> SampleBatch:
        return SampleBatch(data, self.config(ctx))

    def loss(self, output: tuple[torch.Tensor, torch.Tensor], target: list[HeadTargets], ctx: FinetuneContext
             ) -> torch.Tensor:
        return detection_loss(*output, target)["total"]

    def batchnorm_inputs(self, data: NuScenesLidarSegDataset, ctx: FinetuneContext) -> list[DetectionInput]:
        config = self.config(ctx)
        rng = np.random.default_rng(ctx.seed + 1)
        picked = sorted(rng.permutation(len(data))[:BN_SAMPLES].tolist())
        cameras = "camera" in config.sensors
        return [make_batch([data.sensors(data.names[i], cameras)], config, [rng])[0] for i in picked]

    @torch.no_grad()
    def evaluate(self, model: Detector, data: NuScenesLidarSegDataset, ctx: FinetuneContext) -> Evaluation:
        """Predict every sample of the split (each rank its share), write the submission file in the run's folder
        (or a temporary one) and score it with the devkit (the main rank; every rank returns its scores)."""
        config = self.config(ctx)
        entries = []
        for i in distributed.shard(len(data.names), ctx.ranks):
            name = data.names[i]
            sample = data.sensors(name, "camera" in config.sensors)
            entries.append(submission_entries(name, detect(model, config, sample, ctx.device), sample.lidar_to_global))
        results = dict(zip(data.names, distributed.gather_in_order(entries, ctx.ranks), strict=True))
        scores = None
        if ctx.ranks.main:
            with tempfile.TemporaryDirectory() as scratch:
                folder = ctx.artifacts if ctx.artifacts is not None else Path(scratch)
                path = write_submission(folder / "submission.json", results, "+".join(config.sensors))
                scores = evaluate_submission(data.nusc, path, SPLITS[data.version][data.split], folder / "devkit")
        scores = distributed.broadcast(scores, ctx.ranks)
        per_class = scores.pop("per_class")
        return Evaluation(scores, per_class)

    def picture(self, model: Detector, data: NuScenesLidarSegDataset, ctx: FinetuneContext, path: Path) -> None:
        from bench.finetune.plots import plot_detections

        config = self.config(ctx)
        name = data.names[0]
        sample = data.sensors(name, "camera" in config.sensors)
        with torch.no_grad():
            boxes = detect(model, config, sample, ctx.device)
        plot_detections(sample, boxes, path, f"{ctx.spec.id}: sample {name[:8]}")

    def save(self, model: Detector, ctx: FinetuneContext) -> None:
        save_detector(ctx.artifacts / "model.pt", model, self.config(ctx))
