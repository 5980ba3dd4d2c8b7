"""The fine-tuning engine: one skeleton for every task type, and a small part per type.

The skeleton builds the backbone (scratch, or a pre-trained export loaded by path), trains with SGD (Nesterov)
or AdamW + OneCycle on augmented, sphere-cropped training clouds (the whole backbone, or with ``linear_probe``
a head on the frozen backbone), recomputes BatchNorm statistics, evaluates, and returns the run facts. A task
type plugs in with :func:`register_task_type`: a class that builds the model around the backbone, picks the
training targets of the sampled points, computes the loss, and evaluates whole scenes.
Its input follows :mod:`tasks.contract`, the same as pre-training's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from backbones.registry import create_backbone, get_backbone_config
from backbones.structures import PointBatch
from bench import distributed
from bench.distributed import Ranks
from bench.finetune.exports import NotApplicable, load_export
from bench.finetune.loop import Draw, StepBatches, train_loop
from bench.optim import one_cycle
from bench.recipes import FinetuneRecipe, result_fields
from tasks.contract import Domain, in_channels, point_features, voxel_size
from tasks.datasets import task_scenes
from tasks.spec import TaskSpec
from tasks.structures import Scene
from tasks.transforms import Augment, grid_sample_train, sphere_crop

log = logging.getLogger(__name__)

BN_SCENES = 16  # training scenes (at most) over which BatchNorm statistics are recomputed before evaluation

Cloud = tuple[np.ndarray, np.ndarray, np.ndarray]  # coord, grid_coord, feat: one PointBatch.collate entry


@dataclass(frozen=True, kw_only=True)
class FinetuneContext:
    """What a task-type part needs to know about the run."""

    spec: TaskSpec
    recipe: FinetuneRecipe
    voxel: float
    device: torch.device
    linear_probe: bool
    picture: Path | None = None  # where the part may draw its predictions on one evaluation scene
    ranks: Ranks = Ranks(0, 1)  # this process among the run's data-parallel processes (evaluation is sharded)

    @property
    def domain(self) -> Domain:
        return self.spec.domain


class TaskPart(Protocol):
    """The per-task-type part of fine-tuning."""

    def build(self, backbone: torch.nn.Module, ctx: FinetuneContext) -> torch.nn.Module: ...

    def targets(self, scene: Scene, index: np.ndarray) -> np.ndarray:
        """Training targets of the points ``index`` of the (augmented) scene."""

    def loss(self, output: torch.Tensor, target: np.ndarray, ctx: FinetuneContext) -> torch.Tensor | None:
        """The batch's loss, or None when the batch has nothing to learn from (no labelled point)."""

    def evaluate(self, model: torch.nn.Module, scenes: object, ctx: FinetuneContext) -> dict[str, object]:
        """Metrics over the evaluation scenes; ``per_class`` holds the per-class scores."""


@runtime_checkable
class SampleTask(Protocol):
    """A task type over multi-sensor samples (detection): its own batches and evaluation, with the engine's optimiser,
    schedule, training loop (:mod:`bench.finetune.loop`) and BatchNorm recomputation."""

    def finetune(self, spec: TaskSpec, backbone_name: str, data_root: str | Path, *, seed: int,
                 recipe: FinetuneRecipe, init: str | Path | None, image_init: str | Path | None, linear_probe: bool,
                 device: str, progress: bool, picture: Path | None, artifacts: Path | None) -> dict[str, object]: ...


TASK_TYPES: dict[str, Callable[[], TaskPart | SampleTask]] = {}


def register_task_type(task_type: str) -> Callable[[type], type]:
    def decorator(cls: type) -> type:
        TASK_TYPES[task_type] = cls
        return cls

    return decorator


def task_part(spec: TaskSpec) -> TaskPart | SampleTask:
    import bench.finetune.detection  # noqa: F401  (registers the built-in parts)
    import bench.finetune.insseg  # noqa: F401
    import bench.finetune.lowlevel  # noqa: F401
    import bench.finetune.semseg  # noqa: F401

    if not spec.runnable or spec.task_type not in TASK_TYPES:
        raise NotApplicable(f"task {spec.id} ({spec.task_type}) has no fine-tuning pipeline yet")
    return TASK_TYPES[spec.task_type]()


def train_cloud(scene: Scene, domain: Domain, voxel: float, limit: int | None, rng: np.random.Generator
                ) -> tuple[Cloud, Scene, np.ndarray]:
    """An augmented, grid-sampled training cloud, cropped to ``limit`` points around a random centre:
    (cloud, the augmented scene, indices of the chosen points)."""
    outdoor = domain == "outdoor"
    augment = Augment(rotate_z=np.pi, scale=(0.95, 1.05) if outdoor else (0.9, 1.1), flip_p=0.5,
                      jitter_sigma=0.0 if outdoor else 0.005)
    scene = augment(scene, rng)
    sampled = grid_sample_train(scene.coord, voxel, rng)
    crop = sphere_crop(scene.coord[sampled.index], limit, rng).index  # a cap keeps local density, never thins
    index, grid = sampled.index[crop], sampled.grid_coord[crop]
    return (scene.coord[index], grid, point_features(scene, domain)[index]), scene, index


