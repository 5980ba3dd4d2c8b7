"""Typed recipes: pre-training and fine-tuning, their reference values with the source of each, and the CPU presets
as stated overrides of the reference.

One dataclass per stage, a few named presets, and one ``key=value`` override parser (``losses.rgb=5``,
``epochs=10``) checked against the field types, instead of a tree of near-identical config files. A reference
recipe is a list of :class:`~tasks.references.Setting` (key, value, source) over the dataclass's defaults: each
pre-training mode's here, each task's with the task (``TaskSpec.recipe``). ``ponderbench list recipes --format json``
prints every resolved value beside its source.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal, get_args, get_type_hints

from bench.optim import Schedule
from renderer.losses import LossWeights
from tasks.contract import MAX_TEST_FRAGMENTS, Domain
from tasks.references import PRETRAIN, Setting
from tasks.transforms import TestView, parse_transforms

if TYPE_CHECKING:
    from tasks.spec import TaskSpec

Mode = Literal["indoor", "outdoor", "image"]  # 3D + RGB-D views | LiDAR | 2D backbone on multi-view images
Optimizer = Literal["sgd", "adamw"]
Precision = Literal["fp32", "bf16", "fp16"]  # fine-tuning's autocast dtype on CUDA (fp16 with a GradScaler)
OutdoorRays = Literal["camera", "lidar"]
Projection = Literal["unet", "conv"]
MODES: tuple[Mode, ...] = get_args(Mode)


@dataclass(frozen=True, kw_only=True)
class PretrainRecipe:
    mode: Mode
    backbone: str
    epochs: int = 100
    steps_per_epoch: int | None = None  # None: one pass over the training scenes
    batch_size: int = 1  # scenes per optimiser step per process (gradients accumulated scene by scene)
    # input
    mask_ratio: float = 0.8  # indoor: RandomDropout of points; outdoor: block masking; image: patch masking
    mask_block: float = 2.0  # outdoor: block edge in metres; image: patch edge in pixels is 32
    # outdoor: masked blocks keep their points, whose features become one learned token (PonderV2), instead of
    # being dropped (the suite's LiDAR variant)
    mask_token: bool = False
    max_points: int | None = None  # cap on input points per scene (a sphere crop; rays end inside it)
    image_size: tuple[int, int] = (256, 352)  # image mode: (H, W) the views are resized to
    # rays
    views: int = 5
    rays_per_view: int = 256  # indoor/image per view; outdoor: per camera, or LiDAR rays per sweep / 4
    lidar_rays: int = 2048  # outdoor rays from the LiDAR origin to its own returns
    # outdoor: rays from each camera to the LiDAR points it sees (PonderV2; a nuScenes root with its cameras), or
    # from the LiDAR origin to its own returns (the suite's variant: any sweep, no camera needed)
    outdoor_rays: OutdoorRays = "lidar"
    # indoor: PonderV2's PPT pre-training over several datasets of one data root, with loop ratios
    # ("structured3d:4,scannet:2,s3dis:1"; each scene under its dataset's condition); "": the one dataset at --data
    datasets: str = ""
    close_radius: float = 3.0  # camera rays: points nearer the LiDAR than this (metres, in x-y) are not targets
    # volume and renderer
    grid: tuple[int, int, int] = (128, 128, 32)  # (X, Y, Z) cells
    volume_channels: int = 96  # the U-Net's input width (the conv projection reads the backbone's features)
    projection: Projection = "unet"  # a 3D U-Net (PonderV2 indoor) or one Conv3d (outdoor)
    unet_base: int = 32
    unet_levels: int = 4
    sdf_channels: int = 64
    color_channels: int = 64  # the conv projection's one volume serves both: equal to sdf_channels
    hidden: int = 128
    field_layers: int = 1  # hidden blocks of the SDF decoder
    geometry_features: int = 64  # the SDF decoder's feature output beside the SDF
    semantic_dim: int = 512  # 0: no semantic rendering
    n_uniform: int = 96
    n_importance: int = 36
    ray_chunk: int | None = 320  # rays rendered (and back-propagated) at a time; None: all of a sample's at once
    losses: LossWeights = field(default_factory=LossWeights)
    # optimisation
    optimizer: str = "adamw"  # adamw | sgd (nesterov)
    lr: float = 2e-4
    backbone_lr_scale: float = 1.0  # the backbone's learning rate is lr x this (UniPAD's lr_mult)
    weight_decay: float = 0.01
    momentum: float = 0.9
    schedule: Schedule = Schedule()
    grad_clip: float | None = 1.0  # max global gradient norm (None: no clipping)
    amp: bool = True  # bfloat16 autocast of the backbone on CUDA
    # training transforms (tasks.transforms), in order; indoor and outdoor point clouds (the image mode's views are
    # not augmented)
    augment: tuple[str, ...] = ("RandomRotate()", "RandomScale()", "RandomFlip(axes='x')", "RandomJitter()")
    seed: int = 0
    # outputs
    render_every: int = 100  # steps between rendered-vs-real pictures (0: never)
    render_size: tuple[int, int] = (48, 64)

    @property
    def domain(self) -> Domain:
        """Which fine-tuning tasks the export serves (image mode lifts into the indoor volume)."""
        return "outdoor" if self.mode == "outdoor" else "indoor"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be adamw or sgd, got {self.optimizer!r}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        for name, value, allowed in (("outdoor_rays", self.outdoor_rays, get_args(OutdoorRays)),
                                     ("projection", self.projection, get_args(Projection))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        _canonical_transforms(self)


@dataclass(frozen=True, kw_only=True)
class FinetuneRecipe:
    epochs: int = 100
    batch_size: int = 2  # scenes per step
    optimizer: Optimizer = "sgd"  # SGD (Nesterov; Pointcept's SpUNet recipe) or AdamW (faster in short runs)
    lr: float = 0.05
    backbone_lr_scale: float = 1.0  # the backbone's learning rate is lr x this (the head's is lr)
    momentum: float = 0.9  # SGD only
    weight_decay: float = 1e-4
    schedule: Schedule = Schedule()
    grid_size: float | None = None  # metres per voxel; None: the input contract's (tasks.contract.voxel_size)
    max_points: int | None = None  # SphereCrop: at most this many training points per scene, after grid sampling
    crop_fraction: float | None = None  # SphereCrop's sample_rate: at most this fraction of them (with max_points)
    # training transforms (tasks.transforms), in order; None: the suite's list for the task's domain
    # (DOMAIN_AUGMENT), which the CPU presets use
    augment: tuple[str, ...] | None = None
    test_fragments: int | None = MAX_TEST_FRAGMENTS  # test-mode fragments voted per voxel; None: all (Pointcept)
    # the test-time views ``tta`` votes over: (rotation about z in units of pi, scale, axes mirrored)
    tta_views: tuple[TestView, ...] = ((0.0, 1.0, ""), (0.5, 1.0, ""), (1.0, 1.0, ""), (1.5, 1.0, ""))
    grad_clip: float | None = None  # max global gradient norm (None: no clipping)
    precision: Precision = "fp32"  # bf16 / fp16 autocast: CUDA only
    # steps with a non-finite loss or gradient that are skipped (no optimiser step) before the run fails as
    # diverged; 0: the first one fails it. The record's facts count the skipped steps.
    skip_diverged_steps: int = 0
    num_workers: int = 0  # DataLoader processes preparing the training clouds (0: the training process)
    log_every: int = 10  # optimiser steps per row of the run's metrics.jsonl
    eval_every: int = 0  # epochs between evaluations (0: only after the last step); the record keeps the last
    tta: bool = False  # evaluation votes over ``tta_views`` (segmentation tasks; the run's --tta flag)
    # the task types' own settings, ``section.field=value`` (``detection.epochs=20``, ``fit.steps=500``): each task
    # type reads its section (bench.finetune.engine.TaskType.Settings) from them; one item per key, sorted
    task: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if self.lr <= 0 or self.backbone_lr_scale < 0:
            raise ValueError(f"lr must be > 0 and backbone_lr_scale >= 0, got {self.lr}, {self.backbone_lr_scale}")
        if self.optimizer not in get_args(Optimizer):
            raise ValueError(f"optimizer must be one of {get_args(Optimizer)}, got {self.optimizer!r}")
        if self.precision not in get_args(Precision):
            raise ValueError(f"precision must be one of {get_args(Precision)}, got {self.precision!r}")
        if min(self.num_workers, self.eval_every, self.skip_diverged_steps) < 0 or self.log_every < 1 or (
                self.grad_clip is not None and self.grad_clip <= 0):
            raise ValueError(f"num_workers, eval_every and skip_diverged_steps must be >= 0, log_every >= 1 and "
                             f"grad_clip > 0 or None, got {self.num_workers}, {self.eval_every}, "
                             f"{self.skip_diverged_steps}, {self.log_every} and {self.grad_clip}")
        if self.test_fragments is not None and self.test_fragments < 1 or not self.tta_views:
            raise ValueError(f"test_fragments must be >= 1 or None and tta_views not empty, got "
                             f"{self.test_fragments} and {self.tta_views}")
        _canonical_transforms(self)
        object.__setattr__(self, "tta_views", tuple((float(a), float(s), str(f)) for a, s, f in self.tta_views))


def _canonical_transforms(recipe: Any) -> None:
    """Each transform of ``recipe.augment`` checked and written as its ``repr``: two spellings make one recipe."""
    if recipe.augment is not None:
        object.__setattr__(recipe, "augment", tuple(repr(t) for t in parse_transforms(tuple(recipe.augment))))


# the suite's augmentation per domain (the CPU presets'): a full z rotation, a scale, a mirror of x, and indoors a
# small jitter (outdoor sweeps are measured in metres and already noisy)
DOMAIN_AUGMENT: dict[Domain, tuple[str, ...]] = {
    "indoor": ("RandomRotate()", "RandomScale(scale=(0.9, 1.1))", "RandomFlip(axes='x')",
               "RandomJitter(sigma=0.005, clip=0.02)"),
    "outdoor": ("RandomRotate()", "RandomScale(scale=(0.95, 1.05))", "RandomFlip(axes='x')"),
}


def training_transforms(recipe: FinetuneRecipe, domain: Domain) -> tuple[str, ...]:
    return DOMAIN_AUGMENT[domain] if recipe.augment is None else recipe.augment


# fields that change how a fine-tune runs, not what it computes: a record or checkpoint made with other values is
# still the same run (periodic evaluations leave the last one as it was: tests/test_finetune_loop.py)
EXECUTION_FIELDS = ("num_workers", "log_every", "eval_every")


def result_fields(recipe: FinetuneRecipe) -> dict[str, Any]:
    """The recipe's fields that decide a fine-tune's result (all but :data:`EXECUTION_FIELDS`), as JSON holds them."""
    return {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(recipe))).items() if k not in EXECUTION_FIELDS}


def held_result_fields(held: dict[str, Any]) -> dict[str, Any]:
    """The result fields of a recipe as a record holds it; a field the record predates had its default (a new
    field's default is what the code did before it existed)."""
    return {**_default_result_fields(), **{k: v for k, v in held.items() if k not in EXECUTION_FIELDS}}


@functools.cache
def _default_result_fields() -> dict[str, Any]:
    return result_fields(FinetuneRecipe())


def task_settings(*items: str, base: tuple[str, ...] = ()) -> tuple[str, ...]:
    """``base`` with ``section.field=value`` items set (a later value of a key replaces an earlier one), sorted by
    key. The task types check them (:func:`bench.finetune.engine.check_task_settings`)."""
    merged = {}
    for item in (*base, *items):
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"task setting {item!r} is not section.field=value")
        merged[key.strip()] = value.strip()
    return tuple(f"{k}={v}" for k, v in sorted(merged.items()))


