"""The dense feature volume: one world <-> grid mapping shared by the scatter and the sampler.

PonderV2's reference scatters points over [-0.5, 0.5] but samples with ``p / 1.1 + 0.5``, so a feature
is read back about 10% away from where it was written. Here both sides use :class:`GridSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from renderer.trilinear import trilinear_reference


@dataclass(frozen=True)
class GridSpec:
    """An axis-aligned box [lo, hi] split into ``shape`` = (X, Y, Z) cells; cell i is centred at
    ``lo + (i + 0.5) * (hi - lo) / n`` (the same centres as ``backbones.lift.voxel_centers``)."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    shape: tuple[int, int, int]

    def world_to_index(self, points: torch.Tensor) -> torch.Tensor:
        """Continuous index coordinates (x, y, z): cell centre i maps to i."""
        lo, hi = points.new_tensor(self.lo), points.new_tensor(self.hi)
        return (points - lo) / (hi - lo) * points.new_tensor(self.shape) - 0.5

    def index_to_world(self, index: torch.Tensor) -> torch.Tensor:
        lo, hi = index.new_tensor(self.lo), index.new_tensor(self.hi)
        return (index + 0.5) / index.new_tensor(self.shape) * (hi - lo) + lo


INDOOR_GRID = GridSpec((-0.5, -0.5, -0.5), (0.5, 0.5, 0.5), (128, 128, 32))  # unit-cube-normalised scene
OUTDOOR_GRID = GridSpec((-54.0, -54.0, -5.0), (54.0, 54.0, 3.0), (180, 180, 5))  # 0.6 x 0.6 x 1.6 m cells


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


def sample_volume(volume: torch.Tensor, points: torch.Tensor, spec: GridSpec) -> torch.Tensor:
    """Features of a (B, Z, Y, X, C) volume at world points (B, P, 3)."""
    return trilinear_reference(volume, spec.world_to_index(points))
