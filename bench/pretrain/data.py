"""What pre-training reads: scene sources (any supported layout) and the per-step samples built from them.

A sample is the backbone input (a point cloud, or masked multi-view images) plus the rays whose real colour
and depth the renderer must reproduce. Everything random in a sample (views, augmentation, masking, rays)
comes from a generator seeded by (seed, epoch, scene index), so a run is reproducible, a resumed run
continues exactly, and N processes each building their share of a batch get what one process would.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from backbones.structures import GridSpec, PointBatch
from renderer.rays import RayBundle, near_far_from_box, sample_rays
from tasks.classes import S3DIS13, SCANNET20, STRUCTURED3D25
from tasks.contract import OUTDOOR_EXTENT, UNIT_BOX, grid_spec, point_features, split_heldout
from tasks.datasets import DATASETS, open_dataset
from tasks.errors import DataFormatError
from tasks.structures import PosedViews, Scene
from tasks.transforms import augment as augmented
from tasks.transforms import grid_sample_train, normalize_to_unit_cube, parse_transforms, sphere_crop

log = logging.getLogger(__name__)

HELDOUT_EPOCH = 2**31 - 1  # the seed key of held-out samples: never a training epoch
# SpUNet and PTv3 pool four times by 2: a training input inside one 16-voxel cell leaves their deepest level one
# voxel, on which BatchNorm cannot train (a close-up of real RGB-D frames under the sphere crop and masking)
DEEPEST_STRIDE = 16
REDRAWS = 8  # draws of a step's sample before a one-scene source gives up (other scenes are tried first)
REDRAW_KEY = 1_000_003  # the seed key step between the draws of one position
HELDOUT_SCENES = 4  # validation scenes (sweeps) whose depth error a dataset root's pre-training reports
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class UnusableScene(Exception):
    """A scene that cannot give a training sample (no valid depth, no points in the volume…): skipped."""


# ----------------------------------------------------------------------------------------------- sources
@dataclass
class SceneSource:
    """Training scenes of one dataset, the class names of their labels, and held-out scenes (may be empty)."""

    path: Path
    kind: str
    names: list[str]
    loader: object  # index -> Scene
    class_names: tuple[str, ...] = ()
    heldout: list[Scene] | None = None
    condition: str | None = None  # the scenes' dataset condition (PDNorm); a mixed source's held-out scenes'
    conditions: tuple[str, ...] = ()  # each scene's, where they differ (a mixed source)
    class_sets: dict[str, tuple[int, ...]] | None = None  # per condition, its rows of class_names (PPT)

    def __len__(self) -> int:
        return len(self.names)

    def scene(self, index: int) -> Scene:
        return self.loader(index)

    def condition_of(self, index: int) -> str | None:
        return self.conditions[index] if self.conditions else self.condition


LABELS = {"scannet": SCANNET20, "s3dis": S3DIS13, "structured3d": STRUCTURED3D25}  # the classes pixels are scored on


def open_source(path: str | Path, mode: str, cameras: bool = False, datasets: str = "") -> SceneSource:
    """The scenes at ``path`` in the first format of :data:`tasks.datasets.DATASETS` that serves ``mode`` and is
    found there (a 7-Scenes-style RGB-D folder, a Pointcept ScanNet root, SemanticKITTI, a nuScenes root, a folder
    of loose lidarseg frames), read by the loaders fine-tuning uses: pre-training trains on the training split
    only and reports its depth error on a few validation scenes; an RGB-D folder and loose frames hold out frames
    by the contract's rule, the same frames the ``*-samples`` tasks evaluate on. ``cameras``: outdoor sweeps with
    their cameras attached (camera rays), which only a nuScenes root has. ``datasets``: several datasets of the
    data root ``path`` at once (:func:`mixed_source`).
    """
    from tasks.formats.rgbd_folder import RGBDFolder

    path = Path(path)
    if not path.is_dir():
        raise DataFormatError(path, "pre-training data folder does not exist")
    if datasets:
        return mixed_source(path, mode, datasets)
    kind = next((name for name, fmt in DATASETS.items() if mode in fmt.pretrain and fmt.found(path)), None)
    if kind == "rgbd-folder":
        folder = RGBDFolder(path)
        train, held = split_heldout(list(range(len(folder))))
        scene = folder.scene(index=train)
        heldout = [replace(scene, views=folder.views(held))] if held else []
        return SceneSource(path, kind, [scene.name], lambda i: scene, (), heldout)
    if kind == "lidarseg-frames":
        train, held = (open_dataset(kind, path, split) for split in ("train", "val"))
        return SceneSource(path, kind, train.names, train.__getitem__, (), [held[i] for i in range(len(held))])
    if cameras and kind != "nuscenes":
        raise DataFormatError(path, f"camera rays (outdoor_rays=camera) need a nuScenes root with its cameras; this "
                                    f"is {kind or 'no outdoor dataset'}: use outdoor_rays=lidar")
    if kind is not None:
        options = ({"with_views": True} if mode in ("indoor", "image") else
                   {"with_cameras": True} if cameras else {})
        data = open_dataset(kind, path, "train", **options)
        return SceneSource(path, kind, data.names, data.__getitem__, LABELS.get(kind, ()),
                           _heldout_scenes(kind, path, **options), condition=DATASETS[kind].condition)
    needs = ("RGB-D views (an RGB-D folder or a ScanNet root with rgbd/)" if mode in ("indoor", "image")
             else "LiDAR sweeps")
    raise DataFormatError(path, f"no pre-training data for mode '{mode}': it needs {needs}")


def mixed_source(root: Path, mode: str, datasets: str) -> SceneSource:
    """PonderV2's PPT pre-training data (``datasets="structured3d:4,scannet:2,s3dis:1"``): the training rooms of
    several datasets under the data root, each dataset's repeated its loop ratio times an epoch (PonderV2's
    ``loop``), each under its dataset's condition. Pixel labels are scored against PPT's 36 class names, each
    dataset's own rows (PonderV2's ``valid_index``). The depth error is measured on the first dataset's held-out
    scenes."""
    from bench.finetune.multidataset import parse_datasets
    from tasks.heads.prompt import PPT_CLASSES, VALID_CLASSES

    named = parse_datasets(datasets, "datasets")
    if mode != "indoor" or not named:
        raise ValueError(f"datasets={datasets!r}: PPT pre-training renders several indoor datasets' frames into a "
                         f"3D backbone (mode indoor, one dataset or more); this is mode {mode}")
    parts, index, conditions, heldout = [], [], [], []
    for name, loop in named:
        fmt = DATASETS[name]
        path = root / fmt.folder
        if fmt.condition in conditions:
            raise ValueError(f"datasets: {name} has the condition {fmt.condition} of another dataset named")
        if mode not in fmt.pretrain or fmt.found is None or not path.is_dir() or not fmt.found(path):
            raise DataFormatError(path, f"datasets names {name}, which is not {mode} pre-training data in this data "
                                  f"root ({', '.join(n for n, f in DATASETS.items() if mode in f.pretrain)} are)")
        data = open_dataset(name, path, "train", with_views=True)
        index += [(len(parts), i) for _ in range(loop) for i in range(len(data))]
        conditions += [fmt.condition] * (loop * len(data))
        parts.append(data)
        if len(parts) == 1:
            heldout = _heldout_scenes(name, path, with_views=True)
    return SceneSource(root, "mixed", [parts[p].names[i] for p, i in index],
                       lambda k: parts[index[k][0]][index[k][1]], PPT_CLASSES, heldout, condition=conditions[0],
                       conditions=tuple(conditions), class_sets=VALID_CLASSES)


def _heldout_scenes(loader: str, path: Path, **options: object) -> list[Scene]:
    """The first :data:`HELDOUT_SCENES` scenes of the dataset's validation split: scenes pre-training never sees,
    on which its depth error is measured. Empty when the root has no validation split."""
    try:
        val = open_dataset(loader, path, "val", **options)
    except (FileNotFoundError, DataFormatError) as exc:
        log.info("no held-out scenes for %s: %s", path, exc)
        return []
    return [val[i] for i in range(min(HELDOUT_SCENES, len(val)))]


# ----------------------------------------------------------------------------------------------- samples
@dataclass
class Preview:
    """A low-resolution view to render whole for the pictures: camera pixels, or a LiDAR panorama."""

    origins: torch.Tensor  # (h*w, 3)
    directions: torch.Tensor  # (h*w, 3)
    size: tuple[int, int]  # (h, w)
    rgb: np.ndarray | None  # (h, w, 3) in [0, 1]
    depth: np.ndarray  # (h, w) distance along the ray, 0 = unknown


@dataclass
class PretrainSample:
    name: str
    spec: GridSpec
    rays: RayBundle
    points: PointBatch | None = None  # 3D backbones
    images: torch.Tensor | None = None  # (1, V, 3, H, W) normalised, 2D backbones
    intrinsics: torch.Tensor | None = None  # (1, V, 3, 3) for ``images``
    cam_to_world: torch.Tensor | None = None  # (1, V, 4, 4)
    labels_known: bool = False
    masked: torch.Tensor | None = None  # (N,) bool: points whose features the model's mask token replaces
    preview: Preview | None = None
    metres_per_unit: float = 1.0  # to report depth errors in metres


def sample_rng(seed: int, epoch: int, index: int) -> tuple[np.random.Generator, torch.Generator]:
    rng = np.random.default_rng([seed, epoch, index])
    return rng, torch.Generator().manual_seed(int(rng.integers(2**62)))


def build_sample(scene: Scene, recipe, voxel_size: float, epoch: int, index: int,  # noqa: ANN001
                 augment: bool = True, with_preview: bool = False) -> PretrainSample:
    """The training sample of ``scene`` for this epoch; raises :class:`UnusableScene` when there is none."""
    rng, gen = sample_rng(recipe.seed, epoch, index)
    if recipe.mode == "outdoor":
        return _outdoor_sample(scene, recipe, voxel_size, rng, gen, augment, with_preview)
    return _camera_sample(scene, recipe, voxel_size, rng, gen, augment, with_preview)


def _camera_sample(scene: Scene, recipe, voxel_size: float, rng: np.random.Generator,  # noqa: ANN001
                   gen: torch.Generator, augment: bool, with_preview: bool) -> PretrainSample:
    if scene.views is None or len(scene.views) == 0:
        raise UnusableScene(f"{scene.name}: no RGB-D views")
    pick = rng.choice(len(scene.views), size=min(recipe.views, len(scene.views)), replace=False)
    scene = replace(scene, views=scene.views.select(np.sort(pick)))
    if augment and recipe.mode == "indoor":
        scene = augmented(scene, parse_transforms(recipe.augment), rng)
    full, norm = normalize_to_unit_cube(scene)
    views = full.views
    spec = grid_spec(recipe.domain, recipe.grid)
    labels = None
    if scene.segment is not None and recipe.semantic_dim:
        labels = _pixel_labels(full, views)
    rays = sample_rays(torch.from_numpy(views.image).float() / 255.0, torch.from_numpy(views.depth),
                       torch.from_numpy(views.intrinsics), torch.from_numpy(views.cam_to_world), recipe.rays_per_view,
                       UNIT_BOX, generator=gen, labels=None if labels is None else torch.from_numpy(labels))
    if len(rays) == 0:
        raise UnusableScene(f"{scene.name}: no pixel with valid depth in the chosen views")
    sample = PretrainSample(scene.name, spec, rays, labels_known=labels is not None,
                            metres_per_unit=1.0 / norm.scale,
                            preview=camera_preview(views, recipe.render_size) if with_preview else None)
    if recipe.mode == "image":
        return _with_images(sample, views, recipe, rng)
    ends = (rays.origins + rays.directions * rays.depth[:, None]).numpy()
    crop = sphere_crop(full.coord, recipe.max_points, rng, candidates=ends)  # centred where a ray ends
    looking = crop.contains(ends)
    sample.rays = rays[torch.from_numpy(looking)]  # rays must end where the (cropped) input has features
    if len(sample.rays) == 0:
        raise UnusableScene(f"{scene.name}: no ray ends inside the input crop")
    keep = crop.index
    keep = keep[rng.random(len(keep)) >= recipe.mask_ratio] if augment else keep  # RandomDropout masking
    if len(keep) == 0:
        raise UnusableScene(f"{scene.name}: no point left after masking")
    coord = full.coord[keep]
    sampled = grid_sample_train(coord, voxel_size * norm.scale, rng)
    if augment and len(np.unique(sampled.grid_coord // DEEPEST_STRIDE, axis=0)) < 2:
        raise UnusableScene(f"{scene.name}: the input crop fits in one cell of the backbones' deepest level "
                            f"({DEEPEST_STRIDE} voxels), where BatchNorm cannot train")
    feat = point_features(full.subset(keep[sampled.index]), "indoor")
    sample.points = PointBatch.collate([(coord[sampled.index], sampled.grid_coord, feat)])
    return sample


def _subset(n: int, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    """A random subset (of rays: render targets, not network input, which is cropped instead)."""
    return np.sort(rng.choice(n, size=limit, replace=False)) if limit and n > limit else np.arange(n)


def _pixel_labels(scene: Scene, views: PosedViews) -> np.ndarray:
    """Per-pixel class of each view: the label of the cloud point nearest to the pixel's back-projection."""
    from scipy.spatial import cKDTree

    from tasks.formats.rgbd_frames import backproject

    tree = cKDTree(scene.coord)
    labels = np.full(views.depth.shape, -1, dtype=np.int64)
    for v in range(len(views)):
        points, _ = backproject(views, v)
        dist, nearest = tree.query(points, distance_upper_bound=0.02)
        found = np.isfinite(dist)
        rows, cols = np.nonzero(views.depth[v] > 0)
        labels[v, rows[found], cols[found]] = scene.segment[nearest[found]]
    return labels