def apply_overrides(recipe: Any, overrides: list[str]) -> Any:
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        recipe = _set(recipe, key.strip().split("."), value.strip(), item)
    return recipe


def _set(obj: Any, path: list[str], raw: str, item: str) -> Any:
    names = {f.name for f in fields(obj)}
    if isinstance(obj, FinetuneRecipe) and len(path) == 2 and path[0] not in names:  # a task type's section
        return replace(obj, task=task_settings(f"{path[0]}.{path[1]}={raw}", base=obj.task))
    if path[0] not in names:
        raise ValueError(f"override {item!r}: {type(obj).__name__} has no field {path[0]!r} "
                         f"(fields: {', '.join(sorted(names))})")
    current = getattr(obj, path[0])
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"override {item!r}: {path[0]!r} has no sub-fields")
        return replace(obj, **{path[0]: _set(current, path[1:], raw, item)})
    return replace(obj, **{path[0]: _parse(raw, get_type_hints(type(obj))[path[0]], item)})


def _parse(raw: str, hint: Any, item: str) -> Any:
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw  # a bare string (backbone=spunet-mini)
    text = str(hint)
    if value is None and "None" in text:
        return None
    if get_args(hint) and all(isinstance(a, str) for a in get_args(hint)):  # a Literal of names
        if value not in get_args(hint):
            raise ValueError(f"override {item!r}: expected one of {get_args(hint)}")
        return value
    if hint is bool or text == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"override {item!r}: expected True or False")
        return value
    for kind in (int, float, str):
        if hint is kind or text.startswith(kind.__name__):
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"override {item!r}: expected {kind.__name__}, got {type(value).__name__}")
            return value
    if text.startswith("tuple"):
        if not isinstance(value, tuple):
            raise ValueError(f"override {item!r}: expected a tuple such as (1, 2)")
        return value
    raise ValueError(f"override {item!r}: cannot set a field of type {text}")


