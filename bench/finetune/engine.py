"""The fine-tuning engine: a task type is one class, and every task type trains on the one trainer.

A :class:`TaskType` holds what fine-tuning needs of one kind of task: which backbones and inits it takes, its
datasets, ``build(backbone)`` (the model around the backbone), its batches (collate), its ``loss``, and
``evaluate`` (a typed :class:`~bench.hooks.Evaluation`). Register one with :func:`register_task_type`; nothing
else changes to add one. :func:`train_and_evaluate` runs it: the backbone (scratch, or a pre-trained export) in
the task's model, SGD (Nesterov) or AdamW + OneCycle on augmented training batches (the whole model, or with
``linear_probe`` a head on the frozen backbone), on :class:`~bench.trainer.Trainer` with its hooks (run log,
precise BatchNorm, evaluation best and last; pictures when asked for one, a checkpoint when the run has a
folder). The result keeps the scores apart from the run's facts (:class:`FinetuneResult`). Point-cloud input
follows :mod:`tasks.contract`, as pre-training's.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from backbones.registry import create_backbone, get_backbone_config
from backbones.structures import PointBatch, use_condition
from bench import distributed
from bench.distributed import Ranks
from bench.finetune.draws import Draw, StepBatches
from bench.finetune.exports import NotApplicable, load_export
from bench.finetune.multidataset import MixedScenes
from bench.hooks import (
    Checkpoint,
    Evaluate,
    Evaluation,
    LogMetrics,
    Pictures,
    PreciseBatchNorm,
    precise_batchnorm,
)
from bench.optim import build_schedule, make_optimizer
from bench.recipes import (
    FinetuneRecipe,
    Mode,
    apply_overrides,
    result_fields,
    task_settings,
    training_transforms,
)
from bench.runlog import METRICS, RunLog
from bench.trainer import Trainer
from tasks.contract import Domain, in_channels, point_features, voxel_size
from tasks.datasets import task_scenes
from tasks.spec import TaskSpec
from tasks.structures import Scene
from tasks.transforms import CropSize, Transform, augment, grid_sample_train, parse_transforms, sphere_crop

log = logging.getLogger(__name__)

BN_SCENES = 16  # training scenes (at most) over which BatchNorm statistics are recomputed before evaluation

Cloud = tuple[np.ndarray, np.ndarray, np.ndarray]  # coord, grid_coord, feat: one PointBatch.collate entry


@dataclass(frozen=True, kw_only=True)
class FinetuneContext:
    """What a task type needs to know about the run."""

    spec: TaskSpec
    recipe: FinetuneRecipe
    backbone: str
    voxel: float | None = None  # metres per voxel for a 3D backbone: the recipe's grid_size, else the contract's
    seed: int = 0
    device: torch.device = torch.device("cpu")  # noqa: RUF009
    linear_probe: bool = False
    ranks: Ranks = Ranks(0, 1)  # this process among the run's data-parallel processes (evaluation is sharded)
    artifacts: Path | None = None  # the run's folder (checkpoint, metrics.jsonl, files the task writes)

    @property
    def domain(self) -> Domain:
        return self.spec.domain

    @property
    def transforms(self) -> tuple[Transform, ...]:
        """The recipe's training transforms for the task's domain."""
        return parse_transforms(training_transforms(self.recipe, self.domain))

    @property
    def crop(self) -> CropSize:
        return CropSize(self.recipe.max_points, self.recipe.crop_fraction)


@dataclass(frozen=True)
class RunFacts:
    """What a fine-tune did, apart from what it scored."""

    train_scenes: int
    eval_scenes: int
    steps: int
    final_train_loss: float  # the last optimiser step's loss (mean over the ranks)
    init_sha256: str | None = None  # the run's backbone export
    image_init_sha256: str | None = None  # a fusion track's image backbone export
    resumed_from_step: int | None = None  # the checkpoint's step, when the run resumed
    world_size: int = 1
    ranks_in_sync: bool | None = None  # with several processes: whether they ended with the same weights
    best_step: int | None = None  # with periodic evaluation: the step of the best main score, and that score
    best_score: float | None = None
    skipped_steps: int = 0  # steps skipped for a non-finite loss or gradient (the recipe's skip_diverged_steps)
    backbones: dict[str, str | None] | None = None  # a multi-sensor task's backbone per sensor


@dataclass(frozen=True)
class FinetuneResult:
    evaluation: Evaluation  # the last evaluation (after the last step)
    facts: RunFacts

    @property
    def scores(self) -> dict[str, float]:
        return self.evaluation.scores

    @property
    def per_class(self) -> dict[str, float | None]:
        return self.evaluation.per_class


@dataclass(frozen=True)
class Inits:
    """Which exports a task model's backbones were loaded from (their sha256)."""

    backbone: str | None = None
    image: str | None = None