@dataclass(frozen=True)
class SceneBatch:
    """Makes a training batch from draws: each scene augmented, grid-sampled and cropped by its draw's generator,
    collated, with the task type's targets of the chosen points. Runs in the DataLoader's workers."""

    scenes: Sequence[Scene]
    part: TaskPart
    domain: Domain
    voxel: float
    limit: int | None

    def __call__(self, draws: list[Draw]) -> tuple[PointBatch, np.ndarray]:
        clouds, targets = [], []
        for i, rng in draws:
            cloud, scene, index = train_cloud(self.scenes[i], self.domain, self.voxel, self.limit, rng)
            clouds.append(cloud)
            targets.append(self.part.targets(scene, index))
        return PointBatch.collate(clouds), np.concatenate(targets)


def cloud_inputs(clouds: Sequence[Cloud], device: torch.device) -> Iterator[PointBatch]:
    """One-cloud batches of ``clouds``, on ``device``: the inputs of a point-cloud model."""
    return (PointBatch.collate([cloud]).to(device) for cloud in clouds)


@torch.no_grad()
def precise_batchnorm(module: torch.nn.Module, inputs: Iterable[object], keep: torch.nn.Module | None = None) -> None:
    """Recompute the BatchNorm statistics of ``module`` (except those inside ``keep``) as exact averages over
    ``inputs`` (model inputs of training scenes, e.g. :func:`cloud_inputs`). Labels are not used.

    SpUNet's BatchNorm follows Pointcept (momentum 0.01): after a short training its running statistics are
    still mostly their initial values, and evaluation (which uses them) would be wrong.
    """
    inside = {id(m) for m in keep.modules()} if keep is not None else set()
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
             and id(m) not in inside]
    if norms:
        saved = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        module.train()
        for batch in inputs:
            module(batch)
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
    module.eval()  # always: what follows evaluates


def batchnorm_clouds(train: Sequence[Scene], domain: Domain, voxel: float, limit: int | None, seed: int
                     ) -> list[Cloud]:
    """Training clouds (at most :data:`BN_SCENES`, as in training) over which BatchNorm statistics are
    recomputed; drawn from their own generator, so they do not depend on what training drew."""
    rng = np.random.default_rng(seed + 1)
    return [train_cloud(train[i], domain, voxel, limit, rng)[0]
            for i in sorted(rng.permutation(len(train))[:BN_SCENES].tolist())]


def make_optimizer(model: torch.nn.Module, recipe: FinetuneRecipe
                   ) -> tuple[torch.optim.Optimizer, list[float]]:
    """The recipe's optimiser over the trainable parameters, the backbone's at ``lr x backbone_lr_scale``;
    returns it with each group's peak learning rate."""
    backbone = getattr(model, "backbone", None)  # a task model without one trains as one group
    inside = {id(p) for p in backbone.parameters()} if backbone is not None else set()
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": ps, "lr": lr} for ps, lr in (
        ([p for p in trainable if id(p) in inside], recipe.lr * recipe.backbone_lr_scale),
        ([p for p in trainable if id(p) not in inside], recipe.lr)) if ps]
    optimizer = (torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=True,
                                 weight_decay=recipe.weight_decay) if recipe.optimizer == "sgd" else
                 torch.optim.AdamW(groups, lr=recipe.lr, weight_decay=recipe.weight_decay))
    return optimizer, [g["lr"] for g in groups]


def finetune(spec: TaskSpec, backbone_name: str, data_root: str | Path, *, seed: int = 0,
             recipe: FinetuneRecipe = FinetuneRecipe(), init: str | Path | None = None,  # noqa: B008
             linear_probe: bool = False, device: str = "cpu", progress: bool = False, picture: Path | None = None,
             image_init: str | Path | None = None, artifacts: Path | None = None) -> dict[str, object]:
    """Train on the task's training split, evaluate on its eval split; returns the metrics and run facts.

    A limited-reconstruction task (a fraction of the training scenes) trains for as many optimiser steps as the
    full split would: the protocol measures what few scenes teach, not what few steps do. A task type whose input
    is not one point cloud per scene (detection: sweeps and camera images) is a :class:`SampleTask`: its own
    samples and evaluation around the same training loop; ``image_init`` (its image backbone's export) is for it.
    ``artifacts``: the run's folder (checkpoint, ``metrics.jsonl``; detection's submission file and model).
    """
    part = task_part(spec)  # a task without a pipeline is refused before any data is opened
    if isinstance(part, SampleTask):
        return part.finetune(spec, backbone_name, data_root, seed=seed, recipe=recipe, init=init,
                             image_init=image_init, linear_probe=linear_probe, device=device, progress=progress,
                             picture=picture, artifacts=artifacts)
    train = task_scenes(spec, data_root, "train")
    evaluation = task_scenes(spec, data_root, spec.eval_split)
    steps = None
    if spec.protocol == "limited-reconstruction":
        full = task_scenes(replace(spec, protocol="full"), data_root, "train")
        steps = math.ceil(len(full) / recipe.batch_size)
    return fit_and_evaluate(spec, backbone_name, train, evaluation, seed=seed, recipe=recipe, init=init,
                            linear_probe=linear_probe, device=device, progress=progress, picture=picture,
                            steps_per_epoch=steps, artifacts=artifacts)


