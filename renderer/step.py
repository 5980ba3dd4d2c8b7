"""A renderer training step in ray chunks: the memory of one chunk, the gradients of one pass.

The volumes are cut from their graph into leaf copies; every chunk of rays is rendered, its share of the
loss back-propagated into the leaves (and the decoders), and the accumulated volume gradients are sent
through the volumes' graph (U-Net, backbone) once at the end. Loss denominators come from the whole batch
(:class:`renderer.losses.LossCounts`, from a sampling pass over every chunk), so the result equals one
un-chunked pass up to float summation order. PonderV2's eager path cannot render 10,240 rays at once in
22 GB (../shared/PERFORMANCE.md); chunking bounds the peak by the chunk size instead.
"""

from __future__ import annotations

import torch
from torch.profiler import record_function

from backbones.structures import GridSpec
from renderer.fields import VolumeField
from renderer.losses import LossCounts, LossWeights, rendering_losses
from renderer.rays import RayBundle
from renderer.render import render_rays, sample_along
from renderer.samplers import NeuSSampler


def render_and_backward(field: VolumeField, volumes: tuple[torch.Tensor, torch.Tensor], spec: GridSpec,
                        rays: RayBundle, sampler: NeuSSampler = NeuSSampler(),  # noqa: B008
                        weights: LossWeights = LossWeights(),  # noqa: B008
                        class_embeddings: torch.Tensor | None = None, chunk: int | None = None, perturb: bool = True,
                        generator: torch.Generator | None = None, loss_scale: float = 1.0
                        ) -> dict[str, float]:
    """Render ``rays`` from the (SDF, colour) ``volumes``, back-propagate ``loss_scale`` x the loss, return the terms.

    ``chunk`` rays at a time (all at once when None).
    """
    leaves = tuple(v.detach().requires_grad_(v.requires_grad) for v in volumes)
    field.bind(*leaves, spec)
    size = chunk or len(rays)
    parts = [rays[i:i + size] for i in range(0, len(rays), size)]
    with record_function("render/sampling"):
        samples = [sample_along(field, part, sampler, perturb, generator) for part in parts]
        counts = LossCounts.of(rays, torch.cat([s.t for s in samples]), weights.truncation)
    totals: dict[str, float] = {}
    for part, part_samples in zip(parts, samples, strict=True):
        out = render_rays(field, part, sampler, samples=part_samples)
        with record_function("render/losses"):
            terms = rendering_losses(out, part, weights, class_embeddings, counts)
        with record_function("render/backward"):
            (terms["total"] * loss_scale).backward()
        for name, value in terms.items():
            totals[name] = totals.get(name, 0.0) + float(value.detach())
        del out, terms  # free this chunk's graph before the next one is built
    sources = [(v, leaf.grad) for v, leaf in zip(volumes, leaves, strict=True) if leaf.grad is not None]
    del leaves
    for v, g in sources:
        if v.is_leaf:  # hand the accumulated gradient over instead of letting autograd copy it
            v.grad = g if v.grad is None else v.grad.add_(g)
    graph = [(v, g) for v, g in sources if not v.is_leaf]
    if graph:  # on into the U-Net and the backbone
        with record_function("model/backward"):
            torch.autograd.backward([v for v, _ in graph], [g for _, g in graph])
    return totals
