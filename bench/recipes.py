"""Typed recipes: pre-training (the PonderV2 reference values per mode) and fine-tuning, with small presets for
CPU runs.

One dataclass per stage, a few named presets, and one ``key=value`` override parser (``losses.rgb=5``,
``epochs=10``) checked against the field types, instead of a tree of near-identical config files.
"""

from __future__ import annotations

import ast
import dataclasses
import json
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, get_args, get_type_hints

from renderer.losses import LossWeights
from tasks.contract import Domain

Mode = Literal["indoor", "outdoor", "image"]  # 3D + RGB-D views | LiDAR | 2D backbone on multi-view images
Optimizer = Literal["sgd", "adamw"]
Precision = Literal["fp32", "bf16", "fp16"]  # fine-tuning's autocast dtype on CUDA (fp16 with a GradScaler)
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
    max_points: int | None = None  # cap on input points per scene (a sphere crop; rays end inside it)
    image_size: tuple[int, int] = (256, 352)  # image mode: (H, W) the views are resized to
    # rays
    views: int = 5
    rays_per_view: int = 256  # indoor/image per view; outdoor: per camera, or LiDAR rays per sweep / 4
    lidar_rays: int = 2048  # outdoor rays from the LiDAR origin to its own returns
    # volume and renderer
    grid: tuple[int, int, int] = (128, 128, 32)  # (X, Y, Z) cells
    volume_channels: int = 96
    unet_base: int = 32
    unet_levels: int = 4
    sdf_channels: int = 64
    color_channels: int = 64
    hidden: int = 128
    semantic_dim: int = 512  # 0: no semantic rendering
    n_uniform: int = 96
    n_importance: int = 36
    ray_chunk: int | None = 320  # rays rendered (and back-propagated) at a time; None: all of a sample's at once
    losses: LossWeights = field(default_factory=LossWeights)
    # optimisation
    optimizer: str = "adamw"  # adamw | sgd (nesterov)
    lr: float = 2e-4
    weight_decay: float = 0.01
    momentum: float = 0.9
    pct_start: float = 0.05  # OneCycle warm-up fraction
    grad_clip: float = 1.0
    amp: bool = True  # bfloat16 autocast of the backbone on CUDA
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


_OUTDOOR = dict(grid=(180, 180, 5), volume_channels=32, n_uniform=72, n_importance=24, mask_ratio=0.8,
                rays_per_view=512, losses=LossWeights(rgb=10.0, depth=10.0, sdf=10.0, truncation=0.5),
                semantic_dim=0)
_MINI = dict(epochs=1, grid=(48, 48, 16), volume_channels=32, unet_base=16, unet_levels=3, sdf_channels=32,
             color_channels=32, hidden=64, semantic_dim=32, n_uniform=48, n_importance=16, lr=2e-3,
             render_every=50, max_points=40_000)

PRESETS: dict[str, PretrainRecipe] = {
    "indoor": PretrainRecipe(mode="indoor", backbone="spunet-v1m1"),
    "indoor-mini": PretrainRecipe(mode="indoor", backbone="spunet-mini", **_MINI),
    "outdoor": PretrainRecipe(mode="outdoor", backbone="spunet-v1m1", **_OUTDOOR),
    "outdoor-mini": PretrainRecipe(mode="outdoor", backbone="spunet-mini", **{
        **_OUTDOOR, **_MINI, "grid": (90, 90, 5), "semantic_dim": 0, "n_uniform": 48, "n_importance": 16,
        "lidar_rays": 1024}),
    "image": PretrainRecipe(mode="image", backbone="timm:resnet50", mask_ratio=0.3, semantic_dim=0),
    "image-mini": PretrainRecipe(mode="image", backbone="timm:resnet18", mask_ratio=0.3,
                                 **{**_MINI, "semantic_dim": 0, "max_points": None}, image_size=(128, 160)),
}