class Pretraining(NamedTuple):
    """An export a ``ponder`` init needs: the backbone, pre-trained how, and the run field it fills."""

    backbone: str
    mode: Mode
    slot: str  # "init_path", or "image_init_path" for the fusion track's image backbone
    datasets: str = ""  # several datasets of the data root at once, with loop ratios (PretrainRecipe.datasets)


class TaskType(ABC):
    """One kind of task: what fine-tuning needs of it. :meth:`finetune` is the whole run; a task type trained step
    by step on a dataset subclasses :class:`TrainedTaskType`, which runs it on the one trainer.

    Its own recipe section: ``Settings``, a frozen dataclass of its settings with their defaults, read from the
    recipe's ``section.field=value`` items (``recipe.task``) by :meth:`settings`; task types may share a section.
    """

    section: ClassVar[str | None] = None
    Settings: ClassVar[type | None] = None

    def settings(self, recipe: FinetuneRecipe) -> Any:
        """This task type's section of ``recipe``: its ``Settings`` with the recipe's items applied."""
        prefix = f"{self.section}."
        return apply_overrides(self.Settings(), [i[len(prefix):] for i in recipe.task if i.startswith(prefix)])

    def matrix_backbones(self, spec: TaskSpec, backbones: Sequence[str], recipe: FinetuneRecipe) -> list[str]:
        """The backbones of a matrix that run the task (a combination that cannot run is recorded as not
        applicable); by default all of them."""
        return list(backbones)

    def check(self, spec: TaskSpec, backbone: str, linear_probe: bool) -> None:
        """Raise :class:`NotApplicable` where this backbone or protocol cannot run the task (before any data is
        read). The default: a point-cloud task takes a 3D backbone."""
        if get_backbone_config(backbone).modality != "3d":
            raise NotApplicable(f"{backbone} is a 2D backbone; {spec.id} is a point-cloud task")

    def pretrainings(self, spec: TaskSpec, backbone: str, recipe: FinetuneRecipe) -> list[Pretraining]:
        """Each export a ``ponder`` init needs; empty where the combination cannot run (it is recorded as not
        applicable)."""
        return [Pretraining(backbone, spec.domain, "init_path")] if get_backbone_config(backbone).modality == "3d" \
            else []

    @abstractmethod
    def finetune(self, ctx: FinetuneContext, data_root: Path, *, init: str | Path | None,
                 image_init: str | Path | None, picture: Path | None, progress: bool) -> FinetuneResult:
        """Fine-tune on the task's data under ``data_root`` and evaluate."""


