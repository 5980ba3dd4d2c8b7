"""Compositing along rays, nerfacc-style: weights from alpha with transmittance in log space.

``alpha`` is (R, S) per-sample opacity, ``values`` (R, S, D) per-sample quantities (RGB, depth, normal,
semantic embedding … stacked on D). :func:`composite` returns the accumulated values (R, D) and the
opacity (R,), through the fused Triton kernel on CUDA or the PyTorch reference otherwise.
"""

from __future__ import annotations

import torch

from renderer.backend import resolve_backend

ALPHA_MAX = 1.0 - 1e-6  # keeps log(1 - alpha) finite; an opaque sample still stops (almost) all light


def render_transmittance_from_alpha(alpha: torch.Tensor) -> torch.Tensor:
    """T_i = prod_{j<i} (1 - alpha_j), computed as exp of an exclusive cumulative sum of log(1 - alpha)."""
    log1m = torch.log1p(-alpha.clamp(0.0, ALPHA_MAX))
    return torch.exp(torch.cumsum(log1m, dim=-1) - log1m)


def render_weight_from_alpha(alpha: torch.Tensor) -> torch.Tensor:
    """w_i = alpha_i * T_i, (R, S)."""
    return alpha * render_transmittance_from_alpha(alpha)


def accumulate_along_rays(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """sum_i w_i * v_i: (R, S) x (R, S, D) -> (R, D)."""
    return torch.einsum("rs,rsd->rd", weights, values)


def composite_reference(alpha: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ground truth: autograd through the functional pieces above (alpha clamped to [0, ALPHA_MAX])."""
    weights = render_weight_from_alpha(alpha.clamp(0.0, ALPHA_MAX))
    return accumulate_along_rays(weights, values), weights.sum(-1)


def composite(alpha: torch.Tensor, values: torch.Tensor, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Accumulated values (R, D) and opacity (R,) of rays with per-sample ``alpha`` and ``values``."""
    if alpha.ndim != 2 or values.ndim != 3 or values.shape[:2] != alpha.shape:
        raise ValueError(f"expected alpha (R, S) and values (R, S, D), got {tuple(alpha.shape)}, {tuple(values.shape)}")
    if resolve_backend(backend, alpha) == "triton":
        from renderer.kernels.composite import composite_triton

        return composite_triton(alpha, values)
    return composite_reference(alpha, values)