# ------------------------------------------------------------------------------------------- presets and sources
def _cpu(key: str, value: Any, why: str) -> Setting:
    return Setting(key, value, f"ponderbench: {why}")


_ONECYCLE = (_cpu("schedule.kind", "onecycle", "the CPU presets' schedule"),
             _cpu("schedule.pct_start", 0.05, "the CPU presets' warm-up"),
             _cpu("schedule.div_factor", 25.0, "PyTorch's OneCycle default"),
             _cpu("schedule.final_div_factor", 1e4, "PyTorch's OneCycle default"),
             *(_cpu(f"schedule.{key}", value, "unused by OneCycle")
               for key, value in (("power", 0.9), ("warmup_steps", 0), ("warmup_ratio", 1.0 / 3),
                                  ("min_lr_ratio", 1e-3))))


def _mini_pretrain(mode: Mode, camera: bool = False) -> tuple[Setting, ...]:
    """What the mini pre-training changes in the reference of ``mode``: a small net, volume and sampler and one epoch,
    AdamW at a high rate (minutes on 2 CPU cores), and the suite's own augmentation. Outdoors, the suite's LiDAR-ray
    variant, or with ``camera`` PonderV2's pretext (camera rays, mask token, one convolution, depth loss) at the
    LiDAR variant's ray budget."""
    volume = {"indoor": (48, 48, 16), "outdoor": (90, 90, 5), "image": (48, 48, 16)}[mode]
    small = "a net, volume and sampler small enough for minutes on 2 CPU cores"
    settings = [
        _cpu("backbone", "timm:resnet18" if mode == "image" else "spunet-mini", "the CPU presets' backbone"),
        _cpu("epochs", 1, "one pass over the mini suite's scenes (the main job's budget)"),
        _cpu("batch_size", 1, "one scene a step on a CPU"),
        _cpu("grid", volume, small), _cpu("volume_channels", 32, small), _cpu("unet_base", 16, small),
        _cpu("unet_levels", 3, small), _cpu("sdf_channels", 32, small), _cpu("color_channels", 32, small),
        _cpu("hidden", 64, small), _cpu("n_uniform", 48, small), _cpu("n_importance", 16, small),
        _cpu("semantic_dim", 32 if mode == "indoor" else 0, small),
        _cpu("optimizer", "adamw", "AdamW learns in the few hundred steps a CPU affords"),
        _cpu("lr", 2e-3, "AdamW's rate for a one-epoch run"), _cpu("weight_decay", 0.01, "AdamW's usual decay"),
        _cpu("momentum", 0.9, "unused by AdamW"), _cpu("backbone_lr_scale", 1.0, "one rate for the whole model"),
        *_ONECYCLE, _cpu("grad_clip", 1.0, "a guard for AdamW at a high rate"),
        _cpu("render_every", 50, "pictures twice a mini run"),
        _cpu("max_points", None if mode == "image" else 40_000, "a sphere crop bounds a CPU step's memory"),
        _cpu("augment", DOMAIN_AUGMENT["outdoor" if mode == "outdoor" else "indoor"], "the suite's augmentation"),
    ]
    if camera:
        settings = [s for s in settings if s.key != "hidden"]  # the reference's decoder is already small
        settings += [_cpu("rays_per_view", 170, "6 cameras x 170: the LiDAR variant's 1,024 rays a step")]
    elif mode == "outdoor":
        why = "the suite's outdoor variant: LiDAR rays with colour-free SDF losses (see the README)"
        settings += [_cpu("outdoor_rays", "lidar", "the suite's outdoor variant: rays from the LiDAR to its returns "
                                                   "(any sweep: the mini suite pre-trains on SemanticKITTI)"),
                     _cpu("lidar_rays", 1024, "half the LiDAR rays, for a CPU step"),
                     _cpu("mask_token", False, "the suite's outdoor variant drops the masked blocks' points"),
                     _cpu("mask_block", 2.0, "the suite's outdoor variant drops 2 m blocks of points"),
                     _cpu("projection", "unet", "the suite's outdoor variant: a small 3D U-Net"),
                     _cpu("field_layers", 1, "the suite's outdoor variant: the indoor decoder"),
                     _cpu("geometry_features", 64, "the suite's outdoor variant: the indoor decoder"),
                     *(_cpu(f"losses.{term}", weight, why) for term, weight in (
                         ("rgb", 10.0), ("depth", 10.0), ("sdf", 10.0), ("free_space", 1.0), ("eikonal", 0.01),
                         ("semantic", 0.1), ("truncation", 0.5)))]
    if mode == "image":
        settings += [_cpu("image_size", (128, 160), "small views for a CPU step")]
    return tuple(settings)


