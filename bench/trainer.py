"""The one training loop. Fine-tuning (every task type), pre-training and the low-level tasks' per-scene fits all
train through :class:`Trainer`; what differs between them is their batches, their loss and their hooks
(:mod:`bench.hooks`: checkpoint, logging, precise BatchNorm, evaluation, pictures), as in Pointcept's engine/hook
split.

A step: this rank's share of the global batch comes from a DataLoader over a dataset indexed by step (so a resumed
run draws what the uninterrupted one would have, whatever the worker count), its loss is computed under the
recipe's autocast, gradients are averaged over the ranks in one all-reduce, clipped, and applied. A non-finite loss
on any rank, or a non-finite gradient, stops every rank before the optimiser sees it (:class:`Diverged`), unless
the recipe allows skipping a few such steps (``skip_diverged_steps``); a share with nothing to learn from (no labelled
point) on every rank only advances the schedule.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from bench import distributed
from bench.distributed import Ranks
from bench.recipes import Precision

Terms = dict[str, float]
# a loss to back-propagate; or the terms of a loss the function back-propagated itself (rendering does, ray chunk
# by ray chunk, to bound memory); or None: nothing to learn from in this rank's share of the batch
StepLoss = torch.Tensor | Mapping[str, float] | None


log = logging.getLogger(__name__)

DIVERGED_ADVICE = "lower lr or enable gradient clipping (grad_clip=1.0)"
BLOW_UP = 1e4  # a loss term this many times its first value (or 1) means the run diverged


class Diverged(FloatingPointError):
    """A loss term, the gradient or the model's output became NaN or infinite: the run stops instead of training on
    (or scoring) garbage."""


class Hook:
    """A part of a training run called at fixed points of the loop; every method is optional. A hook with state to
    keep across a kill returns it from ``state_dict`` (the checkpoint hook saves and restores it)."""

    def before_train(self, trainer: Trainer) -> None:
        """Before the first step (after a resume: before the first remaining step)."""

    def after_step(self, trainer: Trainer, terms: Terms | None) -> None:
        """After each optimiser step; ``terms``: the step's loss terms, averaged over the ranks (None: nothing to
        learn from)."""

    def after_epoch(self, trainer: Trainer) -> None:
        """After each epoch's last step (and the run's last step); ``trainer.evaluating`` says whether this epoch
        is evaluated."""

    def after_train(self, trainer: Trainer) -> None:
        """After the last step."""

    def state_dict(self) -> dict[str, object]:
        return {}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore what ``state_dict`` returned."""


def _format(terms: Terms | None) -> str:
    return ", ".join(f"{n}={v:.4g}" for n, v in (terms or {}).items())


def _as_is(item: object) -> object:
    return item


def autocast(precision: Precision, device: torch.device) -> tuple[contextlib.AbstractContextManager,
                                                                  torch.amp.GradScaler | None]:
    """The autocast context of ``precision`` and, for fp16, a gradient scaler. Mixed precision is refused off CUDA:
    spconv's CPU path has no half kernels, and a silent fp32 run would not be the run asked for."""
    if precision == "fp32":
        return contextlib.nullcontext(), None
    if device.type != "cuda":
        raise ValueError(f"precision={precision} needs a CUDA device (got {device}); use precision=fp32")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype), torch.amp.GradScaler("cuda") if precision == "fp16" else None


