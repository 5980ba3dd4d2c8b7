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
    free_space: float = 1.0  # in front of the band: SDF equals the truncation
    eikonal: float = 0.01
    semantic: float = 0.1
    truncation: float = 0.05
    temperature: float = 0.01

    def names(self) -> list[str]:
        return [f.name for f in fields(self) if f.name not in ("truncation", "temperature")]


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def sdf_losses(t: torch.Tensor, sdf: torch.Tensor, depth: torch.Tensor, truncation: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """L1 SDF band loss near the observed surface and free-space loss in front of it (samples (R, S))."""
    to_surface = depth[:, None] - t
    band = to_surface.abs() <= truncation
    front = to_surface > truncation
    return (_masked_mean((sdf - to_surface).abs(), band),
            _masked_mean((sdf - truncation).abs(), front))


def eikonal_loss(gradients: torch.Tensor) -> torch.Tensor:
    return (gradients.norm(dim=-1) - 1.0).square().mean()


def semantic_infonce(embedding: torch.Tensor, labels: torch.Tensor, class_embeddings: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """Cross-entropy of cosine similarities to every class embedding (labels -1 are ignored)."""
    if not (labels >= 0).any():
        return embedding.sum() * 0.0
    logits = F.normalize(embedding, dim=-1) @ F.normalize(class_embeddings, dim=-1).T / temperature
    return F.cross_entropy(logits, labels, ignore_index=-1)


def rendering_losses(render: RenderOutput, rays: RayBundle, weights: LossWeights = LossWeights(),  # noqa: B008
                     class_embeddings: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Weighted loss terms (only those the targets allow) and their sum under ``"total"``."""
    terms: dict[str, torch.Tensor] = {}
    valid = rays.depth > 0 if rays.depth is not None else torch.ones_like(rays.near, dtype=torch.bool)
    if rays.rgb is not None:
        terms["rgb"] = _masked_mean((render.rgb - rays.rgb).abs().mean(-1), valid)
    if rays.depth is not None:
        terms["depth"] = _masked_mean((render.depth - rays.depth).abs(), valid)
        band, free = sdf_losses(render.samples.t[valid], render.sdf[valid], rays.depth[valid], weights.truncation)
        terms["sdf"], terms["free_space"] = band, free
    terms["eikonal"] = eikonal_loss(render.gradients)
    if render.semantic is not None and rays.label is not None and class_embeddings is not None:
        terms["semantic"] = semantic_infonce(render.semantic, rays.label, class_embeddings, weights.temperature)
    weighted = {name: value * getattr(weights, name) for name, value in terms.items()}
    weighted["total"] = sum(weighted.values())
    return weighted
