"""Rendering losses of PonderV2 pre-training, with the reference weights (all configurable).

Distances are in the scene's normalised units (the unit cube indoors), so the SDF truncation band of 0.05
is 5% of the scene. Every loss takes a mask of the rays it applies to and returns a mean over them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from renderer.rays import RayBundle
from renderer.render import RenderOutput


@dataclass(frozen=True)
class LossWeights:
    rgb: float = 10.0
    depth: float = 1.0
    sdf: float = 10.0  # near-surface band: SDF equals the distance to the observed depth
    free_space: float = 1.0  # in front of the band: SDF at least the truncation
    eikonal: float = 0.01
    semantic: float = 0.1
    truncation: float = 0.05
    temperature: float = 0.01

    def names(self) -> list[str]:
        return [f.name for f in fields(self) if f.name not in ("truncation", "temperature")]


@dataclass(frozen=True)
class LossCounts:
    """What each loss is averaged over. Taken from the whole ray batch, so that a batch rendered in chunks
    (see :mod:`renderer.step`) gets exactly the loss, and the gradients, of one pass."""

    rays: int  # rays with a valid depth target (or all rays when there is none)
    band: int  # samples within the truncation band of their ray's depth
    front: int  # samples in front of the band
    samples: int  # all samples (eikonal)
    labelled: int  # rays with a class label

    @staticmethod
    def of(rays: RayBundle, t: torch.Tensor, truncation: float) -> LossCounts:
        """Counts for rays (R,) and their sample distances t (R, S)."""
        valid = _valid(rays)
        band, front = _band_and_front(t, rays.depth, truncation) if rays.depth is not None else (None, None)
        return LossCounts(rays=int(valid.sum()),
                          band=int((band & valid[:, None]).sum()) if band is not None else 0,
                          front=int((front & valid[:, None]).sum()) if front is not None else 0,
                          samples=t.numel(),
                          labelled=int((rays.label >= 0).sum()) if rays.label is not None else 0)


def _valid(rays: RayBundle) -> torch.Tensor:
    return rays.depth > 0 if rays.depth is not None else torch.ones_like(rays.near, dtype=torch.bool)


def _band_and_front(t: torch.Tensor, depth: torch.Tensor, truncation: float) -> tuple[torch.Tensor, torch.Tensor]:
    to_surface = depth[:, None] - t
    return to_surface.abs() <= truncation, to_surface > truncation


def _mean(values: torch.Tensor, mask: torch.Tensor, count: int) -> torch.Tensor:
    return (values * mask.to(values.dtype)).sum() / max(count, 1)


def rendering_losses(render: RenderOutput, rays: RayBundle, weights: LossWeights = LossWeights(),  # noqa: B008
                     class_embeddings: torch.Tensor | None = None, counts: LossCounts | None = None
                     ) -> dict[str, torch.Tensor]:
    """Weighted loss terms (only those the targets allow) and their sum under ``"total"``.

    RGB and depth: L1 over rays with valid depth. SDF band: L1 between the SDF and the distance to the
    observed surface, for samples within ``truncation`` of it; free space: relu(truncation - SDF) for samples
    in front of the band (one-sided, as PonderV2's: free space may be farther from a surface than the band).
    Eikonal: (|grad SDF| - 1)^2 over all samples. Semantic: InfoNCE of the rendered embedding against every
    class embedding (labels -1 ignored). ``counts`` defaults to this batch's.
    """
    counts = counts or LossCounts.of(rays, render.samples.t, weights.truncation)
    terms: dict[str, torch.Tensor] = {}
    valid = _valid(rays)
    if rays.rgb is not None:
        terms["rgb"] = _mean((render.rgb - rays.rgb).abs().mean(-1), valid, counts.rays)
    if rays.depth is not None:
        terms["depth"] = _mean((render.depth - rays.depth).abs(), valid, counts.rays)
        band, front = _band_and_front(render.samples.t, rays.depth, weights.truncation)
        to_surface = rays.depth[:, None] - render.samples.t
        terms["sdf"] = _mean((render.sdf - to_surface).abs(), band & valid[:, None], counts.band)
        terms["free_space"] = _mean(F.relu(weights.truncation - render.sdf), front & valid[:, None], counts.front)
    terms["eikonal"] = (render.gradients.norm(dim=-1) - 1.0).square().sum() / max(counts.samples, 1)
    if render.semantic is not None and rays.label is not None and class_embeddings is not None:
        logits = F.normalize(render.semantic, dim=-1) @ F.normalize(class_embeddings, dim=-1).T / weights.temperature
        ce = F.cross_entropy(logits, rays.label.clamp(min=0), reduction="none")
        terms["semantic"] = _mean(ce, rays.label >= 0, counts.labelled)
    weighted = {name: value * getattr(weights, name) for name, value in terms.items()}
    weighted["total"] = sum(weighted.values())
    return weighted
