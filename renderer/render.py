"""Rendering rays through a surface field: sample, evaluate SDF and its gradient, NeuS alpha, composite.

:func:`render_rays` is the functional core; the pre-training model wraps it. The SDF gradient is taken
with ``create_graph`` when training so that the eikonal loss (and the colour decoder, which reads the
gradient) can be back-propagated through it: this is what needs trilinear sampling's double backward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from renderer.fields import SurfaceField, neus_alpha
from renderer.rays import RayBundle
from renderer.samplers import NeuSSampler, RaySamples
from renderer.volrend import composite


@dataclass(frozen=True)
class RenderOutput:
    """Per-ray renders and the per-sample quantities the losses need."""

    rgb: torch.Tensor  # (R, 3)
    depth: torch.Tensor  # (R,) expected distance along the ray, normalised by the opacity
    normal: torch.Tensor  # (R, 3) composited unit SDF gradients
    opacity: torch.Tensor  # (R,)
    semantic: torch.Tensor | None  # (R, D)
    samples: RaySamples
    sdf: torch.Tensor  # (R, S)
    gradients: torch.Tensor  # (R, S, 3)


def sample_along(field: SurfaceField, rays: RayBundle, sampler: NeuSSampler, perturb: bool = False,
                 generator: torch.Generator | None = None) -> RaySamples:
    """Where ``render_rays`` evaluates the field: the sampler driven by the field's SDF (no autograd)."""
    return sampler(rays, lambda pts: field.sdf(pts, rays.batch_index, geometry=False)[0], perturb, generator)


def render_rays(field: SurfaceField, rays: RayBundle, sampler: NeuSSampler = NeuSSampler(),  # noqa: B008
                perturb: bool = False, generator: torch.Generator | None = None, create_graph: bool | None = None,
                backend: str = "auto", samples: RaySamples | None = None) -> RenderOutput:
    """Render ``rays``; ``create_graph`` (default: whether autograd is on) keeps the gradient differentiable.

    ``samples`` skips the sampler (they must come from :func:`sample_along` with the same field and rays).
    """
    create_graph = torch.is_grad_enabled() if create_graph is None else create_graph
    if samples is None:
        with record_function("render/sampling"):
            samples = sample_along(field, rays, sampler, perturb, generator)
    with record_function("render/fields"):
        points = samples.points(rays)
        sdf, geometry, gradients = field.sdf_and_gradient(points, rays.batch_index, create_graph)
        rgb, semantic = field.color(points, rays.batch_index, gradients, geometry, rays.directions)
        alpha = neus_alpha(sdf, gradients, rays.directions, samples.deltas, field.inv_s())
    with record_function("render/compositing"):
        parts = [rgb, samples.t[..., None], F.normalize(gradients, dim=-1)]
        if semantic is not None:
            parts.append(semantic)
        out, opacity = composite(alpha, torch.cat(parts, -1), backend)
    # depth as PonderV2 renders it: the weights' mean distance (not pulled to 0 by a ray's missing opacity),
    # kept inside the ray's sampled range
    depth = torch.minimum(torch.maximum(out[:, 3] / (opacity + 1e-10), samples.t[:, 0]), samples.t[:, -1])
    return RenderOutput(rgb=out[:, :3], depth=depth, normal=out[:, 4:7], opacity=opacity,
                        semantic=out[:, 7:] if semantic is not None else None, samples=samples, sdf=sdf,
                        gradients=gradients)