class TrainedTaskType(TaskType):
    """A task type trained on batches of its training data: its parts, and the run (:func:`train_and_evaluate`)."""

    def dataset(self, spec: TaskSpec, data_root: Path, split: str) -> Sequence[object]:
        """The items of ``split`` ('train', with the task's protocol applied, or the eval split)."""
        return task_scenes(spec, data_root, split)

    def steps_per_epoch(self, spec: TaskSpec, data_root: Path, train: Sequence[object], recipe: FinetuneRecipe) -> int:
        return math.ceil(len(train) / recipe.batch_size)

    def epochs(self, recipe: FinetuneRecipe) -> int:
        return recipe.epochs

    @abstractmethod
    def build(self, ctx: FinetuneContext, init: str | Path | None, image_init: str | Path | None
              ) -> tuple[torch.nn.Module, Inits]:
        """The task's model (with its backbone as ``.backbone``), the inits loaded into it."""

    @abstractmethod
    def collate(self, data: Sequence[object], ctx: FinetuneContext) -> Callable[[list[Draw]], tuple[object, object]]:
        """A picklable maker of training batches from draws (it runs in the DataLoader's workers): (model input,
        target)."""

    @abstractmethod
    def loss(self, output: object, target: object, ctx: FinetuneContext) -> torch.Tensor | None:
        """The batch's loss, or None when it has nothing to learn from (no labelled point)."""

    @abstractmethod
    def batchnorm_inputs(self, data: Sequence[object], ctx: FinetuneContext) -> list[object]:
        """Model inputs (on the CPU; each with ``.to(device)``) of training items over which BatchNorm statistics
        are recomputed, drawn apart from training's own draws so they do not depend on them. Made once per run."""

    @abstractmethod
    def evaluate(self, model: torch.nn.Module, data: Sequence[object], ctx: FinetuneContext) -> Evaluation:
        """Scores over the evaluation items (sharded over ``ctx.ranks``; every rank returns the whole result)."""

    def picture(self, model: torch.nn.Module, data: Sequence[object], ctx: FinetuneContext, path: Path) -> None:
        """Draw the model's predictions on one evaluation item to ``path`` (by default none)."""

    def save(self, model: torch.nn.Module, ctx: FinetuneContext) -> None:
        """Keep what the task's users need of the trained model in ``ctx.artifacts`` (by default nothing)."""

    def sensor_backbones(self, ctx: FinetuneContext) -> dict[str, str | None] | None:
        """A multi-sensor task's backbone per sensor, for the record (by default None: the run's backbone)."""
        return None

    def training_data(self, ctx: FinetuneContext, data_root: Path) -> Sequence[object]:
        """What the run trains on: by default the task's training split."""
        return self.dataset(ctx.spec, data_root, "train")

    def finetune(self, ctx: FinetuneContext, data_root: Path, *, init: str | Path | None,
                 image_init: str | Path | None, picture: Path | None, progress: bool) -> FinetuneResult:
        train = self.training_data(ctx, data_root)
        evaluation = self.dataset(ctx.spec, data_root, ctx.spec.eval_split)
        return train_and_evaluate(self, ctx, train, evaluation, init=init, image_init=image_init, picture=picture,
                                  progress=progress,
                                  steps_per_epoch=self.steps_per_epoch(ctx.spec, data_root, train, ctx.recipe))


TASK_TYPES: dict[str, type[TaskType]] = {}


def register_task_type(name: str) -> Callable[[type[TaskType]], type[TaskType]]:
    """Register a task type under ``name`` (a :class:`~tasks.spec.TaskSpec`'s ``task_type``)."""
    def decorator(cls: type[TaskType]) -> type[TaskType]:
        if name in TASK_TYPES:
            raise ValueError(f"task type {name!r} is already registered ({TASK_TYPES[name].__qualname__})")
        TASK_TYPES[name] = cls
        return cls

    return decorator


def task_types() -> dict[str, type[TaskType]]:
    """The registered task types, the built-in ones included."""
    import bench.finetune.detection  # noqa: F401  (registers the built-in task types)
    import bench.finetune.insseg  # noqa: F401
    import bench.finetune.lowlevel  # noqa: F401
    import bench.finetune.semseg  # noqa: F401

    return TASK_TYPES


