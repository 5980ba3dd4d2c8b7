"""The low-level tasks: novel-view synthesis and 3D reconstruction by a Ponder model fitted to one scene.

For every scene of the task's split, the Ponder model (backbone + volume + renderer; from scratch or from a
pre-trained export) is fitted by rendering to the scene's training frames: the input cloud is fused from those
frames, and the frames the contract's held-out rule keeps back are never seen. Then:

* ``nvs``: every held-out frame is rendered whole at the recipe's ``nvs_size``, and its colour and depth are scored
  against the real frame (PSNR, SSIM, AbsRel, RMSE, delta < 1.25; :mod:`tasks.metrics.lowlevel`).
* ``recon``: the learned SDF is sampled on a grid over the scene, its zero level set meshed with marching cubes and
  written as ``mesh.ply``; points sampled on it are scored against the reference surface: the scene's mesh where the
  dataset has one (``scans/<scene>/<scene>_vh_clean_2.ply``, as ScanNet ships it; exact for generated rooms), else
  the cloud fused from all its depth frames (7-Scenes). Both are cut to what the scene's frames (training and
  held-out) see, as the papers do, and predicted points farther than 5 cm outside the reference's bounding box
  are dropped.

Both tasks of one scene, backbone, init and seed share one fit (``results/runs/fits/``), made by the pre-training
engine (checkpointed, resumable).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from abc import abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from scipy.spatial import cKDTree

from backbones.registry import get_backbone_config
from bench.finetune.engine import FinetuneContext, FinetuneResult, RunFacts, TaskType, register_task_type
from bench.finetune.exports import NotApplicable, export_sha256
from bench.hooks import Evaluation, precise_batchnorm
from bench.pretrain.data import HELDOUT_EPOCH, PretrainSample, SceneSource, build_sample, camera_preview
from bench.pretrain.engine import Pretrainer
from bench.pretrain.model import PonderModel, sample_to
from bench.recipes import PretrainRecipe, get_recipe
from renderer.fields import VolumeField
from renderer.rays import RayBundle, near_far_from_box
from tasks.contract import UNIT_BOX, split_heldout, voxel_size
from tasks.errors import DataFormatError
from tasks.formats.rgbd_frames import fuse_views
from tasks.metrics.lowlevel import (
    depth_errors,
    mesh_from_sdf,
    psnr,
    read_mesh,
    reconstruction_scores,
    sample_surface,
    seen_by_views,
    ssim,
    write_mesh,
)
from tasks.spec import TaskSpec
from tasks.structures import PosedViews, Scene
from tasks.transforms import Similarity, normalize_to_unit_cube

log = logging.getLogger(__name__)

FUSE_VOXEL = 0.01  # metres: the reference cloud fused from depth frames
REFERENCE_DENSITY = 4_000  # points per m^2 sampled on a reference or predicted mesh (1.6 cm apart)
DRAWN_FACES = 30_000  # the mesh picture marches the SDF coarser until it has about this many faces


@dataclass
class LowLevelScene:
    """One scene of a low-level task: the training frames' cloud (with those frames), the held-out frames, and
    where its reference surface comes from."""

    name: str
    train: Scene
    heldout: PosedViews
    all_views: PosedViews
    mesh: Path | None  # the dataset's surface mesh, if it has one


def lowlevel_scenes(spec: TaskSpec, data_root: str | Path, fuse_voxel: float = 0.02) -> list[LowLevelScene]:
    """The scenes of the task's evaluation split (read by the one resolver), their frames split into training and
    held-out ones; a scene's surface mesh is where ScanNet keeps it (``scans/<scene>/<scene>_vh_clean_2.ply``)."""
    from tasks.datasets import open_dataset

    root = Path(data_root) / spec.dataset
    data = open_dataset(spec.loader, root, spec.eval_split)
    captures = []
    for i in range(len(data)):
        scene = data[i]
        if scene.views is None or len(scene.views) == 0:
            raise DataFormatError(root, f"scene {scene.name} has no RGB-D frames")
        captures.append((scene.name, scene.views, root / "scans" / scene.name / f"{scene.name}_vh_clean_2.ply"))
    scenes = []
    for name, views, mesh in captures:
        train, held = split_heldout(list(range(len(views))))
        if not held:
            log.warning("%s: %d frames, none held out by the contract's rule; skipped", name, len(views))
            continue
        cloud = fuse_views(views.select(train), name, fuse_voxel, 2)
        scenes.append(LowLevelScene(name, replace(cloud, views=views.select(train)), views.select(held), views,
                                    mesh if mesh.is_file() else None))
    if not scenes:
        raise DataFormatError(root, f"no scene of split {spec.eval_split!r} with held-out RGB-D frames")
    return scenes