@dataclass(frozen=True, kw_only=True)
class FinetuneRecipe:
    epochs: int = 100
    batch_size: int = 2  # scenes per step
    optimizer: Optimizer = "sgd"  # SGD (Nesterov; Pointcept's SpUNet recipe) or AdamW (faster in short runs)
    lr: float = 0.05
    backbone_lr_scale: float = 1.0  # the backbone's learning rate is lr x this (the head's is lr)
    momentum: float = 0.9  # SGD only
    weight_decay: float = 1e-4
    pct_start: float = 0.05
    max_points: int | None = None  # cap on training points per scene (after grid sampling)
    grad_clip: float | None = None  # max global gradient norm (None: no clipping)
    precision: Precision = "fp32"  # bf16 / fp16 autocast: CUDA only
    num_workers: int = 0  # DataLoader processes preparing the training clouds (0: the training process)
    log_every: int = 10  # optimiser steps per row of the run's metrics.jsonl
    eval_every: int = 0  # epochs between evaluations (0: only after the last step); the record keeps the last
    tta: bool = False  # evaluation votes over four rotations (segmentation tasks)
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
        if self.num_workers < 0 or self.log_every < 1 or self.eval_every < 0 or (self.grad_clip is not None
                                                                                 and self.grad_clip <= 0):
            raise ValueError(f"num_workers and eval_every must be >= 0, log_every >= 1 and grad_clip > 0 or None, "
                             f"got {self.num_workers}, {self.eval_every}, {self.log_every} and {self.grad_clip}")


# fields that change how a fine-tune runs, not what it computes: a record or checkpoint made with other values is
# still the same run (periodic evaluations leave the last one as it was: tests/test_finetune_loop.py)
EXECUTION_FIELDS = ("num_workers", "log_every", "eval_every")


def result_fields(recipe: FinetuneRecipe) -> dict[str, Any]:
    """The recipe's fields that decide a fine-tune's result (all but :data:`EXECUTION_FIELDS`), as JSON holds them."""
    return {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(recipe))).items() if k not in EXECUTION_FIELDS}


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


# AdamW learns the mini suite in a few hundred steps, where SGD at Pointcept's rate needs thousands
_MINI_FINETUNE = FinetuneRecipe(epochs=10, batch_size=2, optimizer="adamw", lr=0.005, weight_decay=0.01,
                                max_points=12_000, task=task_settings(
                                    "detection.epochs=20", "detection.image_size=(96, 160)", "fit.preset=indoor-mini",
                                    "fit.steps=150", "fit.nvs_size=(120, 160)", "fit.mesh_resolution=128"))
FINETUNE_PRESETS: dict[str, FinetuneRecipe] = {
    "reference": FinetuneRecipe(num_workers=4),
    "mini": _MINI_FINETUNE,
    "small": _MINI_FINETUNE,  # mini's fine-tuning; what differs is the ponder init's pre-training (20x longer)
    "tiny": FinetuneRecipe(epochs=2, batch_size=2, optimizer="adamw", lr=0.005, weight_decay=0.01,  # tests
                           max_points=3_000, task=task_settings(
                               "detection.epochs=2", "detection.image_size=(64, 96)", "fit.preset=indoor-mini",
                               "fit.steps=2", "fit.nvs_size=(24, 32)", "fit.mesh_resolution=32",
                               "fit.overrides=('views=2', 'rays_per_view=128', 'grid=(24, 24, 8)', 'n_uniform=24', "
                               "'n_importance=8', 'unet_levels=2', 'volume_channels=16')")),
}
# the pre-training each fine-tuning preset's ponder init gets: (recipe preset of the mode, overrides)
PRETRAIN_FOR_FINETUNE: dict[str, tuple[str, tuple[str, ...]]] = {
    "reference": ("{mode}", ()),
    "mini": ("{mode}-mini", ()),
    "small": ("{mode}-mini", ("epochs=20",)),
    "tiny": ("{mode}-mini", ("epochs=1", "max_points=3000", "render_every=0")),
}


def _preset(presets: dict[str, Any], kind: str, preset: str | None, overrides: list[str] | None) -> Any:
    if preset not in presets:
        raise KeyError(f"unknown {kind} preset {preset!r}; choose from {', '.join(sorted(presets))}")
    return apply_overrides(presets[preset], overrides or [])


def get_recipe(preset: str, overrides: list[str] | None = None) -> PretrainRecipe:
    """A pre-training preset with ``key=value`` overrides (values are Python literals; strings may be bare)."""
    return _preset(PRESETS, "pre-training", preset, overrides)


def pretrain_recipe_for(preset: str, mode: Mode, backbone: str) -> PretrainRecipe:
    """The pre-training of the ``ponder`` init under the fine-tuning ``preset``: ``mode`` is a 3D backbone's domain
    (indoor, outdoor) or ``image`` for a 2D backbone."""
    name, overrides = PRETRAIN_FOR_FINETUNE[preset]
    return get_recipe(name.format(mode=mode), [f"backbone={backbone}", *overrides])


def get_finetune_recipe(preset: str, overrides: list[str] | None = None) -> FinetuneRecipe:
    """A fine-tuning preset with ``key=value`` overrides, parsed like the pre-training ones."""
    return _preset(FINETUNE_PRESETS, "fine-tuning", preset, overrides)


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