def check_task_settings(recipe: FinetuneRecipe) -> FinetuneRecipe:
    """``recipe`` with its task settings checked against the registered task types' sections (an unknown section
    or field, or a value of the wrong type, is refused naming it) and written canonically (``repr`` of each typed
    value), so that two spellings of one setting make one recipe."""
    sections: dict[str, type] = {}
    for cls in task_types().values():
        if cls.Settings is not None and sections.setdefault(cls.section, cls.Settings) is not cls.Settings:
            raise ValueError(f"task types use section {cls.section!r} with two different Settings classes")
    items = []
    for item in recipe.task:
        key, _, raw = item.partition("=")
        section, _, name = key.partition(".")
        if section not in sections:
            raise ValueError(f"task setting {item!r}: no task type has a section {section!r}; known: "
                             f"{', '.join(sorted(sections))}")
        value = getattr(apply_overrides(sections[section](), [f"{name}={raw}"]), name)
        items.append(f"{key}={value!r}")
    return replace(recipe, task=task_settings(*items))


def task_type(spec: TaskSpec) -> TaskType:
    """A new instance of the task's type."""
    task_types()
    if not spec.runnable:
        raise NotApplicable(f"task {spec.id} ({spec.task_type}) has no fine-tuning pipeline yet")
    if spec.task_type not in TASK_TYPES:
        raise KeyError(f"task {spec.id}: no task type {spec.task_type!r} is registered; known: "
                       f"{', '.join(sorted(TASK_TYPES))}")
    return TASK_TYPES[spec.task_type]()


def train_cloud(scene: Scene, domain: Domain, voxel: float, crop: CropSize, transforms: tuple[Transform, ...],
                rng: np.random.Generator) -> tuple[Cloud, Scene, np.ndarray]:
    """An augmented, grid-sampled training cloud, sphere-cropped to ``crop``'s size around a random centre:
    (cloud, the augmented scene, indices of the chosen points)."""
    scene = augment(scene, transforms, rng)
    sampled = grid_sample_train(scene.coord, voxel, rng)
    kept = sphere_crop(scene.coord[sampled.index], crop.limit(len(sampled.index)), rng).index  # keeps the density
    index, grid = sampled.index[kept], sampled.grid_coord[kept]
    return (scene.coord[index], grid, point_features(scene, domain)[index]), scene, index


class SceneTaskType(TrainedTaskType):
    """A task type over one point cloud per scene (semantic and instance segmentation): augmented, grid-sampled,
    cropped training clouds, with the per-point ``targets`` of the subclass."""

    def build(self, ctx: FinetuneContext, init: str | Path | None, image_init: str | Path | None
              ) -> tuple[torch.nn.Module, Inits]:
        channels = in_channels(ctx.domain)
        backbone = create_backbone(ctx.backbone, in_channels=channels)
        sha = load_export(backbone, init, ctx.backbone, channels) if init else None
        model = self.head(backbone, ctx)
        use_condition(model, ctx.spec.condition)
        return model, Inits(sha)

    @abstractmethod
    def head(self, backbone: torch.nn.Module, ctx: FinetuneContext) -> torch.nn.Module:
        """The task's model around the backbone."""

    @abstractmethod
    def targets(self, scene: Scene, index: np.ndarray) -> np.ndarray:
        """Training targets of the points ``index`` of the (augmented) scene."""

    def collate(self, data: Sequence[Scene], ctx: FinetuneContext) -> SceneBatch:
        return SceneBatch(data, self, ctx.domain, ctx.voxel, ctx.crop, ctx.transforms, self.mix_prob(ctx.recipe))

    def mix_prob(self, recipe: FinetuneRecipe) -> float:
        """Mix3D's chance of overlaying a batch's scenes in pairs (per-point targets only: none by default)."""
        return 0.0

    def batchnorm_inputs(self, data: Sequence[Scene], ctx: FinetuneContext) -> list[PointBatch]:
        """Over the task's own scenes (with several datasets, the norms of its condition are the evaluated ones)."""
        own = data.own if isinstance(data, MixedScenes) else data
        return [PointBatch.collate([cloud])
                for cloud in batchnorm_clouds(own, ctx.domain, ctx.voxel, ctx.crop, ctx.transforms, ctx.seed)]

    def steps_per_epoch(self, spec: TaskSpec, data_root: Path, train: Sequence[object], recipe: FinetuneRecipe) -> int:
        """A limited-reconstruction task (a fraction of the training scenes) trains for as many optimiser steps as
        the full split would: the protocol measures what few scenes teach, not what few steps do. With several
        datasets, an epoch is a pass over the task's own scenes with the others' batches interleaved."""
        own = train.own if isinstance(train, MixedScenes) else train
        if spec.protocol == "limited-reconstruction":
            own = task_scenes(replace(spec, protocol="full"), data_root, "train")
        steps = math.ceil(len(own) / recipe.batch_size)
        return train.steps_per_epoch(steps) if isinstance(train, MixedScenes) else steps


