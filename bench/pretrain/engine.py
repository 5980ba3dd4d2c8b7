"""The pre-training engine: :class:`Pretrainer` runs the Ponder model (:mod:`bench.pretrain.model`) on the one
trainer (:mod:`bench.trainer`).

OneCycle AdamW/SGD, gradient clipping, AMP on CUDA, atomic checkpoints every epoch with exact resume, a stop
with the step and loss terms on a non-finite loss, per-step losses in ``metrics.jsonl``, loss-curve and
rendered-vs-real pictures, and under ``torchrun`` data-parallel training (gradients averaged over the processes
in one all-reduce a step; NCCL on CUDA, gloo on CPU) with a DistributedSampler. At the end the backbone is
exported on its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

from backbones.registry import get_backbone_config
from backbones.structures import use_condition
from bench import distributed
from bench.hooks import Checkpoint, LogMetrics
from bench.matrix.records import git_sha
from bench.optim import build_schedule, make_optimizer
from bench.pretrain.data import (
    REDRAW_KEY,
    REDRAWS,
    PretrainSample,
    Preview,
    SceneSource,
    UnusableScene,
    build_sample,
    heldout_samples,
    open_source,
    sample_rng,
)
from bench.pretrain.model import PonderModel, sample_to
from bench.pretrain.plots import plot_losses, plot_render
from bench.recipes import PretrainRecipe
from bench.runlog import METRICS, RunLog, read_run_log
from bench.trainer import Hook, Trainer
from renderer.rays import RayBundle, near_far_from_box
from tasks.contract import UNIT_BOX, voxel_size
from tasks.io import atomic_write

log = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    run_dir: Path
    steps: int
    first_losses: dict[str, float]
    last_losses: dict[str, float]
    heldout_depth_error_before: float | None
    heldout_depth_error_after: float | None
    export: Path | None


def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg = version("ponderbench")
    except PackageNotFoundError:
        pkg = "0+local"
    return f"{pkg}+g{git_sha()[:12]}"


class PretrainBatches(Dataset):
    """This rank's samples of each optimiser step, by step: epoch ``e``'s scene order is a DistributedSampler's
    (shuffled by seed and epoch), cycled to fill its steps; a sample's randomness depends on its global position
    only (:func:`~bench.pretrain.data.sample_rng`). A scene that gives no usable sample is skipped for the next."""

    def __init__(self, source: SceneSource, recipe: PretrainRecipe, voxel: float, steps_per_epoch: int,
                 ranks: distributed.Ranks) -> None:
        self.source, self.recipe, self.voxel, self.steps_per_epoch, self.ranks = source, recipe, voxel, \
            steps_per_epoch, ranks
        self._orders: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return self.recipe.epochs * self.steps_per_epoch

    def order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            sampler = DistributedSampler(range(len(self.source)), num_replicas=self.ranks.world, rank=self.ranks.rank,
                                         shuffle=True, seed=self.recipe.seed)
            sampler.set_epoch(epoch)
            order = list(sampler)
            need = self.steps_per_epoch * self.recipe.batch_size
            self._orders = {epoch: [order[i % len(order)] for i in range(need)]}
        return self._orders[epoch]

    def __getitem__(self, step: int) -> tuple[int, list[tuple[PretrainSample, int, int]]]:
        """(step, [(sample, epoch, position)]); the main rank's first sample carries a preview every
        ``render_every`` steps."""
        epoch, k = divmod(step, self.steps_per_epoch)
        batch = self.recipe.batch_size
        every = self.recipe.render_every
        out = []
        for j in range(batch):
            position = (k * self.ranks.world + self.ranks.rank) * batch + j  # place in the global batch order
            preview = bool(self.ranks.main and j == 0 and every and (step + 1) % every == 0)
            out.append((self._sample(epoch, position, self.order(epoch)[k * batch + j], preview), epoch, position))
        return step, out

    def _sample(self, epoch: int, position: int, scene_index: int, preview: bool) -> PretrainSample:
        """The scene's sample at this position; an unusable one is skipped (logged) for the next scene's, and
        with fewer scenes than ``REDRAWS`` for another draw of the same ones (a one-scene source)."""
        for attempt in range(max(len(self.source), REDRAWS)):
            index = (scene_index + attempt) % len(self.source)
            key = position + (attempt // len(self.source)) * REDRAW_KEY
            try:
                sample = build_sample(self.source.scene(index), self.recipe, self.voxel, epoch, key,
                                      with_preview=preview)
            except UnusableScene as exc:
                log.warning("skipped: %s", exc)
                continue
            if self.source.conditions and sample.points is not None:  # a mixed source: this scene's dataset
                sample.points = replace(sample.points, condition=self.source.condition_of(index))
            return sample
        raise RuntimeError(f"{self.source.path}: no scene gives a usable training sample")


class Pretrainer:
    """One pre-training run in ``run_dir`` (created; with ``resume`` the latest checkpoint there is continued),
    on the one trainer (:class:`bench.trainer.Trainer`) with the checkpoint and log hooks and its own pictures."""

    def __init__(self, recipe: PretrainRecipe, data: str | Path, run_dir: str | Path, device: str = "cpu",
                 resume: bool = False, progress: bool = True, source: SceneSource | None = None,
                 init: str | Path | None = None) -> None:
        """``source``: scenes given directly instead of opened from ``data`` (which then only names them);
        ``init``: a pre-trained export loaded into the backbone before training (the low-level tasks fit a
        Ponder model to one scene from scratch or from such an export)."""
        self.recipe, self.data, self.run_dir = recipe, Path(data), Path(run_dir)
        self.ranks, self.device = distributed.setup(device)
        self.resume, self.progress = resume, progress
        torch.manual_seed(recipe.seed)  # identical initial weights on every rank
        self.source: SceneSource = source or open_source(
            self.data, recipe.mode, cameras=recipe.mode == "outdoor" and recipe.outdoor_rays == "camera",
            datasets=recipe.datasets)
        config = get_backbone_config(recipe.backbone)
        self.voxel = voxel_size(recipe.domain, config.voxel_size)
        self.model = PonderModel(recipe, self.source.class_names, self.source.class_sets)
        use_condition(self.model, self.source.condition)  # a mixed source's samples carry their own
        if init is not None:
            from bench.finetune.exports import load_export
            from tasks.contract import in_channels

            channels = 3 if config.modality == "2d" else in_channels(recipe.domain)
            load_export(self.model.backbone, init, recipe.backbone, channels)
        self.model.to(self.device)
        self.steps_per_epoch = recipe.steps_per_epoch or math.ceil(len(self.source) /
                                                                   (recipe.batch_size * self.ranks.world))
        self.optimizer, peaks = make_optimizer(self.model, recipe)
        self.scheduler = build_schedule(self.optimizer, recipe.schedule, peaks, recipe.epochs * self.steps_per_epoch)
        self.held: list[PretrainSample] = []
        self.heldout_before: float | None = None

    def _write_json(self, name: str, payload: dict) -> None:
        atomic_write(self.run_dir / name, lambda tmp: tmp.write_text(json.dumps(payload, indent=1, default=str)))

    def _train_rows(self) -> pd.DataFrame:
        """The run log's per-step rows: step, epoch, lr and the loss terms."""
        rows = read_run_log(self.run_dir / METRICS)
        rows = rows[rows.event == "train"] if len(rows) else rows
        return rows.drop(columns=[c for c in ("event", "steps_per_s") if c in rows]).dropna(axis=1, how="all")

    # -- the run
    def run(self) -> PretrainResult:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        main = self.ranks.main
        if main:
            self._write_json("recipe.json", {"recipe": asdict(self.recipe), "data": str(self.data),
                                             "source": self.source.kind, "world_size": self.ranks.world})
        self.held = heldout_samples(self.source, self.recipe, self.voxel) if main else []
        hooks = [LogMetrics(RunLog(self.run_dir / METRICS if main else None), every=1), _PretrainHook(self),
                 Checkpoint(self.run_dir, asdict(self.recipe), resume=self.resume, refuse_other=True)]
        batches = PretrainBatches(self.source, self.recipe, self.voxel, self.steps_per_epoch, self.ranks)
        trainer = Trainer(self.model, batches, self._step_loss, self.optimizer, self.scheduler,
                          steps_per_epoch=self.steps_per_epoch, hooks=hooks, device=self.device, ranks=self.ranks,
                          grad_clip=self.recipe.grad_clip or None, desc="pretrain", progress=self.progress).run()
        return self._finish(trainer)

    def _step_loss(self, batch: tuple[int, list[tuple[PretrainSample, int, int]]]) -> dict[str, float]:
        """This rank's share of a step: each sample's rendering loss back-propagated (scaled to the share's mean,
        ray chunk by ray chunk); returns the mean loss terms."""
        step, samples = batch
        totals: dict[str, float] = {}
        for sample, epoch, position in samples:
            sample = sample_to(sample, self.device)
            _, gen = sample_rng(self.recipe.seed, epoch, position)
            terms = self.model.train_step(sample, gen, loss_scale=1.0 / len(samples))
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + value / len(samples)
            if sample.preview is not None and all(math.isfinite(v) for v in terms.values()):
                self._picture(sample, step + 1)
        return totals

    def render_preview(self, sample: PretrainSample) -> tuple[np.ndarray, np.ndarray]:
        """The sample's preview (a camera view or a LiDAR panorama) rendered whole: colour (h, w, 3) and depth
        (h, w) along the ray, in the sample's units."""
        preview: Preview = sample.preview
        lo, hi = sample.spec.lo, sample.spec.hi
        origins, directions = preview.origins.to(self.device), preview.directions.to(self.device)
        box = (lo, hi) if self.recipe.mode == "outdoor" else UNIT_BOX
        near, far, _ = near_far_from_box(origins, directions, *box, near_min=0.5 if self.recipe.mode == "outdoor"
                                         else 0.01)
        rays = RayBundle(origins, directions, near, torch.maximum(far, near + 1e-3),
                         torch.zeros(len(origins), dtype=torch.long, device=self.device))
        rgb, depth = self.model.render(sample_to(sample, self.device), rays)
        h, w = preview.size
        return rgb.reshape(h, w, 3).cpu().numpy(), depth.reshape(h, w).cpu().numpy()

    def _picture(self, sample: PretrainSample, step: int) -> None:
        rgb, depth = self.render_preview(sample)
        plot_render(sample.preview.rgb, rgb, sample.preview.depth, depth,
                    self.run_dir / "renders" / f"step_{step:06d}.png", f"{sample.name}, step {step}")

    def heldout_depth_error(self, held: list[PretrainSample]) -> float | None:
        """Median |rendered - real| depth (metres) over the held-out rays, or None without held-out data."""
        if not held:
            return None
        errors = []
        for sample in held:
            sample = sample_to(sample, self.device)
            _, depth = self.model.render(sample, sample.rays)
            valid = sample.rays.depth > 0
            errors.append(((depth - sample.rays.depth).abs()[valid] * sample.metres_per_unit).cpu())
        return float(torch.cat(errors).median())

    def _finish(self, trainer: Trainer) -> PretrainResult:
        if not self.ranks.main:
            return PretrainResult(self.run_dir, trainer.step, {}, {}, None, None, None)
        after = self.heldout_depth_error(self.held)
        steps = self._train_rows()
        terms = [c for c in steps.columns if c not in ("step", "epoch", "lr")]
        window = max(1, min(len(steps) // 10, 20))  # first and last losses averaged over a few steps
        first = steps[terms].head(window).mean().to_dict() if len(steps) else {}
        last = steps[terms].tail(window).mean().to_dict() if len(steps) else {}
        export = self.export(last, trainer.step)
        self._write_json("summary.json", {"steps": trainer.step, "epochs": trainer.epoch, "first_losses": first,
                                          "last_losses": last, "loss_window_steps": window,
                                          "heldout_before": self.heldout_before, "heldout_after": after,
                                          "heldout_metric": "median |depth error| in metres", "export": str(export),
                                          "resumed_from_step": trainer.resumed_from, "world_size": self.ranks.world,
                                          "ranks_in_sync": True if self.ranks.world > 1 else None})
        return PretrainResult(self.run_dir, trainer.step, first, last, self.heldout_before, after, export)

    def export(self, final_losses: dict[str, float], steps: int) -> Path:
        """``backbone.pt`` (the backbone's state dict) and ``backbone.json`` describing it, for fine-tuning."""
        weights = self.run_dir / "backbone.pt"
        atomic_write(weights, lambda tmp: torch.save(self.model.backbone.state_dict(), tmp))
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        config = asdict(self.model.backbone.config) if hasattr(self.model.backbone, "config") else {}
        self._write_json("backbone.json", {
            "backbone": self.recipe.backbone, "config": config, "mode": self.recipe.mode,
            "data": str(self.data), "source": self.source.kind, "steps": steps, "final_losses": final_losses,
            "recipe": asdict(self.recipe), "code_version": code_version(), "sha256": digest,
            "weights": weights.name, "world_size": self.ranks.world,
        })
        return weights


class _PretrainHook(Hook):
    """Pre-training's own points of the loop: the held-out depth error before training (a fresh run's), the loss
    curve after every epoch, and the check that the processes still hold the same weights."""

    def __init__(self, pretrainer: Pretrainer) -> None:
        self.pretrainer = pretrainer

    def before_train(self, trainer: Trainer) -> None:
        p = self.pretrainer
        if trainer.step == 0:
            p.heldout_before = p.heldout_depth_error(p.held)

    def after_epoch(self, trainer: Trainer) -> None:
        p = self.pretrainer
        if trainer.ranks.main:
            plot_losses(p._train_rows(), p.run_dir / "loss_curve.png")
        if not distributed.in_sync(trainer.model.parameters(), trainer.ranks.world, trainer.device):
            raise RuntimeError(f"epoch {trainer.epoch}: the processes' parameters differ; distributed training is out "
                               "of sync")

    def state_dict(self) -> dict[str, object]:
        return {"heldout_before": self.pretrainer.heldout_before}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.pretrainer.heldout_before = state["heldout_before"]
