"""The hooks of :class:`bench.trainer.Trainer`: checkpoint, logging, precise BatchNorm, evaluation (best and last)
and pictures. A run is its trainer plus the hooks it needs: fine-tuning uses all five, pre-training the checkpoint
and the log (and pictures of its own)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

import numpy as np
import torch

from bench import distributed
from bench.runlog import RunLog
from bench.trainer import DIVERGED_ADVICE, Diverged, Hook, Terms, Trainer
from tasks.errors import DataFormatError
from tasks.io import atomic_write, load_torch

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


class Checkpoint(Hook):
    """An atomic checkpoint in ``folder`` after every epoch (model, optimiser, schedule, gradient scaler, torch RNG,
    step, and the other hooks' states), written by the main rank. Placed last among the hooks: it saves what the
    others did in the epoch, and (``before_train`` runs last to first) restores the run before they begin.

    With ``resume``, a checkpoint of the same run (``fingerprint``) is continued; one of another run is ignored with
    a warning, or with ``refuse_other`` refused (a pre-training folder names one run).
    """

    def __init__(self, folder: Path, fingerprint: dict[str, object], *, resume: bool = True,
                 refuse_other: bool = False) -> None:
        self.path, self.fingerprint, self.resume, self.refuse_other = folder / CHECKPOINT, fingerprint, resume, \
            refuse_other

    def before_train(self, trainer: Trainer) -> None:
        state = self._load() if self.resume else None
        if state is None:
            return
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
        if trainer.scaler is not None:
            trainer.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        trainer.step, trainer.last_terms = state["step"], state["last_terms"]
        trainer.first_terms, trainer.skipped = state.get("first_terms", {}), state.get("skipped", 0)
        trainer.resumed_from = trainer.step
        for hook in trainer.hooks:  # by class: a hook without state (pictures) may come or go between runs
            if type(hook).__name__ in state["hooks"]:
                hook.load_state_dict(state["hooks"][type(hook).__name__])
        log.warning("%s: resumed from its checkpoint at step %d of %d", trainer.desc, trainer.step, trainer.steps)

    def after_epoch(self, trainer: Trainer) -> None:
        if not trainer.ranks.main:
            return
        state = {"model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                 "scheduler": trainer.scheduler.state_dict(),
                 "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else None,
                 "torch_rng": torch.get_rng_state(), "step": trainer.step, "epoch": trainer.epoch,
                 "last_terms": trainer.last_terms,
                 "first_terms": trainer.first_terms, "skipped": trainer.skipped,
                 "hooks": {type(h).__name__: kept for h in trainer.hooks if (kept := h.state_dict())},
                 "fingerprint": self.fingerprint}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, lambda tmp: torch.save(state, tmp))

    def _load(self) -> dict | None:
        if not self.path.is_file():
            return None
        try:
            state = load_torch(self.path, "a training checkpoint")
        except DataFormatError as exc:  # e.g. an older version's pickled objects in a run's own folder
            if self.refuse_other:  # resuming was asked for (pre-training's --resume): say so, do not start over
                raise
            log.warning("%s; starting afresh", exc)
            return None
        if state.get("fingerprint") == self.fingerprint:
            return state
        if "fingerprint" not in state:
            log.warning("%s was written by an older version of ponderbench (no run fingerprint); starting afresh",
                        self.path)
            return None
        theirs = state["fingerprint"]
        changed = sorted(k for k in {*self.fingerprint, *theirs} if self.fingerprint.get(k) != theirs.get(k))
        if self.refuse_other:
            raise ValueError(f"{self.path}: the checkpoint belongs to another run (differs in {', '.join(changed)}); "
                             "resume with the same recipe or use a new run folder")
        log.warning("%s belongs to another run (differs in %s); starting afresh", self.path, ", ".join(changed))
        return None


def discard_checkpoint(folder: Path) -> None:
    """Remove a finished run's checkpoint (its record holds the result; a redo starts afresh)."""
    (folder / CHECKPOINT).unlink(missing_ok=True)


class LogMetrics(Hook):
    """A ``train`` row in the run log every ``every`` steps (and after the last): each loss term's mean over the
    interval, the learning rate, optimiser steps per second (loading and stepping; time in hooks, such as an
    evaluation, does not count). A resumed run's log is cut back to its checkpoint."""

    def __init__(self, runlog: RunLog, every: int) -> None:
        self.runlog, self.every = runlog, every
        self.window: list[Terms] = []
        self.busy, self.since = 0.0, 0  # the trainer's busy seconds and step when the interval began

    def before_train(self, trainer: Trainer) -> None:
        self.runlog.begin(trainer.resumed_from)
        self.window, self.busy, self.since = [], trainer.busy_s, trainer.step

    def after_step(self, trainer: Trainer, terms: Terms | None) -> None:
        if terms is not None:
            self.window.append(terms)
        if trainer.step % self.every and trainer.step != trainer.steps:
            return
        names = sorted({n for t in self.window for n in t})
        means = {n: float(np.mean([t[n] for t in self.window if n in t])) for n in names}
        self.runlog.train(step=trainer.step, epoch=trainer.epoch, lr=trainer.scheduler.get_last_lr()[0],
                          steps_per_s=(trainer.step - self.since) / max(trainer.busy_s - self.busy, 1e-9), **means)
        self.window, self.busy, self.since = [], trainer.busy_s, trainer.step


@torch.no_grad()
def precise_batchnorm(module: torch.nn.Module, inputs: Iterable[object], keep: torch.nn.Module | None = None) -> None:
    """Recompute the BatchNorm statistics of ``module`` (except those inside ``keep``) as exact averages over
    ``inputs`` (model inputs of training scenes). Labels are not used.

    SpUNet's BatchNorm follows Pointcept (momentum 0.01): after a short training its running statistics are
    still mostly their initial values, and evaluation (which uses them) would be wrong. A norm the inputs never
    reach (PDNorm's norms of other datasets' conditions) keeps the statistics it had.
    """
    inside = {id(m) for m in keep.modules()} if keep is not None else set()
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
             and id(m) not in inside]
    if norms:
        saved = [(m.momentum, {k: v.clone() for k, v in m.state_dict().items() if k.startswith(("running_",
                                                                                               "num_batches"))})
                 for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        module.train()
        for batch in inputs:
            module(batch)
        for m, (momentum, stats) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if m.num_batches_tracked == 0:  # not reached
                m.load_state_dict(stats, strict=False)
    module.eval()  # always: what follows evaluates


class PreciseBatchNorm(Hook):
    """Before each evaluation, the BatchNorm statistics recomputed over ``inputs()`` (training inputs drawn apart
    from training's own draws); those inside ``keep`` (a linear probe's frozen backbone) stay as they are."""

    def __init__(self, inputs: Callable[[], Iterable[object]], keep: torch.nn.Module | None = None) -> None:
        self.inputs, self.keep = inputs, keep

    def after_epoch(self, trainer: Trainer) -> None:
        if trainer.evaluating:
            precise_batchnorm(trainer.model, self.inputs(), self.keep)


@dataclass(frozen=True)
class Evaluation:
    """What an evaluation measured: ``scores`` (the task's metrics and other scalar outputs, e.g. the number of
    proposals) and ``per_class`` (a score per class, frame or scene; None where it is undefined)."""

    scores: dict[str, float]
    per_class: dict[str, float | None] = field(default_factory=dict)


class Evaluate(Hook):
    """Evaluates the model when the trainer says (every ``eval_every`` epochs and after the last step), logs the
    scores, and keeps the last evaluation and the best (by ``main_score``) with its step."""

    def __init__(self, evaluate: Callable[[torch.nn.Module], Evaluation], runlog: RunLog, main_score: str,
                 higher_is_better: bool = True) -> None:
        self.evaluate, self.runlog, self.main, self.higher = evaluate, runlog, main_score, higher_is_better
        self.last: Evaluation | None = None
        self.best: tuple[int, float] | None = None  # (step, main score)

    def after_epoch(self, trainer: Trainer) -> None:
        if not trainer.evaluating:
            return
        finite = True  # whether every forward of this evaluation gave finite outputs

        def watch(_module: torch.nn.Module, _inputs: object, out: object) -> None:
            nonlocal finite
            finite = finite and _all_finite(out)

        handle = trainer.model.register_forward_hook(watch)
        try:
            self.last = self.evaluate(trainer.model)
        finally:
            handle.remove()
        if not distributed.all_true(finite, trainer.ranks.world, trainer.device):
            # weights can grow huge yet finite in training (lr=1e6) and overflow only in a whole-scene forward
            raise Diverged(f"non-finite model outputs in the evaluation after step {trainer.step} (last training "
                           f"loss terms: {trainer.last_terms}). The run diverged: {DIVERGED_ADVICE}.")
        self.runlog.evaluation(trainer.step, self.last.scores)
        value = self.last.scores[self.main]
        if self.best is None or (value > self.best[1] if self.higher else value < self.best[1]):
            self.best = (trainer.step, value)

    def state_dict(self) -> dict[str, object]:
        return {"last": asdict(self.last) if self.last else None, "best": self.best}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.last = Evaluation(**state["last"]) if state["last"] else None
        self.best = tuple(state["best"]) if state["best"] else None


def _all_finite(out: object) -> bool:
    """Whether every tensor in a model's output (a tensor, or tuples, lists, dicts and dataclasses of them) is
    finite."""
    if isinstance(out, torch.Tensor):
        return bool(torch.isfinite(out).all()) if out.is_floating_point() else True
    if isinstance(out, Mapping):
        return all(_all_finite(v) for v in out.values())
    if isinstance(out, list | tuple):
        return all(_all_finite(v) for v in out)
    if is_dataclass(out):
        return all(_all_finite(getattr(out, f.name)) for f in fields(out))
    return True


class Pictures(Hook):
    """After training (on the main rank), ``draw(model)``: the task's predictions on one evaluation scene."""

    def __init__(self, draw: Callable[[torch.nn.Module], None]) -> None:
        self.draw = draw

    def after_train(self, trainer: Trainer) -> None:
        if trainer.ranks.main:
            trainer.model.eval()
            self.draw(trainer.model)