@dataclass(frozen=True)
class SceneBatch:
    """Makes a training batch from draws: each scene augmented, grid-sampled and cropped by its draw's generator,
    collated, with the task type's targets of the chosen points. Runs in the DataLoader's workers."""

    scenes: Sequence[Scene]
    task: SceneTaskType
    domain: Domain
    voxel: float
    crop: CropSize
    transforms: tuple[Transform, ...]
    mix_prob: float = 0.0

    def __call__(self, draws: list[Draw]) -> tuple[PointBatch, np.ndarray]:
        clouds, targets = [], []
        for i, rng in draws:
            cloud, scene, index = train_cloud(self.scenes[i], self.domain, self.voxel, self.crop, self.transforms, rng)
            clouds.append(cloud)
            targets.append(self.task.targets(scene, index))
        # the coin comes from the first draw's generator, after its cloud: a draw still depends on (seed, pass,
        # position) alone, and a recipe without Mix3D draws exactly what it drew before
        if self.mix_prob > 0 and len(draws) > 1 and draws[0][1].random() < self.mix_prob:
            clouds, targets = mix3d(clouds, targets)
        # over several datasets a batch is drawn from one of them, and carries its condition
        condition = self.scenes.condition(draws[0][0]) if isinstance(self.scenes, MixedScenes) else None
        return PointBatch.collate(clouds, condition=condition), np.concatenate(targets)


def mix3d(clouds: list[Cloud], targets: list[np.ndarray]) -> tuple[list[Cloud], list[np.ndarray]]:
    """Mix3D (Nekrasov et al. 2021, as Pointcept's collate): consecutive pairs of clouds overlaid into one scene on
    their own voxel grids (a last odd cloud stays alone). Where both have a point in one voxel, the first cloud's is
    kept, so that every voxel of the sparse input still holds one point."""
    mixed_clouds, mixed_targets = [], []
    for k in range(0, len(clouds), 2):
        pair = clouds[k:k + 2]
        coord, grid, feat = (np.concatenate([c[j] for c in pair]) for j in range(3))
        target = np.concatenate(targets[k:k + 2])
        _, first = np.unique(grid, axis=0, return_index=True)
        keep = np.sort(first)
        mixed_clouds.append((coord[keep], grid[keep], feat[keep]))
        mixed_targets.append(target[keep])
    return mixed_clouds, mixed_targets


def cloud_inputs(clouds: Sequence[Cloud], device: torch.device) -> Iterator[PointBatch]:
    """One-cloud batches of ``clouds``, on ``device``: the inputs of a point-cloud model."""
    return (PointBatch.collate([cloud]).to(device) for cloud in clouds)