@dataclass(frozen=True)
class FitSettings:
    """The low-level tasks' section of the fine-tuning recipe (``fit.steps=500``)."""

    preset: str = "indoor"  # the pre-training preset of the per-scene fit
    overrides: tuple[str, ...] = ()  # key=value overrides of that pre-training recipe
    steps: int = 2000
    nvs_size: tuple[int, int] = (240, 320)  # (H, W) held-out frames are rendered at
    mesh_resolution: int = 256  # the SDF grid marching cubes reads, per axis over the unit box


def fit_recipe(fit: FitSettings, backbone: str, seed: int) -> PretrainRecipe:
    """The pre-training recipe of a fit: the section's ``preset`` with its ``overrides``, ``steps`` steps on one
    scene, the whole cloud as input (no crop, no masking: the fit represents the scene, and is evaluated on
    the input it was fitted on)."""
    return get_recipe(fit.preset, [*fit.overrides, f"backbone={backbone}", "epochs=1",
                                   f"steps_per_epoch={fit.steps}", "render_every=0", f"seed={seed}",
                                   "max_points=None", "mask_ratio=0.0"])


def fit_scene(scene: LowLevelScene, backbone: str, fit: FitSettings, seed: int, init: str | Path | None,
              init_sha: str | None, cache: Path, device: torch.device) -> tuple[PonderModel, float]:
    """A Ponder model fitted to the scene's training frames (or the finished fit of the same key in ``cache``), and
    its final rendering loss; ``init_sha`` names the export ``init`` in the key."""
    label = (init_sha or "scratch")[:12]
    pretrain = fit_recipe(fit, backbone, seed)
    digest = hashlib.sha256(repr(pretrain).encode()).hexdigest()[:8]  # another fit recipe: another folder
    run_dir = cache / f"{scene.name}-{backbone.replace(':', '_')}-{label}-seed{seed}-{digest}"
    source = SceneSource(run_dir, "scene", [scene.name], lambda i: scene.train)
    run_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(run_dir / "fit.lock"):  # nvs and recon runs of one key, in parallel workers, fit once
        trainer = Pretrainer(pretrain, run_dir, run_dir, str(device), resume=True, progress=False, source=source,
                             init=init)
        result = trainer.run()
    return trainer.model.eval(), float(result.last_losses.get("total", float("nan")))


@torch.no_grad()
def scene_field(model: PonderModel, scene: LowLevelScene, device: torch.device
                ) -> tuple[PretrainSample, VolumeField, Similarity]:
    """The fitted model's input for the whole training cloud, its field bound to that input's volumes (computed
    once for every render and SDF query of the scene), and the map to its unit cube. The model's BatchNorm
    statistics are set to this input's first (training leaves running averages that lag behind, momentum 0.01)."""
    voxel = voxel_size("indoor", get_backbone_config(model.recipe.backbone).voxel_size)
    sample = sample_to(build_sample(scene.train, model.recipe, voxel, HELDOUT_EPOCH, 0, augment=False), device)
    precise_batchnorm(model, [sample])  # -> eval mode
    field = model.field.bind(*model(sample), sample.spec)
    _, norm = normalize_to_unit_cube(scene.train)
    return sample, field, norm


