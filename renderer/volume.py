"""The dense feature volume: one world <-> grid mapping shared by the scatter and the sampler.

PonderV2's reference scatters points over [-0.5, 0.5] but samples with ``p / 1.1 + 0.5``, so a feature
is read back about 10% away from where it was written. Here both sides use :class:`GridSpec` (defined in
``backbones.structures`` so that 2D-to-3D lifting builds its volume on the same cell centres).
"""

from __future__ import annotations

import torch

from backbones.structures import GridSpec
from renderer.trilinear import trilinear

__all__ = ["GridSpec", "sample_volume", "scatter_mean"]


def scatter_mean(points: torch.Tensor, feats: torch.Tensor, batch_index: torch.Tensor, batch_size: int,
                 spec: GridSpec) -> torch.Tensor:
    """Average per-point features into their nearest cells: (N, 3), (N, C) -> (B, Z, Y, X, C).

    Points outside the box are dropped; empty cells stay zero.
    """
    nx, ny, nz = spec.shape
    cell = torch.round(spec.world_to_index(points)).long()
    inside = ((cell >= 0) & (cell < cell.new_tensor(spec.shape))).all(-1)
    cell, feats, batch_index = cell[inside], feats[inside], batch_index[inside]
    rows = ((batch_index * nz + cell[:, 2]) * ny + cell[:, 1]) * nx + cell[:, 0]
    total = batch_size * nz * ny * nx
    sums = feats.new_zeros(total, feats.shape[1]).index_add(0, rows, feats)
    counts = torch.bincount(rows, minlength=total).to(feats.dtype).clamp(min=1)
    return (sums / counts[:, None]).reshape(batch_size, nz, ny, nx, feats.shape[1])


def sample_volume(volume: torch.Tensor, points: torch.Tensor, spec: GridSpec, backend: str = "auto") -> torch.Tensor:
    """Features of a (B, Z, Y, X, C) volume at world points (B, P, 3), differentiable twice."""
    return trilinear(volume, spec.world_to_index(points), backend)
