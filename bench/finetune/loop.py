"""The fine-tuning loop: training batches prepared by a DataLoader, optimiser steps (optionally under autocast and
with gradient clipping), an atomic checkpoint every epoch that re-running the same run resumes from, and the
run's ``metrics.jsonl``.

A draw depends only on (seed, pass, position): draw ``j`` of a run is position ``j % n`` of pass ``j // n`` over
the ``n`` training scenes, shuffled by a generator seeded with (seed, pass) and augmented by one seeded with
(seed, pass, position). The same seed therefore gives the same run with any number of loader workers, and a
resumed run draws exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from bench import distributed
from bench.distributed import Ranks
from bench.finetune.runlog import METRICS, RunLog
from bench.recipes import FinetuneRecipe
from tasks.io import atomic_write

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
Draw = tuple[int, np.random.Generator]  # (training scene index, the draw's generator)


def scene_draw(seed: int, scenes: int, draw: int) -> Draw:
    """Draw number ``draw`` of a run over ``scenes`` training scenes: its scene and its own generator."""
    passes, position = divmod(draw, scenes)
    order = np.random.default_rng([seed, passes]).permutation(scenes)
    return int(order[position]), np.random.default_rng([seed, passes, position])


class StepBatches(Dataset):
    """This rank's share of the run's training batches, by optimiser step: of the ``batch_size`` consecutive draws
    of a step (the global batch), rank r of w takes the r-th of w equal slices; ``make`` turns them into a batch
    (e.g. augmented, grid-sampled, cropped clouds and their targets). Runs in DataLoader workers."""

    def __init__(self, make: Callable[[list[Draw]], object], *, seed: int, scenes: int, batch_size: int,
                 steps: int, ranks: Ranks = Ranks(0, 1)) -> None:  # noqa: B008
        if batch_size % ranks.world:
            raise ValueError(f"batch_size {batch_size} (the global batch) must split evenly over {ranks.world} "
                             "processes")
        self.make, self.seed, self.scenes, self.steps = make, seed, scenes, steps
        self.share = batch_size // ranks.world
        self.offset = ranks.rank * self.share
        self.batch_size = batch_size

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> object:
        first = step * self.batch_size + self.offset
        return self.make([scene_draw(self.seed, self.scenes, j) for j in range(first, first + self.share)])


@dataclass(frozen=True)
class LoopResult:
    last_loss: float  # the last optimiser step's loss
    steps: int  # batches drawn (one optimiser step each)
    resumed_from: int | None  # the checkpoint's step when the run was resumed
    log: RunLog  # the run's metrics.jsonl, for the evaluation's row (writes nothing off the main rank or folder)


def _as_is(item: object) -> object:
    return item


def _autocast(recipe: FinetuneRecipe, device: torch.device) -> tuple[contextlib.AbstractContextManager,
                                                                      torch.amp.GradScaler | None]:
    """The recipe's autocast context and, for fp16, a gradient scaler. Mixed precision is refused off CUDA: spconv's
    CPU path has no half kernels, and a silent fp32 run would not be the run asked for."""
    if recipe.precision == "fp32":
        return contextlib.nullcontext(), None
    if device.type != "cuda":
        raise ValueError(f"precision={recipe.precision} needs a CUDA device (got {device}); use precision=fp32")
    dtype = torch.bfloat16 if recipe.precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if recipe.precision == "fp16" else None
    return torch.autocast("cuda", dtype=dtype), scaler


def optimizer_step(loss: torch.Tensor | None, optimizer: torch.optim.Optimizer,
                   scheduler: torch.optim.lr_scheduler.LRScheduler, task: str, grad_clip: float | None = None,
                   scaler: torch.amp.GradScaler | None = None, world: int = 1) -> float | None:
    """One step on the global batch: each rank back-propagates its share's ``loss`` (None: nothing to learn from in
    it) and the gradients are averaged over the ranks, clipped to ``grad_clip`` (global norm) when given. A
    non-finite loss on any rank stops every rank (training on garbage is worse than stopping); a batch with nothing
    to learn from on any rank only advances the schedule. Returns this rank's loss value."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    device = params[0].device  # where this rank's collectives run (NCCL: on its GPU)
    if not distributed.all_true(loss is None or bool(torch.isfinite(loss)), world, device):
        raise FloatingPointError(f"task {task}: non-finite fine-tuning loss")
    if distributed.all_true(loss is None, world, device):
        scheduler.step()
        return None
    optimizer.zero_grad(set_to_none=True)
    if loss is not None:
        (scaler.scale(loss) if scaler is not None else loss).backward()
    if scaler is not None:
        scaler.unscale_(optimizer)
    distributed.average_gradients(params, world)
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    scheduler.step()
    return float(loss.detach()) if loss is not None else None


