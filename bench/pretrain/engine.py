"""The pre-training engine: :class:`Pretrainer` runs the Ponder model (:mod:`bench.pretrain.model`).

OneCycle AdamW/SGD, gradient clipping, AMP on CUDA, atomic checkpoints every epoch with exact resume, a stop
with the step and loss terms on a non-finite loss, per-step losses in ``losses.jsonl``, loss-curve and
rendered-vs-real pictures, and under ``torchrun`` data-parallel training (gradients averaged over the processes
in one all-reduce a step; NCCL on CUDA, gloo on CPU) with a DistributedSampler. At the end the backbone is
exported on its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from backbones.registry import get_backbone_config
from bench import distributed
from bench.matrix.records import git_sha
from bench.optim import one_cycle
from bench.pretrain.data import (
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
from renderer.rays import RayBundle, near_far_from_box
from tasks.contract import UNIT_BOX, voxel_size
from tasks.io import atomic_write

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    """A loss term became NaN or infinite: the run stops instead of training on garbage."""


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


class Pretrainer:
    """One pre-training run in ``run_dir`` (created; with ``resume`` the latest checkpoint there is continued)."""

    def __init__(self, recipe: PretrainRecipe, data: str | Path, run_dir: str | Path, device: str = "cpu",
                 resume: bool = False, progress: bool = True, source: SceneSource | None = None,
                 init: str | Path | None = None) -> None:
        """``source``: scenes given directly instead of opened from ``data`` (which then only names them);
        ``init``: a pre-trained export loaded into the backbone before training (the low-level tasks fit a
        Ponder model to one scene from scratch or from such an export)."""
        self.recipe, self.data, self.run_dir = recipe, Path(data), Path(run_dir)
        ranks, self.device = distributed.setup(device)
        self.rank, self.world = ranks.rank, ranks.world
        self.progress = progress and self.rank == 0
        torch.manual_seed(recipe.seed)  # identical initial weights on every rank
        self.source: SceneSource = source or open_source(self.data, recipe.mode)
        config = get_backbone_config(recipe.backbone)
        self.voxel = voxel_size(recipe.domain, config.voxel_size)
        self.model = PonderModel(recipe, self.source.class_names)
        if init is not None:
            from bench.finetune.exports import load_export
            from tasks.contract import in_channels

            channels = 3 if config.modality == "2d" else in_channels(recipe.domain)
            load_export(self.model.backbone, init, recipe.backbone, channels)
        self.model.to(self.device)
        self.steps_per_epoch = recipe.steps_per_epoch or math.ceil(len(self.source) / (recipe.batch_size * self.world))
        self.total_steps = recipe.epochs * self.steps_per_epoch
        params = [p for p in self.model.parameters() if p.requires_grad]
        if recipe.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, nesterov=True,
                                             weight_decay=recipe.weight_decay)
        self.scheduler = one_cycle(self.optimizer, recipe.lr, self.total_steps, recipe.pct_start)
        self.step, self.epoch = 0, 0
        if resume:
            self._load_checkpoint()

    # -- files
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def _write_json(self, name: str, payload: dict) -> None:
        atomic_write(self.run_dir / name, lambda tmp: tmp.write_text(json.dumps(payload, indent=1, default=str)))

    def _save_checkpoint(self) -> None:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "step": self.step, "epoch": self.epoch,
                 "recipe": asdict(self.recipe), "torch_rng": torch.get_rng_state()}
        atomic_write(self.checkpoint_path, lambda tmp: torch.save(state, tmp))

    def _load_checkpoint(self) -> None:
        if not self.checkpoint_path.is_file():
            log.info("%s: no checkpoint to resume from; starting a new run", self.run_dir)
            return
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=False)
        if state["recipe"] != asdict(self.recipe):
            changed = sorted(k for k in state["recipe"] if state["recipe"][k] != asdict(self.recipe).get(k))
            raise ValueError(f"{self.checkpoint_path}: the checkpoint was written with another recipe "
                             f"(differs in {changed}); resume with the same recipe or use a new run folder")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch = state["step"], state["epoch"]
        torch.set_rng_state(state["torch_rng"])  # samples draw from their own seeded generators (bench.pretrain.data)
        if self.rank == 0:  # forget the steps of the epoch that was interrupted
            lines = self._read_losses()
            atomic_write(self.run_dir / "losses.jsonl", lambda tmp: tmp.write_text(
                "".join(json.dumps(r) + "\n" for r in lines if r["step"] <= self.step)))
        log.info("resumed %s at epoch %d, step %d", self.run_dir, self.epoch, self.step)

    def _read_losses(self) -> list[dict]:
        path = self.run_dir / "losses.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # -- data
    def _epoch_order(self, epoch: int) -> list[int]:
        """Scene indices of this rank for the epoch, cycled to fill ``steps_per_epoch`` x ``batch_size``."""
        sampler = DistributedSampler(range(len(self.source)), num_replicas=self.world, rank=self.rank,
                                     shuffle=True, seed=self.recipe.seed)
        sampler.set_epoch(epoch)
        order = list(sampler)
        need = self.steps_per_epoch * self.recipe.batch_size
        return [order[i % len(order)] for i in range(need)]

    def _position(self, step_in_epoch: int, j: int) -> int:
        """Place of this rank's j-th sample in the global batch order (the key of its randomness)."""
        return (step_in_epoch * self.world + self.rank) * self.recipe.batch_size + j

    def _sample(self, epoch: int, step_in_epoch: int, j: int, scene_index: int, preview: bool) -> PretrainSample:
        """The j-th sample of this rank's share of a step; its randomness depends on its global position only."""
        position = self._position(step_in_epoch, j)
        for attempt in range(len(self.source)):
            index = (scene_index + attempt) % len(self.source)
            try:
                sample = build_sample(self.source.scene(index), self.recipe, self.voxel, epoch, position,
                                      with_preview=preview)
                return sample_to(sample, self.device)
            except UnusableScene as exc:
                log.warning("skipped: %s", exc)
        raise RuntimeError(f"{self.data}: no scene gives a usable training sample")

    # -- the loop
    def run(self) -> PretrainResult:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            self._write_json("recipe.json", {"recipe": asdict(self.recipe), "data": str(self.data),
                                             "source": self.source.kind, "world_size": self.world})
        held = heldout_samples(self.source, self.recipe, self.voxel) if self.rank == 0 else []
        before = self.heldout_depth_error(held) if self.step == 0 else self._summary_value("heldout_before")
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.progress, desc="pretrain")
        self.model.train()
        while self.epoch < self.recipe.epochs:
            order = self._epoch_order(self.epoch)
            for k in range(self.steps_per_epoch):
                terms = self._train_step(order, k)
                self.step += 1
                if self.rank == 0:
                    self._log_step(terms)
                    bar.update(1)
                    bar.set_postfix({n: f"{v:.3g}" for n, v in terms.items()})
            self.epoch += 1
            if self.rank == 0:
                self._save_checkpoint()
                plot_losses(pd.DataFrame(self._read_losses()), self.run_dir / "loss_curve.png")
            if not distributed.in_sync(self.model.parameters(), self.world, self.device):
                raise RuntimeError(f"epoch {self.epoch}: the processes' parameters differ; distributed training is "
                                   "out of sync")
        bar.close()
        return self._finish(held, before)

    def _train_step(self, order: list[int], k: int) -> dict[str, float]:
        batch = self.recipe.batch_size
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for j in range(batch):
            want_picture = self.rank == 0 and j == 0 and self.recipe.render_every and (self.step + 1) % \
                self.recipe.render_every == 0
            sample = self._sample(self.epoch, k, j, order[k * batch + j], bool(want_picture))
            _, gen = sample_rng(self.recipe.seed, self.epoch, self._position(k, j))
            terms = self.model.train_step(sample, gen, loss_scale=1.0 / batch)
            self._check_finite(terms)
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + value / batch
            if want_picture:
                self._picture(sample)
        if self.world > 1:  # the global batch's gradients and losses, as one process would have them
            distributed.average_gradients((p for p in self.model.parameters() if p.requires_grad), self.world)
            names = sorted(totals)
            values = torch.tensor([totals[n] for n in names], dtype=torch.float64, device=self.device)
            dist.all_reduce(values)
            totals = {n: float(v) / self.world for n, v in zip(names, values, strict=True)}
        if self.recipe.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return totals

    def _check_finite(self, terms: dict[str, float]) -> None:
        """Before the optimiser step: the gradients of a non-finite loss never reach the weights."""
        finite = torch.tensor([float(all(math.isfinite(v) for v in terms.values()))], device=self.device)
        if self.world > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite.item() < 1:
            values = ", ".join(f"{n}={v:.4g}" for n, v in terms.items())
            raise NonFiniteLoss(f"non-finite loss at step {self.step + 1} (epoch {self.epoch}): {values}. "
                                f"The last checkpoint ({self.checkpoint_path}) is intact; lower lr or check the data.")

    def _log_step(self, terms: dict[str, float]) -> None:
        row = {"step": self.step, "epoch": self.epoch, "lr": self.scheduler.get_last_lr()[0], **terms,
               "seconds": time.time()}
        with open(self.run_dir / "losses.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def _picture(self, sample: PretrainSample) -> None:
        preview: Preview = sample.preview
        lo, hi = sample.spec.lo, sample.spec.hi
        origins, directions = preview.origins.to(self.device), preview.directions.to(self.device)
        box = (lo, hi) if self.recipe.mode == "outdoor" else UNIT_BOX
        near, far, _ = near_far_from_box(origins, directions, *box, near_min=0.5 if self.recipe.mode == "outdoor"
                                         else 0.01)
        rays = RayBundle(origins, directions, near, torch.maximum(far, near + 1e-3),
                         torch.zeros(len(origins), dtype=torch.long, device=self.device))
        rgb, depth = self.model.render(sample, rays)
        h, w = preview.size
        plot_render(preview.rgb, rgb.reshape(h, w, 3).cpu().numpy(), preview.depth,
                    depth.reshape(h, w).cpu().numpy(), self.run_dir / "renders" / f"step_{self.step + 1:06d}.png",
                    f"{sample.name}, step {self.step + 1}")

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

    def _summary_value(self, key: str) -> float | None:
        path = self.run_dir / "summary.json"
        return json.loads(path.read_text()).get(key) if path.is_file() else None

    def _finish(self, held: list[PretrainSample], before: float | None) -> PretrainResult:
        if self.rank != 0:
            return PretrainResult(self.run_dir, self.step, {}, {}, None, None, None)
        after = self.heldout_depth_error(held)
        steps = pd.DataFrame(self._read_losses())
        terms = [c for c in steps.columns if c not in ("step", "epoch", "lr", "seconds")]
        window = max(1, min(len(steps) // 10, 20))  # first and last losses averaged over a few steps
        first = steps[terms].head(window).mean().to_dict() if len(steps) else {}
        last = steps[terms].tail(window).mean().to_dict() if len(steps) else {}
        export = self.export(last)
        self._write_json("summary.json", {"steps": self.step, "epochs": self.epoch, "first_losses": first,
                                          "last_losses": last, "loss_window_steps": window,
                                          "heldout_before": before, "heldout_after": after,
                                          "heldout_metric": "median |depth error| in metres", "export": str(export),
                                          "world_size": self.world, "ranks_in_sync": True if self.world > 1 else None})
        return PretrainResult(self.run_dir, self.step, first, last, before, after, export)

    def export(self, final_losses: dict[str, float]) -> Path:
        """``backbone.pt`` (the backbone's state dict) and ``backbone.json`` describing it, for fine-tuning."""
        weights = self.run_dir / "backbone.pt"
        atomic_write(weights, lambda tmp: torch.save(self.model.backbone.state_dict(), tmp))
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        config = asdict(self.model.backbone.config) if hasattr(self.model.backbone, "config") else {}
        self._write_json("backbone.json", {
            "backbone": self.recipe.backbone, "config": config, "mode": self.recipe.mode,
            "data": str(self.data), "source": self.source.kind, "steps": self.step, "final_losses": final_losses,
            "recipe": asdict(self.recipe), "code_version": code_version(), "sha256": digest,
            "weights": weights.name, "world_size": self.world,
        })
        return weights