# the pre-training presets: each mode's reference (tasks.references.PRETRAIN) and the mini presets, which are the
# reference with the stated overrides
PRETRAIN_SETTINGS: dict[str, tuple[Setting, ...]] = {
    **{mode: PRETRAIN[mode] for mode in MODES},
    **{f"{mode}-mini": (*PRETRAIN[mode], *_mini_pretrain(mode)) for mode in MODES},
    "outdoor-mini-camera": (*PRETRAIN["outdoor"], *_mini_pretrain("outdoor", camera=True)),
}


def _build(base: Any, settings: tuple[Setting, ...]) -> Any:
    return apply_overrides(base, [s.item for s in settings])


PRESETS: dict[str, PretrainRecipe] = {
    name: _build(PretrainRecipe(mode=name.split("-")[0], backbone="spunet-v1m1"), settings)  # type: ignore[arg-type]
    for name, settings in PRETRAIN_SETTINGS.items()}

_MINI_WHY = "the mini suite's CPU fine-tuning"
# What the CPU presets change in every task's reference. AdamW learns the mini suite in a few hundred steps, where
# SGD at Pointcept's rate needs thousands; every key a reference sets is set here too, so that a CPU preset is the
# same recipe for every task (tests/test_references.py checks it).
_MINI_FINETUNE: tuple[Setting, ...] = (
    _cpu("epochs", 10, _MINI_WHY), _cpu("batch_size", 2, _MINI_WHY), _cpu("optimizer", "adamw", _MINI_WHY),
    _cpu("lr", 0.005, _MINI_WHY), _cpu("weight_decay", 0.01, _MINI_WHY), _cpu("momentum", 0.9, _MINI_WHY),
    _cpu("backbone_lr_scale", 1.0, _MINI_WHY),
    *_ONECYCLE, _cpu("grid_size", None, "the input contract's voxel, as pre-training used"),
    _cpu("max_points", 12_000, "a sphere crop bounds a CPU step's memory"),
    _cpu("crop_fraction", None, "the crop is max_points"),
    _cpu("augment", None, "the suite's list for the task's domain (DOMAIN_AUGMENT)"),
    _cpu("test_fragments", MAX_TEST_FRAGMENTS, "real sweeps hold thousands of returns in one voxel"),
    _cpu("tta_views", ((0.0, 1.0, ""), (0.5, 1.0, ""), (1.0, 1.0, ""), (1.5, 1.0, "")), "four rotations"),
    _cpu("precision", "fp32", "CPU"), _cpu("grad_clip", None, _MINI_WHY), _cpu("num_workers", 0, "2 CPU cores"),
    _cpu("semseg.lovasz_weight", 1.0, "CE + Lovasz learns the mini suite's small classes"),
    _cpu("semseg.mix_prob", 0.0, "no Mix3D: two scenes a step on a CPU"),
    _cpu("detection.epochs", 20, "mini splits hold few samples"),
    _cpu("detection.image_size", (96, 160), "small images for a CPU step"),
    _cpu("fit.preset", "indoor-mini", _MINI_WHY), _cpu("fit.steps", 150, _MINI_WHY),
    _cpu("fit.nvs_size", (120, 160), _MINI_WHY), _cpu("fit.mesh_resolution", 128, _MINI_WHY),
)
_TINY_WHY = "seconds per run, for tests"
FINETUNE_PRESETS: dict[str, tuple[Setting, ...]] = {
    "reference": (_cpu("num_workers", 4, "DataLoader processes on a GPU machine"),),
    "mini": _MINI_FINETUNE,
    "small": _MINI_FINETUNE,  # mini's fine-tuning; what differs is the ponder init's pre-training (20x longer)
    "tiny": (*_MINI_FINETUNE, _cpu("epochs", 2, _TINY_WHY), _cpu("max_points", 3_000, _TINY_WHY),
             _cpu("detection.epochs", 2, _TINY_WHY), _cpu("detection.image_size", (64, 96), _TINY_WHY),
             _cpu("fit.steps", 2, _TINY_WHY), _cpu("fit.nvs_size", (24, 32), _TINY_WHY),
             _cpu("fit.mesh_resolution", 32, _TINY_WHY),
             _cpu("fit.overrides", ("views=2", "rays_per_view=128", "grid=(24, 24, 8)", "n_uniform=24",
                                    "n_importance=8", "unet_levels=2", "volume_channels=16"), _TINY_WHY)),
}
# the pre-training each fine-tuning preset's ponder init gets: (recipe preset of the mode, overrides)
PRETRAIN_FOR_FINETUNE: dict[str, tuple[str, tuple[str, ...]]] = {
    "reference": ("{mode}", ()),
    "mini": ("{mode}-mini", ()),
    "small": ("{mode}-mini", ("epochs=20",)),
    "tiny": ("{mode}-mini", ("epochs=1", "max_points=3000", "render_every=0")),
}