class Trainer:
    """Trains ``model`` for ``len(batches)`` optimiser steps; ``batches[step]`` is this rank's share of the step's
    batch, and ``loss(batch)`` its :data:`StepLoss`.

    ``eval_every``: epochs between evaluations (0: only after the last step); hooks read ``evaluating``.
    """

    def __init__(self, model: torch.nn.Module, batches: Dataset, loss: Callable[[object], StepLoss],
                 optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler, *,
                 steps_per_epoch: int, hooks: Sequence[Hook] = (), device: torch.device = torch.device("cpu"),  # noqa: B008
                 ranks: Ranks = Ranks(0, 1), num_workers: int = 0, grad_clip: float | None = None,  # noqa: B008
                 precision: Precision = "fp32", eval_every: int = 0, skip_diverged_steps: int = 0,
                 desc: str = "train", progress: bool = False) -> None:
        self.model, self.batches, self.loss = model, batches, loss
        self.optimizer, self.scheduler = optimizer, scheduler
        self.steps_per_epoch, self.hooks, self.device, self.ranks = steps_per_epoch, list(hooks), device, ranks
        self.num_workers, self.grad_clip, self.eval_every = num_workers, grad_clip, eval_every
        self.skip_diverged_steps = skip_diverged_steps  # diverged steps that may be skipped before the run fails
        self.skipped = 0  # steps skipped so far (kept in the checkpoint)
        self.first_terms: Terms = {}  # the first step's loss terms: what a blow-up is measured against
        self.desc, self.progress = desc, progress
        self.autocast, self.scaler = autocast(precision, device)
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.step = 0  # optimiser steps done
        self.resumed_from: int | None = None  # the checkpoint's step, when the run resumed (set by the hook)
        self.last_terms: Terms = {}  # the last step that had something to learn from
        self.busy_s = 0.0  # seconds spent loading batches and stepping (not in hooks): what steps/s divides by

    @property
    def steps(self) -> int:
        return len(self.batches)

    @property
    def epoch(self) -> int:
        """Epochs begun (an epoch is done once its last step is)."""
        return math.ceil(self.step / self.steps_per_epoch)

    @property
    def evaluating(self) -> bool:
        """Whether the epoch just finished is evaluated: every ``eval_every`` epochs, and after the last step."""
        return self.step == self.steps or (self.eval_every > 0 and self.epoch % self.eval_every == 0)

    def run(self) -> Trainer:
        for hook in reversed(self.hooks):  # last to first: a checkpoint hook (last) restores the run first
            hook.before_train(self)
        loader = DataLoader(self.batches, batch_size=None, sampler=range(self.step, self.steps), collate_fn=_as_is,
                            num_workers=self.num_workers, pin_memory=self.device.type == "cuda")
        self.model.train()
        bar = tqdm(loader, desc=self.desc, disable=not (self.progress and self.ranks.main), initial=self.step,
                   total=self.steps)
        batches = iter(bar)  # one pass over all remaining steps: the loader's workers live for the whole run
        while True:
            start = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            terms = self.train_step(batch)
            self.busy_s += time.perf_counter() - start
            self.step += 1
            if terms is not None:
                self.last_terms = terms
                bar.set_postfix({n: f"{v:.3g}" for n, v in terms.items()}, refresh=False)
            for hook in self.hooks:
                hook.after_step(self, terms)
            if self.step % self.steps_per_epoch == 0 or self.step == self.steps:
                for hook in self.hooks:
                    hook.after_epoch(self)
                self.model.train()  # an evaluation hook leaves the model in eval mode
        bar.close()
        for hook in self.hooks:
            hook.after_train(self)
        return self

    def train_step(self, batch: object) -> Terms | None:
        """One optimiser step on the global batch; returns its loss terms averaged over the ranks."""
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast:
            out = self.loss(batch)
        loss = out if isinstance(out, torch.Tensor) else None
        terms = None if out is None else {"loss": float(loss.detach())} if loss is not None else dict(out)
        problem = self._loss_problem(terms)
        if not distributed.all_true(problem is None, self.ranks.world, self.device):
            values = _format(terms)
            self._diverged_step(problem or "a diverged loss on another process",
                                values if problem else f"this one's: {values or 'none'}")
            return None
        if distributed.all_true(terms is None, self.ranks.world, self.device):
            self.scheduler.step()
            return None
        if loss is not None:
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        distributed.average_gradients(self.params, self.ranks.world)
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        # after the all-reduce every rank holds the same gradient, so each decides alike; fp16's scaler skips a
        # non-finite step itself (and lowers its scale)
        if self.scaler is None and not torch.isfinite(norm):
            self._diverged_step("non-finite gradient", f"norm {float(norm):.4g}, loss {_format(terms)}")
            return None
        if self.grad_clip is not None:
            torch.nn.utils.clip_grads_with_norm_(self.params, self.grad_clip, norm)
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.scheduler.step()
        terms = distributed.mean_terms(terms, self.ranks)
        self.first_terms = self.first_terms or terms
        return terms

    def _loss_problem(self, terms: Terms | None) -> str | None:
        """Why this rank's loss terms show a diverged run, or None: a term is not finite, or has grown more than
        :data:`BLOW_UP` times its first value (or 1, if larger). An exploding run can stay finite: SGD at lr=1e6
        takes a cross-entropy of 4 to 1e12 in one step, and BatchNorm keeps the next ones finite."""
        if terms is None:
            return None
        if not all(math.isfinite(v) for v in terms.values()):
            return "non-finite loss"
        first = self.first_terms
        if first and any(v > BLOW_UP * max(1.0, abs(first.get(n, 1.0))) for n, v in terms.items()):
            return f"loss over {BLOW_UP:g} x its first value ({_format(first)})"
        return None

    def _diverged_step(self, problem: str, detail: str) -> None:
        """A diverged step: skipped (no optimiser step; the schedule advances) while the recipe's
        ``skip_diverged_steps`` allows, else the run stops with :class:`Diverged`."""
        where = f"{problem} at step {self.step + 1} (epoch {self.step // self.steps_per_epoch + 1}): {detail}"
        if self.skipped >= self.skip_diverged_steps:
            if self.skipped:
                where += f", after {self.skipped} skipped steps (skip_diverged_steps={self.skip_diverged_steps})"
            raise Diverged(f"{where}. The run diverged: {DIVERGED_ADVICE}. Checkpoints written so far are "
                           "intact.")
        self.skipped += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        log.warning("%s: %s; step skipped (%d of skip_diverged_steps=%d)", self.desc, where, self.skipped,
                    self.skip_diverged_steps)
