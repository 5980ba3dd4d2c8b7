"""Where along each ray the fields are evaluated: stratified uniform samples, then NeuS importance samples.

NeuS up-sampling (Wang et al. 2021, sec. 3.4): evaluate the SDF at the uniform samples, turn consecutive
SDF pairs into section alphas at a fixed sharpness ``inv_s``, and draw extra samples from the resulting
weights by inverse-CDF sampling; they concentrate where the ray first crosses the surface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from renderer.rays import RayBundle
from renderer.volrend import render_weight_from_alpha


@dataclass(frozen=True)
class RaySamples:
    """S sorted sample distances per ray and the length of the interval each one stands for."""

    t: torch.Tensor  # (R, S)
    deltas: torch.Tensor  # (R, S)

    @staticmethod
    def from_distances(t: torch.Tensor, rays: RayBundle) -> RaySamples:
        """Intervals between consecutive samples; the last one runs to the far bound."""
        t = t.sort(-1).values
        deltas = torch.cat([t[:, 1:] - t[:, :-1], (rays.far[:, None] - t[:, -1:]).clamp(min=1e-4)], -1)
        return RaySamples(t=t, deltas=deltas)

    def points(self, rays: RayBundle) -> torch.Tensor:
        """(R, S, 3) world positions."""
        return points_at(rays, self.t)


def points_at(rays: RayBundle, t: torch.Tensor) -> torch.Tensor:
    """World positions (R, S, 3) at distances t (R, S) along the rays."""
    return rays.origins[:, None, :] + rays.directions[:, None, :] * t[..., None]


def uniform_distances(rays: RayBundle, n: int, perturb: bool, generator: torch.Generator | None = None
                      ) -> torch.Tensor:
    """n stratified distances in [near, far): bin starts, jittered within their bin when ``perturb``."""
    u = torch.arange(n, device=rays.near.device, dtype=rays.near.dtype)[None, :].expand(len(rays), n)
    offset = torch.rand(u.shape, generator=generator, dtype=u.dtype, device="cpu").to(u.device) if perturb else 0.5
    u = u + offset
    return rays.near[:, None] + (rays.far - rays.near)[:, None] * (u / n)


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n: int) -> torch.Tensor:
    """n deterministic inverse-CDF samples from piecewise-constant ``weights`` (R, N-1) over ``bins`` (R, N)."""
    pdf = (weights + 1e-5) / (weights + 1e-5).sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), pdf.cumsum(-1)], -1)
    u = torch.linspace(0.0, 1.0, n, device=bins.device, dtype=bins.dtype).expand(len(bins), n).contiguous()
    above = torch.searchsorted(cdf.contiguous(), u, right=True).clamp(max=bins.shape[1] - 1)
    below = (above - 1).clamp(min=0)
    cdf_lo, cdf_hi = cdf.gather(1, below), cdf.gather(1, above)
    bin_lo, bin_hi = bins.gather(1, below), bins.gather(1, above)
    denom = torch.where(cdf_hi - cdf_lo < 1e-5, torch.ones_like(cdf_lo), cdf_hi - cdf_lo)
    return bin_lo + (u - cdf_lo) / denom * (bin_hi - bin_lo)


def neus_section_weights(t: torch.Tensor, sdf: torch.Tensor, inv_s: float) -> torch.Tensor:
    """Weights (R, N-1) of the sections between consecutive samples, from the SDF at fixed ``inv_s``."""
    mid_sdf = (sdf[:, 1:] + sdf[:, :-1]) * 0.5
    dist = t[:, 1:] - t[:, :-1]
    cos = (sdf[:, 1:] - sdf[:, :-1]) / (dist + 1e-5)
    prev_cos = torch.cat([torch.zeros_like(cos[:, :1]), cos[:, :-1]], -1)
    cos = torch.minimum(prev_cos, cos).clamp(-1e3, 0.0)  # only surfaces entered from outside count
    prev_cdf = torch.sigmoid((mid_sdf - cos * dist * 0.5) * inv_s)
    next_cdf = torch.sigmoid((mid_sdf + cos * dist * 0.5) * inv_s)
    alpha = ((prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)).clamp(0.0, 1.0)
    return render_weight_from_alpha(alpha)


@dataclass(frozen=True)
class NeuSSampler:
    """Uniform samples plus importance samples drawn from the SDF (reference: 96 + 36, inv_s 64, one step)."""

    n_uniform: int = 96
    n_importance: int = 36
    inv_s: float = 64.0
    steps: int = 1

    @property
    def n_samples(self) -> int:
        return self.n_uniform + self.n_importance

    def __call__(self, rays: RayBundle, sdf_fn: Callable[[torch.Tensor], torch.Tensor], perturb: bool,
                 generator: torch.Generator | None = None) -> RaySamples:
        """``sdf_fn`` maps (R, S, 3) world points to (R, S) signed distances; it is called without autograd."""
        t = uniform_distances(rays, self.n_uniform, perturb, generator)
        with torch.no_grad():
            sdf = sdf_fn(points_at(rays, t))
            for step in range(self.steps):
                n = self.n_importance // self.steps + (step < self.n_importance % self.steps)
                extra = sample_pdf(t, neus_section_weights(t, sdf, self.inv_s * 2**step), n)
                t, order = torch.cat([t, extra], -1).sort(-1)
                if step + 1 < self.steps:
                    sdf = torch.cat([sdf, sdf_fn(points_at(rays, extra))], -1).gather(1, order)
        return RaySamples.from_distances(t, rays)