def fit_and_evaluate(spec: TaskSpec, backbone_name: str, train: Sequence[Scene], evaluation: Sequence[Scene], *,
                     seed: int = 0, recipe: FinetuneRecipe = FinetuneRecipe(),  # noqa: B008
                     init: str | Path | None = None, linear_probe: bool = False, device: str = "cpu",
                     progress: bool = False, picture: Path | None = None, steps_per_epoch: int | None = None,
                     artifacts: Path | None = None) -> dict[str, object]:
    """The engine on given scenes (any sized, indexable collections), e.g. training = evaluation in tests.

    ``steps_per_epoch``: optimiser steps per epoch (default: one pass over ``train``). With ``artifacts``, a
    checkpoint of the same run there is resumed from and one is written every epoch (:mod:`bench.finetune.loop`),
    beside the run's ``metrics.jsonl``. With ``linear_probe`` the
    frozen backbone's BatchNorm statistics are first recomputed on the training scenes (no labels), the same for
    every init: a probe reads features normalised for the task's data, not an init's leftover statistics.
    """
    part = task_part(spec)
    if isinstance(part, SampleTask):
        raise NotApplicable(f"task {spec.id} trains on multi-sensor samples, not on scenes; use finetune()")
    config = get_backbone_config(backbone_name)
    if config.modality != "3d":
        raise NotApplicable(f"{backbone_name} is a 2D backbone; {spec.id} is a point-cloud task")
    channels = in_channels(spec.domain)
    torch.manual_seed(seed)
    backbone = create_backbone(backbone_name, in_channels=channels)
    init_sha = load_export(backbone, init, backbone_name, channels) if init else None
    voxel = voxel_size(spec.domain, config.voxel_size)  # the contract's: what pre-training used
    ranks, dev = distributed.setup(device)
    ctx = FinetuneContext(spec=spec, recipe=recipe, voxel=voxel, device=dev, linear_probe=linear_probe,
                          picture=picture if ranks.main else None, ranks=ranks)
    model = part.build(backbone, ctx).to(ctx.device)
    if len(train) == 0 or len(evaluation) == 0:
        raise ValueError(f"task {spec.id}: {len(train)} training and {len(evaluation)} evaluation scenes")
    stats_clouds = batchnorm_clouds(train, ctx.domain, voxel, recipe.max_points, seed)
    if linear_probe:
        precise_batchnorm(model.backbone, cloud_inputs(stats_clouds, ctx.device))
    optimizer, peaks = make_optimizer(model, recipe)
    steps_per_epoch = steps_per_epoch or math.ceil(len(train) / recipe.batch_size)
    steps = recipe.epochs * steps_per_epoch
    scheduler = one_cycle(optimizer, peaks, steps, recipe.pct_start)
    batches = StepBatches(SceneBatch(train, part, ctx.domain, voxel, recipe.max_points), seed=seed,
                          scenes=len(train), batch_size=recipe.batch_size, steps=steps, ranks=ranks)
    fingerprint = {"task": spec.id, "backbone": backbone_name, "seed": seed, "init_sha256": init_sha,
                   "linear_probe": linear_probe, "recipe": result_fields(recipe), "train_scenes": len(train),
                   "steps": steps}

    def step_loss(batch: tuple[PointBatch, np.ndarray]) -> torch.Tensor | None:
        return part.loss(model(batch[0].to(ctx.device)), batch[1], ctx)

    done = train_loop(model, batches, step_loss, optimizer, scheduler, recipe=recipe, steps_per_epoch=steps_per_epoch,
                      fingerprint=fingerprint, folder=artifacts, device=ctx.device,
                      desc=f"{spec.id} {backbone_name}", progress=progress, task=spec.id, ranks=ranks)
    precise_batchnorm(model, cloud_inputs(stats_clouds, ctx.device),  # -> eval mode
                      keep=model.backbone if linear_probe else None)
    metrics = part.evaluate(model, evaluation, ctx)
    done.log.evaluation(done.steps, metrics)
    return {**metrics, "init_sha256": init_sha, "train_scenes": len(train), "eval_scenes": len(evaluation),
            "final_train_loss": done.last_loss, "steps": done.steps, "resumed_from_step": done.resumed_from,
            **distributed.run_facts(model.parameters(), ranks, dev)}