def _check_preset(presets: dict[str, Any], kind: str, preset: str | None) -> None:
    if preset not in presets:
        raise KeyError(f"unknown {kind} preset {preset!r}; choose from {', '.join(sorted(presets))}")


def get_recipe(preset: str, overrides: list[str] | None = None) -> PretrainRecipe:
    """A pre-training preset with ``key=value`` overrides (values are Python literals; strings may be bare)."""
    _check_preset(PRESETS, "pre-training", preset)
    return apply_overrides(PRESETS[preset], overrides or [])


def pretrain_recipe_from(values: dict[str, Any]) -> PretrainRecipe:
    """A pre-training recipe from its ``asdict`` form (a run's ``recipe.json`` or checkpoint), every value through
    the overrides' type checks; JSON's lists are read back as the tuples they were."""
    def tuples(value: Any) -> Any:
        return tuple(tuples(v) for v in value) if isinstance(value, list | tuple) else value

    def flat(tree: dict[str, Any], prefix: str = "") -> list[str]:
        return [item for key, value in tree.items()
                for item in (flat(value, f"{prefix}{key}.") if isinstance(value, dict)
                             else [f"{prefix}{key}={tuples(value)!r}"])]

    return apply_overrides(PretrainRecipe(mode=values["mode"], backbone=values["backbone"]), flat(values))