def batchnorm_clouds(train: Sequence[Scene], domain: Domain, voxel: float, crop: CropSize,
                     transforms: tuple[Transform, ...], seed: int) -> list[Cloud]:
    """Training clouds (at most :data:`BN_SCENES`, as in training) over which BatchNorm statistics are
    recomputed; drawn from their own generator, so they do not depend on what training drew."""
    rng = np.random.default_rng(seed + 1)
    return [train_cloud(train[i], domain, voxel, crop, transforms, rng)[0]
            for i in sorted(rng.permutation(len(train))[:BN_SCENES].tolist())]


def finetune(spec: TaskSpec, backbone_name: str, data_root: str | Path, *, seed: int = 0,
             recipe: FinetuneRecipe = FinetuneRecipe(),  # noqa: B008
             init: str | Path | None = None, linear_probe: bool = False, device: str = "cpu", progress: bool = False,
             picture: Path | None = None, image_init: str | Path | None = None, artifacts: Path | None = None
             ) -> FinetuneResult:
    """Fine-tune ``backbone_name`` on the task's training split and evaluate on its eval split.

    ``init``: the backbone's pre-trained export (``image_init``: a fusion track's image backbone export);
    ``artifacts``: the run's folder (checkpoint, ``metrics.jsonl``, files the task writes), resumed from when it
    holds a checkpoint of the same run; ``picture``: where the task draws its predictions on one item.
    """
    kind, ctx = prepare_run(spec, backbone_name, seed, recipe, linear_probe, device, artifacts)
    return kind.finetune(ctx, Path(data_root), init=init, image_init=image_init,
                         picture=picture if ctx.ranks.main else None, progress=progress)


def fit_and_evaluate(spec: TaskSpec, backbone_name: str, train: Sequence[object], evaluation: Sequence[object], *,
                     seed: int = 0, recipe: FinetuneRecipe = FinetuneRecipe(),  # noqa: B008
                     init: str | Path | None = None, linear_probe: bool = False, device: str = "cpu",
                     steps_per_epoch: int | None = None, artifacts: Path | None = None) -> FinetuneResult:
    """:func:`finetune` on given items (any sized, indexable collections; e.g. training = evaluation in tests)."""
    kind, ctx = prepare_run(spec, backbone_name, seed, recipe, linear_probe, device, artifacts)
    if not isinstance(kind, TrainedTaskType):
        raise NotApplicable(f"task {spec.id} ({spec.task_type}) is not trained on items of a dataset")
    return train_and_evaluate(kind, ctx, train, evaluation, init=init, steps_per_epoch=steps_per_epoch)


def prepare_run(spec: TaskSpec, backbone: str, seed: int, recipe: FinetuneRecipe, linear_probe: bool, device: str,
                artifacts: Path | None) -> tuple[TaskType, FinetuneContext]:
    """The task's type and the run's context (settings checked, processes joined), before any data is read."""
    kind = task_type(spec)
    recipe = check_task_settings(recipe)
    kind.check(spec, backbone, linear_probe)  # refused before any data is opened
    ranks, dev = distributed.setup(device)
    config = get_backbone_config(backbone)
    voxel = (recipe.grid_size or voxel_size(spec.domain, config.voxel_size)) if config.modality == "3d" else None
    return kind, FinetuneContext(spec=spec, recipe=recipe, backbone=backbone, voxel=voxel, seed=seed, device=dev,
                                 linear_probe=linear_probe, ranks=ranks,
                                 artifacts=Path(artifacts) if artifacts is not None else None)