@torch.no_grad()
def render_view(model: PonderModel, sample: PretrainSample, field: VolumeField, view: PosedViews, norm: Similarity,
                size: tuple[int, int], device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(real rgb, rendered rgb, real depth, rendered depth) of one frame at ``size`` (h, w); depths in metres
    along the ray, 0 where the real frame has none."""
    preview = camera_preview(norm.apply_views(view), size)
    origins, directions = preview.origins.to(device), preview.directions.to(device)
    near, far, _ = near_far_from_box(origins, directions, *UNIT_BOX, near_min=0.01)
    rays = RayBundle(origins, directions, near, torch.maximum(far, near + 1e-3),
                     torch.zeros(len(origins), dtype=torch.long, device=device))
    rgb, depth = model.render(sample, rays, field=field)
    h, w = size
    return (preview.rgb, rgb.reshape(h, w, 3).clamp(0, 1).cpu().numpy(), preview.depth / norm.scale,
            depth.reshape(h, w).cpu().numpy() / norm.scale)


@torch.no_grad()
def sdf_grid(field: VolumeField, resolution: int, device: torch.device) -> tuple[np.ndarray, np.ndarray, float]:
    """The fitted SDF on a ``resolution``^3 grid over the unit box: values (X, Y, Z), first sample, spacing."""
    lo, hi = np.array(UNIT_BOX[0]), np.array(UNIT_BOX[1])
    axis = np.linspace(lo[0], hi[0], resolution)
    spacing = float(axis[1] - axis[0])
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    values = []
    for start in range(0, len(grid), 65_536):
        points = torch.from_numpy(grid[start:start + 65_536]).float().to(device)[:, None]  # (rays, 1 sample, 3)
        values.append(field.sdf(points, torch.zeros(len(points), dtype=torch.long, device=device), False)[0]
                      .reshape(-1).cpu().numpy())
    return np.concatenate(values).reshape((resolution,) * 3), lo, spacing


def reference_points(scene: LowLevelScene, rng: np.random.Generator) -> np.ndarray:
    """The reference surface: points on the dataset's mesh (its vertices, when it is a point cloud), or the cloud
    fused from all depth frames."""
    if scene.mesh is not None:
        vertices, faces = read_mesh(scene.mesh)
        return sample_surface(vertices, faces, REFERENCE_DENSITY, rng) if len(faces) else vertices
    return fuse_views(scene.all_views, scene.name, FUSE_VOXEL, 2).coord.astype(np.float64)


def to_world(points: np.ndarray, norm: Similarity) -> np.ndarray:
    """Points of the unit cube back in the scene's frame (the inverse of ``norm``)."""
    return (points - norm.translation) @ norm.rotation / norm.scale


class _LowLevel(TaskType):
    """What both low-level tasks share: the scenes, a fit per scene (the Pretrainer, on the one trainer), the
    artifacts folder, the ``fit`` recipe section; ``score`` is the task's own."""

    section, Settings = "fit", FitSettings

    def check(self, spec: TaskSpec, backbone: str, linear_probe: bool) -> None:
        if linear_probe:
            raise NotApplicable(f"{spec.id}: a low-level task fits the whole model to a scene; there is no probe")
        if get_backbone_config(backbone).modality != "3d":
            raise NotApplicable(f"{spec.id} fits a point-cloud Ponder model; {backbone} is a 2D backbone")

    def finetune(self, ctx: FinetuneContext, data_root: Path, *, init: str | Path | None,
                 image_init: str | Path | None, picture: Path | None, progress: bool) -> FinetuneResult:
        spec, fit = ctx.spec, self.settings(ctx.recipe)
        scenes = lowlevel_scenes(spec, data_root)
        init_sha = export_sha256(init) if init else None
        torch.manual_seed(ctx.seed)
        with tempfile.TemporaryDirectory() as scratch:
            folder = ctx.artifacts if ctx.artifacts is not None else Path(scratch)
            cache = folder.parents[1] / "fits" if ctx.artifacts is not None else Path(scratch) / "fits"
            per_scene, losses = [], []
            for i, scene in enumerate(scenes):
                model, loss = fit_scene(scene, ctx.backbone, fit, ctx.seed, init, init_sha, cache, ctx.device)
                losses.append(loss)
                sample, field, norm = scene_field(model, scene, ctx.device)
                per_scene.append(self.score(model, sample, field, norm, scene, fit, ctx.device,
                                            folder / scene.name, picture if i == 0 else None, spec))
        scores = {k: float(np.mean([s.scores[k] for s in per_scene])) for k in per_scene[0].scores}
        per_class = {k: v for s in per_scene for k, v in s.per_class.items()}
        return FinetuneResult(Evaluation(scores, per_class), RunFacts(
            train_scenes=len(scenes), eval_scenes=len(scenes), steps=fit.steps * len(scenes),
            final_train_loss=float(np.mean(losses)), init_sha256=init_sha))

    @abstractmethod
    def score(self, model: PonderModel, sample: PretrainSample, field: VolumeField, norm: Similarity,
              scene: LowLevelScene, fit: FitSettings, device: torch.device, folder: Path, picture: Path | None,
              spec: TaskSpec) -> Evaluation:
        """The scene's scores (per class: per frame or per scene), pictures and files in ``folder``."""


@register_task_type("nvs")
class NovelViewSynthesis(_LowLevel):
    def score(self, model: PonderModel, sample: PretrainSample, field: VolumeField, norm: Similarity,
              scene: LowLevelScene, fit: FitSettings, device: torch.device, folder: Path, picture: Path | None,
              spec: TaskSpec) -> Evaluation:
        from bench.finetune.plots import plot_heldout_strip

        rows, strip = [], []
        for v in range(len(scene.heldout)):
            real, rendered, real_depth, depth = render_view(model, sample, field, scene.heldout.select([v]), norm,
                                                            fit.nvs_size, device)
            rows.append({"PSNR": psnr(rendered, real), "SSIM": ssim(rendered, real),
                         **depth_errors(depth, real_depth)})
            if len(strip) < 4:
                strip.append((real, rendered, real_depth, depth))
        if picture is not None:
            plot_heldout_strip(strip, picture, f"{spec.id}: {scene.name}, held-out frames")
        scores = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        names = scene.heldout.names or [str(v) for v in range(len(rows))]
        return Evaluation({**scores, "heldout_frames": len(rows)},
                          {f"{scene.name}/{n}": r["PSNR"] for n, r in zip(names, rows, strict=True)})


@register_task_type("recon")
class Reconstruction(_LowLevel):
    def score(self, model: PonderModel, sample: PretrainSample, field: VolumeField, norm: Similarity,
              scene: LowLevelScene, fit: FitSettings, device: torch.device, folder: Path, picture: Path | None,
              spec: TaskSpec) -> Evaluation:
        from bench.finetune.plots import plot_mesh

        sdf, lo, spacing = sdf_grid(field, fit.mesh_resolution, device)
        vertices, faces = mesh_from_sdf(sdf, lo, spacing)
        vertices = to_world(vertices, norm)
        write_mesh(folder / "mesh.ply", vertices, faces)
        rng = np.random.default_rng(0)
        reference = reference_points(scene, rng)
        low, high = reference.min(0) - 0.05, reference.max(0) + 0.05
        predicted = sample_surface(vertices, faces, REFERENCE_DENSITY, rng)
        predicted = predicted[seen_by_views(predicted, scene.all_views)]
        predicted = predicted[((predicted >= low) & (predicted <= high)).all(1)]
        reference = reference[seen_by_views(reference, scene.all_views)]
        scores = reconstruction_scores(predicted, reference)
        if picture is not None:
            step = max(1, int(np.ceil(np.sqrt(len(faces) / DRAWN_FACES))))
            shown, shown_faces = mesh_from_sdf(sdf, lo, spacing, step)
            shown = to_world(shown, norm)
            centres = shown[shown_faces].mean(1)
            # the faces near a scored point (what the frames see, inside the scene), coloured by their error
            scored = cKDTree(predicted).query(centres, distance_upper_bound=step * spacing / norm.scale)[0] < np.inf
            error = cKDTree(reference).query(centres[scored])[0]
            plot_mesh(shown, shown_faces[scored], picture,
                      f"{spec.id}: {scene.name}, F-score {100 * scores['fscore']:.1f} (the part the frames see)",
                      error, up=-scene.all_views.cam_to_world[:, :3, 1].mean(0))  # the cameras' mean up
        return Evaluation({**scores, "mesh_vertices": len(vertices), "mesh_faces": len(faces)},
                          {scene.name: scores["fscore"]})