def camera_preview(views: PosedViews, size: tuple[int, int]) -> Preview:
    """The first view at ``size`` (h, w): a ray through every pixel, its colour and its depth along the ray."""
    from renderer.rays import pixel_rays

    h, w = size
    height, width = views.depth.shape[1:]
    k = views.intrinsics[0].copy()
    k[0] *= w / width
    k[1] *= h / height
    v, u = np.mgrid[0:h, 0:w]
    u_t, v_t = torch.from_numpy(u.reshape(-1)), torch.from_numpy(v.reshape(-1))
    kt = torch.from_numpy(k).float().expand(len(u_t), 3, 3)
    pose = torch.from_numpy(views.cam_to_world[0]).float().expand(len(u_t), 4, 4)
    origins, directions, scale = pixel_rays(kt, pose, u_t, v_t)
    depth = cv2.resize(views.depth[0], (w, h), interpolation=cv2.INTER_NEAREST) * scale.reshape(h, w).numpy()
    rgb = cv2.resize(views.image[0], (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return Preview(origins, directions, size, rgb, depth)


def _with_images(sample: PretrainSample, views: PosedViews, recipe, rng: np.random.Generator  # noqa: ANN001
                 ) -> PretrainSample:
    """Resize the views for the 2D backbone and mask ``mask_ratio`` of their 32-pixel patches."""
    h, w = recipe.image_size
    height, width = views.image.shape[1:3]
    images = np.stack([cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA) for img in views.image])
    images = (images.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    patch = 32
    grid = rng.random((len(images), -(-h // patch), -(-w // patch))) < recipe.mask_ratio
    mask = np.repeat(np.repeat(grid, patch, 1), patch, 2)[:, :h, :w]
    images[mask] = 0.0
    k = views.intrinsics.copy()
    k[:, 0] *= w / width
    k[:, 1] *= h / height
    sample.images = torch.from_numpy(images).permute(0, 3, 1, 2)[None].contiguous()
    sample.intrinsics = torch.from_numpy(k).float()[None]
    sample.cam_to_world = torch.from_numpy(views.cam_to_world).float()[None]
    return sample


def _outdoor_sample(scene: Scene, recipe, voxel_size: float, rng: np.random.Generator,  # noqa: ANN001
                    gen: torch.Generator, augment: bool, with_preview: bool) -> PretrainSample:
    """A LiDAR sweep in its sensor frame, block-masked, with rays from the cameras to the points they see
    (PonderV2's ``outdoor_rays=camera``) or from the sensor to its own returns (``lidar``)."""
    if augment:
        scene = augmented(scene, parse_transforms(recipe.augment), rng)
    spec = grid_spec(recipe.domain, recipe.grid)
    lo, hi = np.array(spec.lo), np.array(spec.hi)
    rng_dist = np.linalg.norm(scene.coord, axis=1)
    inside = np.flatnonzero(((scene.coord > lo) & (scene.coord < hi)).all(1) & (rng_dist > 1.0))
    if len(inside) == 0:
        raise UnusableScene(f"{scene.name}: no LiDAR return inside the volume")
    keep = inside[sphere_crop(scene.coord[inside], recipe.max_points, rng).index]
    rays = None
    if recipe.outdoor_rays == "lidar":
        targets = keep[_subset(len(keep), recipe.lidar_rays, rng)]  # returns inside the input crop, before masking
        rays = lidar_rays(scene.coord[targets])
    drop = augment and recipe.mask_ratio > 0 and not recipe.mask_token
    if drop:  # the LiDAR variant drops the masked blocks' points
        blocks = np.floor(scene.coord[keep, :2] / recipe.mask_block).astype(np.int64)
        _, block_id = np.unique(blocks, axis=0, return_inverse=True)
        dropped = rng.random(block_id.max() + 1) < recipe.mask_ratio
        keep = keep[~dropped[block_id.reshape(-1)]]
    if len(keep) == 0:
        raise UnusableScene(f"{scene.name}: no point left after block masking")
    coord = scene.coord[keep]
    sampled = grid_sample_train(coord - lo.astype(np.float32), voxel_size, rng)
    coord = coord[sampled.index]
    if rays is None:
        if scene.views is None:
            raise UnusableScene(f"{scene.name}: camera rays need the sweep's cameras")
        views = scene.views
        if len(views) > recipe.views:  # ``views`` of the cameras, at random
            views = views.select(np.sort(rng.choice(len(views), size=recipe.views, replace=False)))
        rays = camera_rays(views, coord, recipe.rays_per_view, recipe.close_radius, rng)
        if len(rays) == 0:
            raise UnusableScene(f"{scene.name}: no camera sees a LiDAR point")
    masked = None
    if augment and recipe.mask_ratio > 0 and recipe.mask_token:
        masked = torch.from_numpy(block_mask(coord - lo, recipe.mask_block, recipe.mask_ratio, rng))
    feat = point_features(scene.subset(keep[sampled.index]), "outdoor")
    points = PointBatch.collate([(coord, sampled.grid_coord, feat)])
    preview = _lidar_preview(scene.coord, recipe.render_size) if with_preview else None
    return PretrainSample(scene.name, spec, rays, points=points, masked=masked, preview=preview)


def block_mask(coord: np.ndarray, block: float, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """(N,) True for the points of ``ratio`` of the occupied ``block``-metre cubes (PonderV2's outdoor mask: it
    keeps round((1 - ratio) x blocks) blocks, drawn at random)."""
    _, block_id = np.unique(np.floor(coord / block).astype(np.int64), axis=0, return_inverse=True)
    n = int(block_id.max()) + 1
    kept = np.zeros(n, dtype=bool)
    kept[rng.permutation(n)[:round(n * (1 - ratio))]] = True
    return ~kept[block_id.reshape(-1)]


def camera_rays(views: PosedViews, points: np.ndarray, per_camera: int, close_radius: float,
                rng: np.random.Generator) -> RayBundle:
    """Rays from each camera to the LiDAR points it sees (PonderV2's ``ProjectOnImage`` + ``RaySample``): points in
    front of it, inside its image and farther than ``close_radius`` from the LiDAR in x-y, the nearest one per
    pixel; ``per_camera`` of them at random. The depth target is the camera-to-point distance."""
    far = np.linalg.norm(points[:, :2], axis=1) > close_radius
    height, width = views.image.shape[1:3]
    starts, ends = [], []
    for v in range(len(views)):
        world_to_cam = np.linalg.inv(views.cam_to_world[v])
        cam = points @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
        z = cam[:, 2]
        uv = (cam @ views.intrinsics[v].T)[:, :2] / np.maximum(z, 1e-5)[:, None]
        seen = np.flatnonzero(far & (z > 1e-5) & (uv > 0).all(1) & (uv[:, 0] < width) & (uv[:, 1] < height))
        pixel = uv[seen, 0].astype(np.int64) + uv[seen, 1].astype(np.int64) * width
        order = np.lexsort((z[seen], pixel))  # by pixel, nearest first
        first = np.ones(len(order), dtype=bool)
        first[1:] = pixel[order][1:] != pixel[order][:-1]
        visible = seen[order[first]]
        chosen = visible[rng.choice(len(visible), size=min(per_camera, len(visible)), replace=False)]
        starts.append(np.repeat(views.cam_to_world[v][None, :3, 3], len(chosen), 0))
        ends.append(points[chosen])
    return rays_between(np.concatenate(starts), np.concatenate(ends))


def lidar_rays(returns: np.ndarray) -> RayBundle:
    """Rays from the sensor origin to LiDAR returns, with their range as the depth target."""
    return rays_between(np.zeros_like(returns), returns)


def rays_between(starts: np.ndarray, ends: np.ndarray) -> RayBundle:
    """Rays from ``starts`` to ``ends`` (N, 3), whose distance is the depth target, clipped to the outdoor volume."""
    origins = torch.from_numpy(np.ascontiguousarray(starts, dtype=np.float32))
    offset = torch.from_numpy(np.ascontiguousarray(ends, dtype=np.float32)) - origins
    depth = offset.norm(dim=1)
    directions = offset / depth[:, None]
    near, far, _ = near_far_from_box(origins, directions, *OUTDOOR_EXTENT, near_min=0.5)
    return RayBundle(origins, directions, near, far, torch.zeros(len(depth), dtype=torch.long), depth=depth)


def _lidar_preview(coord: np.ndarray, size: tuple[int, int]) -> Preview:
    """A panoramic range image (elevation x azimuth) around the sensor and the rays through its bins."""
    h, w = size
    elev_lo, elev_hi = np.deg2rad(-30.0), np.deg2rad(10.0)
    dist = np.linalg.norm(coord, axis=1)
    az = np.arctan2(coord[:, 1], coord[:, 0])
    el = np.arcsin(np.clip(coord[:, 2] / np.maximum(dist, 1e-6), -1, 1))
    row = ((elev_hi - el) / (elev_hi - elev_lo) * h).astype(int)
    col = ((az + np.pi) / (2 * np.pi) * w).astype(int) % w
    ok = (row >= 0) & (row < h) & (dist > 1.0)
    depth = np.full((h, w), np.inf, dtype=np.float32)
    np.minimum.at(depth, (row[ok], col[ok]), dist[ok].astype(np.float32))
    depth[~np.isfinite(depth)] = 0.0
    els = elev_hi - (np.arange(h) + 0.5) / h * (elev_hi - elev_lo)
    azs = (np.arange(w) + 0.5) / w * 2 * np.pi - np.pi
    e, a = np.meshgrid(els, azs, indexing="ij")
    directions = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], -1).reshape(-1, 3)
    d = torch.from_numpy(directions.astype(np.float32))
    return Preview(torch.zeros_like(d), d, size, None, depth)


def heldout_samples(source: SceneSource, recipe, voxel_size: float,  # noqa: ANN001
                    with_preview: bool = False) -> list[PretrainSample]:
    """Fixed samples of the held-out views/sweeps: no augmentation, no masking (``augment=False``), the same
    rays every time; ``with_preview``: each with its whole view (or LiDAR panorama) to draw."""
    held = []
    for i, scene in enumerate(source.heldout or []):
        if recipe.mode == "outdoor":
            held.append(build_sample(scene, recipe, voxel_size, HELDOUT_EPOCH, i, augment=False,
                                     with_preview=with_preview))
            continue
        if recipe.mode == "image":
            continue  # the 2D backbone would need the held-out view itself as input
        for v in range(len(scene.views)):  # every held-out frame, rendered from the volume of the training cloud
            one = replace(scene, views=scene.views.select([v]))
            try:
                held.append(build_sample(one, recipe, voxel_size, HELDOUT_EPOCH, 1000 * i + v,
                                         augment=False, with_preview=with_preview))
            except UnusableScene as exc:
                log.warning("held-out view skipped: %s", exc)
    return held
