"""One renderer training step at the reference size, ours and a faithful eager PonderV2-style baseline.

The baseline re-implements the eager data path of PonderV2's renderer (its render_utils, with the CUDA
smooth sampler replaced by ``F.grid_sample`` as in ../shared/PERFORMANCE.md): the whole 128-channel
volume is sampled channels-first with ``grid_sample`` at every sample, the SDF gradient comes from
grid_sample's double backward, transmittance is a cumprod, and per-sample tensors are concatenated.
It shares the decoders (same weights, same FLOPs) and the NeuS sampler with ours, so the difference is
the data path. Ours is the pre-training engine's step (:func:`renderer.step.render_and_backward`, in chunks of the
reference recipe's ``ray_chunk``). Run as a
script (``python -m bench.perf.renderer_step ours|eager``) it times steps in a fresh process and
prints the peak RSS and the RSS before the first step (torch itself and the inputs), which the benchmark
records.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.recipes import get_recipe
from renderer.fields import FieldConfig, VolumeField
from renderer.rays import RayBundle, near_far_from_box
from renderer.samplers import NeuSSampler, RaySamples
from renderer.step import render_and_backward
from tasks.contract import INDOOR_GRID

REFERENCE = get_recipe("indoor")  # the reference indoor pre-training: its sampler, losses and chunk
RAYS = 1280
CHANNELS = 128
BOX = ((-0.55, -0.55, -0.55), (0.55, 0.55, 0.55))


def make_inputs(variant: str, rays: int = RAYS, seed: int = 0, device: str = "cpu"
                ) -> tuple[VolumeField, tuple[torch.Tensor, ...], RayBundle]:
    """Decoders, the 128-channel 32 x 128 x 128 volume as each variant holds it, rays inside the unit cube.

    Ours: the U-Net's two channels-last halves (1, 32, 128, 128, 64); eager: one channels-first
    (1, 128, 32, 128, 128) tensor, as PonderV2 keeps it. Same values.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    field = VolumeField(FieldConfig())
    nx, ny, nz = INDOOR_GRID.shape
    full = torch.randn(1, nz, ny, nx, CHANNELS, generator=gen) * 0.1
    if variant == "eager":
        volumes = (full.permute(0, 4, 1, 2, 3).contiguous().to(device).requires_grad_(True),)
    else:
        volumes = tuple(half.contiguous().to(device).requires_grad_(True) for half in full.split(CHANNELS // 2, -1))
    origins = (torch.rand(rays, 3, generator=gen) - 0.5) * 0.6
    directions = F.normalize(torch.randn(rays, 3, generator=gen), dim=-1)
    near, far, _ = near_far_from_box(origins, directions, *BOX)
    depth = near + (far - near) * (0.3 + 0.6 * torch.rand(rays, generator=gen))
    bundle = RayBundle(origins, directions, near, far, torch.zeros(rays, dtype=torch.long),
                       rgb=torch.rand(rays, 3, generator=gen), depth=depth)
    return field.to(device), volumes, bundle.to(device)


def ours_step(field: VolumeField, volumes: tuple[torch.Tensor, ...], rays: RayBundle,
              chunk: int | None = REFERENCE.ray_chunk) -> float:
    """The renderer half of the pre-training engine's step (``PonderModel.train_step``): the same function, at the
    reference recipe's chunk size."""
    return render_and_backward(field, volumes, INDOOR_GRID, rays, NeuSSampler(REFERENCE.n_uniform,
                                                                              REFERENCE.n_importance),
                               REFERENCE.losses, chunk=chunk)["total"]


def composite_cumprod(alpha: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PonderV2's compositing: cumprod transmittance over materialised (rays x samples) tensors."""
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-7], -1), -1)[:, :-1]
    weights = alpha * trans
    return (weights[..., None] * values).sum(1), weights.sum(-1)


def eager_step(field: VolumeField, volumes: tuple[torch.Tensor, ...], rays: RayBundle, second_order: bool = True
               ) -> float:
    """The eager path: channels-first volume, grid_sample everywhere, cumprod transmittance.

    ``second_order=False`` detaches the SDF gradient (no eikonal or normal gradients flow back): less work than
    PonderV2 does, for devices where grid_sample has no double backward (CUDA in torch 2.11), as a lower bound.
    """
    (vol,) = volumes  # (1, C, Z, Y, X)
    lo, hi = vol.new_tensor(INDOOR_GRID.lo), vol.new_tensor(INDOOR_GRID.hi)

    def features(points: torch.Tensor) -> torch.Tensor:
        grid = ((points - lo) / (hi - lo) * 2 - 1)[None, None]  # (1, 1, R, S, 3)
        sampled = F.grid_sample(vol, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return sampled[0, :, 0].permute(1, 2, 0)  # (R, S, C)

    def sdf_and_geometry(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = features(points)
        sdf, geometry = field.sdf_decoder(feats[..., :64])
        return sdf[..., None], geometry, feats

    sampler = NeuSSampler()
    samples: RaySamples = sampler(rays, lambda p: sdf_and_geometry(p)[0][..., 0], perturb=True)
    points = samples.points(rays).requires_grad_(True)
    sdf, geometry, feats = sdf_and_geometry(points)
    gradients = torch.autograd.grad(sdf, points, torch.ones_like(sdf), create_graph=second_order, retain_graph=True)[0]
    dirs = rays.directions[:, None, :].expand_as(points)
    rgb = torch.sigmoid(field.color_decoder(gradients, feats[..., 64:], geometry, dirs))
    # NeuS alpha with (R, S, 1) tensors, as PonderV2's SDFField.get_alpha
    inv_s = field.variance()
    true_cos = (dirs * gradients).sum(-1, keepdim=True)
    iter_cos = -F.relu(-true_cos)
    deltas = samples.deltas[..., None]
    prev_cdf = torch.sigmoid((sdf - iter_cos * deltas * 0.5) * inv_s)
    next_cdf = torch.sigmoid((sdf + iter_cos * deltas * 0.5) * inv_s)
    alpha = ((prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)).clip(0.0, 1.0)[..., 0]
    out, _ = composite_cumprod(alpha, torch.cat([rgb, samples.t[..., None]], -1))
    rgb_out, depth_out = out[:, :3], out[:, 3]
    loss = (10 * (rgb_out - rays.rgb).abs().mean() + (depth_out - rays.depth).abs().mean()
            + 0.01 * (gradients.norm(dim=-1) - 1).square().mean())
    loss.backward()
    return float(loss.detach())


STEPS = {"ours": ours_step, "eager": eager_step}


def main(variant: str, repeats: int = 3) -> None:
    torch.set_num_threads(2)
    field, volumes, rays = make_inputs(variant)
    before = int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        for volume in volumes:
            volume.grad = None
        field.zero_grad(set_to_none=True)
        start = time.perf_counter()
        STEPS[variant](field, volumes, rays)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"variant": variant, "times_s": times[1:], "peak_rss_bytes": peak,
                      "rss_before_step_bytes": before}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3)
