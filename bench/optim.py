"""Learning-rate schedules of both engines: OneCycle (PonderV2, Pointcept's segmentation), PolyLR (Pointcept's
instance segmentation) and cosine with a linear warm-up (UniPAD, mmcv's), per optimiser step."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

ScheduleKind = Literal["onecycle", "poly", "cosine"]


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """One schedule's parameters; each kind reads its own (the defaults are PyTorch's and mmcv's)."""

    kind: ScheduleKind = "onecycle"
    pct_start: float = 0.05  # onecycle: warm-up fraction of the steps
    div_factor: float = 25.0  # onecycle: the first rate is the peak / div_factor
    final_div_factor: float = 1e4  # onecycle: the last rate is the first / final_div_factor
    power: float = 0.9  # poly: rate = peak x (1 - step / (steps + 1)) ** power
    warmup_steps: int = 0  # cosine: linear warm-up steps
    warmup_ratio: float = 1.0 / 3  # cosine: the warm-up's first rate / the peak
    min_lr_ratio: float = 1e-3  # cosine: the last rate / the peak

    def __post_init__(self) -> None:
        if self.kind not in get_args(ScheduleKind):
            raise ValueError(f"schedule kind must be one of {get_args(ScheduleKind)}, got {self.kind!r}")
        if self.div_factor <= 0 or self.final_div_factor <= 0 or self.warmup_steps < 0:
            raise ValueError(f"div factors must be > 0 and warmup_steps >= 0, got {self}")


def build_schedule(optimizer: torch.optim.Optimizer, schedule: Schedule, max_lr: float | list[float],
                   total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """``schedule`` over ``total_steps`` optimiser steps; ``max_lr``: one peak, or one per parameter group."""
    peaks = max_lr if isinstance(max_lr, list) else [max_lr] * len(optimizer.param_groups)
    if schedule.kind == "onecycle":
        return one_cycle(optimizer, peaks, total_steps, schedule)
    for group, peak in zip(optimizer.param_groups, peaks, strict=True):
        group["lr"] = group["initial_lr"] = peak
    if schedule.kind == "poly":
        def factor(step: int) -> float:
            return (1.0 - min(step, total_steps) / (total_steps + 1)) ** schedule.power
    else:
        def factor(step: int) -> float:
            cosine = schedule.min_lr_ratio + (1 - schedule.min_lr_ratio) * (
                1 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1))) / 2
            if step < schedule.warmup_steps:  # mmcv's linear warm-up scales the cosine rate
                return cosine * (1 - (1 - step / schedule.warmup_steps) * (1 - schedule.warmup_ratio))
            return cosine
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def one_cycle(optimizer: torch.optim.Optimizer, peaks: list[float], total_steps: int, schedule: Schedule
              ) -> torch.optim.lr_scheduler.LRScheduler:
    """OneCycle over ``total_steps`` with a warm-up of at least two steps; a constant rate below 4 steps.

    PyTorch divides by ``pct_start * total_steps - 1``, which is zero when the warm-up would be exactly
    one step (20 steps at 5 %, say).
    """
    if total_steps < 4:
        for group, peak in zip(optimizer.param_groups, peaks, strict=True):
            group["lr"] = peak
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=peaks if len(peaks) > 1 else peaks[0], total_steps=total_steps,
        pct_start=min(max(schedule.pct_start, 2.0 / total_steps), 0.5), div_factor=schedule.div_factor,
        final_div_factor=schedule.final_div_factor)


def make_optimizer(model: torch.nn.Module, recipe: Any) -> tuple[torch.optim.Optimizer, list[float]]:
    """The recipe's optimiser (a fine-tuning or pre-training recipe: ``optimizer``, ``lr``, ``backbone_lr_scale``,
    ``momentum``, ``weight_decay``) over the trainable parameters, the backbone's at ``lr x backbone_lr_scale``
    (UniPAD's ``lr_mult``); returns it with each group's peak learning rate."""
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