def pretrain_recipe_for(preset: str, mode: Mode, backbone: str, datasets: str = "") -> PretrainRecipe:
    """The pre-training of the ``ponder`` init under the fine-tuning ``preset``: ``mode`` is a 3D backbone's domain
    (indoor, outdoor) or ``image`` for a 2D backbone; ``datasets``: PPT's, over several datasets."""
    name, overrides = PRETRAIN_FOR_FINETUNE[preset]
    return get_recipe(name.format(mode=mode), [f"backbone={backbone}", *overrides,
                                               *([f"datasets={datasets}"] if datasets else [])])


def finetune_settings(preset: str, task: TaskSpec | None = None) -> tuple[Setting, ...]:
    """What the fine-tuning ``preset`` sets over the recipe's defaults: the task's reference, then the preset's."""
    _check_preset(FINETUNE_PRESETS, "fine-tuning", preset)
    return (*(task.recipe if task is not None else ()), *FINETUNE_PRESETS[preset])


def get_finetune_recipe(preset: str, overrides: list[str] | None = None, task: TaskSpec | None = None
                        ) -> FinetuneRecipe:
    """A fine-tuning preset for ``task`` (its reference recipe under the preset's settings; without a task, the
    recipe's defaults under them) with ``key=value`` overrides, parsed like the pre-training ones."""
    return apply_overrides(_build(FinetuneRecipe(), finetune_settings(preset, task)), overrides or [])