def _load_checkpoint(path: Path, fingerprint: dict[str, object]) -> dict | None:
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("fingerprint") != fingerprint:
        theirs = state.get("fingerprint") or {}
        changed = sorted(k for k in {*fingerprint, *theirs} if fingerprint.get(k) != theirs.get(k))
        log.warning("%s belongs to another run (differs in %s); starting afresh", path, ", ".join(changed))
        return None
    return state


def train_loop(model: torch.nn.Module, batches: StepBatches, step_loss: Callable[[object], torch.Tensor | None],
               optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler, *,
               recipe: FinetuneRecipe, steps_per_epoch: int, fingerprint: dict[str, object], folder: Path | None,
               device: torch.device, desc: str, progress: bool, task: str,
               ranks: Ranks = Ranks(0, 1)) -> LoopResult:  # noqa: B008
    """Train ``model`` on ``batches`` (``step_loss`` maps a batch to its loss, or None when it has nothing to learn
    from). With a ``folder``, a checkpoint of the same run (``fingerprint``) there is resumed from, and one is
    written atomically after every epoch and at the end (by the main rank; every rank reads it on resume), beside
    the run's ``metrics.jsonl``.

    The loader is iterated once over all remaining steps, so its workers live for the whole run.
    """
    path = folder / CHECKPOINT if folder is not None else None
    state = _load_checkpoint(path, fingerprint) if path is not None else None
    autocast, scaler = _autocast(recipe, device)
    start, last = 0, float("nan")
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None:
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        start, last = state["step"], state["last_loss"]
        log.warning("%s: resumed from its checkpoint at step %d of %d", task, start, len(batches))
    runlog = RunLog(folder / METRICS if folder is not None and ranks.main else None)
    runlog.begin(start if state is not None else None)
    loader = DataLoader(batches, batch_size=None, sampler=range(start, len(batches)), collate_fn=_as_is,
                        num_workers=recipe.num_workers, pin_memory=device.type == "cuda")
    window: list[float] = []
    clock = time.perf_counter()
    model.train()
    for step, batch in enumerate(tqdm(loader, desc=desc, disable=not (progress and ranks.main), initial=start,
                                      total=len(batches)), start=start):
        with autocast:
            loss = step_loss(batch)
        value = optimizer_step(loss, optimizer, scheduler, task, recipe.grad_clip, scaler, ranks.world)
        if value is not None:
            last = value
            window.append(value)
        done = step + 1
        if done % recipe.log_every == 0 or done == len(batches):
            now = time.perf_counter()
            runlog.train(step=done, epoch=math.ceil(done / steps_per_epoch), loss=float(np.mean(window)) if window
                         else float("nan"), lr=scheduler.get_last_lr()[0], steps_per_s=len(window) / (now - clock))
            window, clock = [], now
        if path is not None and ranks.main and (done % steps_per_epoch == 0 or done == len(batches)):
            _save_checkpoint(path, model, optimizer, scheduler, scaler, done, last, fingerprint)
    return LoopResult(last_loss=last, steps=len(batches), resumed_from=start if state is not None else None,
                      log=runlog)


def _save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler | None, step: int,
                     last_loss: float, fingerprint: dict[str, object]) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict() if scaler is not None else None, "torch_rng": torch.get_rng_state(),
             "step": step, "last_loss": last_loss, "fingerprint": fingerprint}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def discard_checkpoint(folder: Path) -> None:
    """Remove a finished run's checkpoint (its record holds the result; a redo starts afresh)."""
    (folder / CHECKPOINT).unlink(missing_ok=True)