def train_and_evaluate(task: TrainedTaskType, ctx: FinetuneContext, train: Sequence[object],
                       evaluation: Sequence[object], *, init: str | Path | None = None,
                       image_init: str | Path | None = None, picture: Path | None = None, progress: bool = False,
                       steps_per_epoch: int | None = None) -> FinetuneResult:
    """Train the task's model on ``train`` on the one trainer, evaluate on ``evaluation``.

    ``steps_per_epoch``: optimiser steps per epoch (default: one pass over ``train``). With a linear probe the
    frozen backbone's BatchNorm statistics are first recomputed on training items (no labels), the same for every
    init: a probe reads features normalised for the task's data, not an init's leftover statistics.
    """
    spec, recipe = ctx.spec, ctx.recipe
    if len(train) == 0 or len(evaluation) == 0:
        raise ValueError(f"task {spec.id}: {len(train)} training and {len(evaluation)} evaluation items")
    torch.manual_seed(ctx.seed)
    model, inits = task.build(ctx, init, image_init)
    model.to(ctx.device)
    stats = task.batchnorm_inputs(train, ctx)

    def stats_on_device() -> Iterator[object]:
        return (inputs.to(ctx.device) for inputs in stats)

    if ctx.linear_probe:
        precise_batchnorm(model.backbone, stats_on_device())
    optimizer, peaks = make_optimizer(model, recipe)
    steps_per_epoch = steps_per_epoch or math.ceil(len(train) / recipe.batch_size)
    steps = task.epochs(recipe) * steps_per_epoch
    scheduler = build_schedule(optimizer, recipe.schedule, peaks, steps)
    batches = StepBatches(task.collate(train, ctx), seed=ctx.seed, scenes=len(train), batch_size=recipe.batch_size,
                          steps=steps, ranks=ctx.ranks,
                          interleaved=train.interleaved if isinstance(train, MixedScenes) else None)
    runlog = RunLog(ctx.artifacts / METRICS if ctx.artifacts is not None and ctx.ranks.main else None)
    evaluate = Evaluate(lambda m: task.evaluate(m, evaluation, ctx), runlog, spec.main_score, spec.higher_is_better)
    hooks = [LogMetrics(runlog, recipe.log_every),
             PreciseBatchNorm(stats_on_device, keep=model.backbone if ctx.linear_probe else None),
             evaluate]
    if picture is not None:
        hooks.append(Pictures(lambda m: task.picture(m, evaluation, ctx, picture)))
    if ctx.artifacts is not None:
        fingerprint = {"task": spec.id, "backbone": ctx.backbone, "seed": ctx.seed, "inits": [inits.backbone,
                       inits.image], "linear_probe": ctx.linear_probe, "recipe": result_fields(recipe),
                       "train_scenes": len(train), "steps": steps}
        hooks.append(Checkpoint(ctx.artifacts, fingerprint))

    def step_loss(batch: tuple[object, object]) -> torch.Tensor | None:
        return task.loss(model(batch[0].to(ctx.device)), batch[1], ctx)

    trainer = Trainer(model, batches, step_loss, optimizer, scheduler, steps_per_epoch=steps_per_epoch, hooks=hooks,
                      device=ctx.device, ranks=ctx.ranks, num_workers=recipe.num_workers, grad_clip=recipe.grad_clip,
                      precision=recipe.precision, eval_every=recipe.eval_every,
                      skip_diverged_steps=recipe.skip_diverged_steps, desc=f"{spec.id} {ctx.backbone}",
                      progress=progress).run()
    if ctx.artifacts is not None and ctx.ranks.main:
        task.save(model, ctx)
    facts = distributed.run_facts(model.parameters(), ctx.ranks, ctx.device)
    return FinetuneResult(evaluate.last, RunFacts(
        train_scenes=len(train), eval_scenes=len(evaluation), steps=steps,
        final_train_loss=trainer.last_terms.get("loss", float("nan")), init_sha256=inits.backbone,
        image_init_sha256=inits.image, resumed_from_step=trainer.resumed_from, world_size=facts["world_size"],
        ranks_in_sync=facts["ranks_in_sync"], best_step=evaluate.best[0] if recipe.eval_every else None,
        best_score=evaluate.best[1] if recipe.eval_every else None, backbones=task.sensor_backbones(ctx),
        skipped_steps=trainer.skipped))