def finetune_sources(preset: str, task: TaskSpec, overrides: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """The task's fine-tuning recipe under ``preset``, every field with its source (:func:`recipe_sources`), its task
    type's section included, and ``augment`` as the transforms it resolves to."""
    from bench.finetune.engine import check_task_settings, task_type

    recipe = check_task_settings(get_finetune_recipe(preset, overrides, task=task))
    kind = task_type(task) if task.runnable else None
    sections = {kind.section: kind.settings(recipe)} if kind is not None and kind.section else {}
    resolved = recipe_sources(recipe, finetune_settings(preset, task), overrides, sections)
    if recipe.augment is None:
        resolved["augment"] = {"value": list(DOMAIN_AUGMENT[task.domain]), "source": resolved["augment"]["source"]}
    return resolved


def recipe_sources(recipe: Any, settings: tuple[Setting, ...], overrides: list[str] | None = None,
                   sections: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Every resolved field of ``recipe`` (nested ones as ``schedule.kind``; the task settings of ``sections``, a
    section name -> its settings object, as ``semseg.lovasz_weight``) as ``{"value": ..., "source": ...}``: the
    last setting or override that set it, else the dataclass default (``ponderbench: default``)."""
    sources = {s.key: s.source for s in settings}
    sources.update({item.partition("=")[0].strip(): "command line" for item in overrides or []})
    values = _flat(recipe)
    for section, settings_object in (sections or {}).items():
        values.update({f"{section}.{k}": v for k, v in _flat(settings_object).items()})
    return {key: {"value": json.loads(json.dumps(value)), "source": sources.get(
        key, "ponderbench: default (the originals set no value; the dataclass's)")} for key, value in values.items()}


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name == "task" and isinstance(obj, FinetuneRecipe):
            continue  # task settings: listed per section, from the task type's resolved settings
        if dataclasses.is_dataclass(value):
            out.update(_flat(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out
