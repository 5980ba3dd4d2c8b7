"""Contracts shared across packages: the collated point batch every 3D backbone consumes, and the
dense grid (box + cell centres) that lifting and the renderer both use."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch


@dataclass
class PointBatch:
    """Points of B clouds stacked along dim 0 (Pointcept's layout).

    ``offset[i]`` is the end index of cloud i, so cloud i spans ``offset[i-1]:offset[i]``.
    ``grid_coord`` are non-negative integer voxel coordinates per cloud. ``condition`` names the dataset the
    clouds come from (``"ScanNet"``, ``"S3DIS"``, ``"Structured3D"``; Pointcept's ``condition``), for backbones
    whose normalisation depends on it (PDNorm in ``spunet-v1m3``); the others ignore it.
    """

    coord: torch.Tensor  # (N, 3) float32
    grid_coord: torch.Tensor  # (N, 3) int32
    feat: torch.Tensor  # (N, C) float32
    offset: torch.Tensor  # (B,) int64
    condition: str | None = None

    def __post_init__(self) -> None:
        n = self.coord.shape[0]
        if self.grid_coord.shape != (n, 3) or self.feat.shape[0] != n:
            raise ValueError(
                f"PointBatch: coord {tuple(self.coord.shape)}, grid_coord {tuple(self.grid_coord.shape)} "
                f"and feat {tuple(self.feat.shape)} must share N"
            )
        if self.offset.ndim != 1 or len(self.offset) == 0 or int(self.offset[-1]) != n:
            raise ValueError(f"PointBatch: offset {self.offset.tolist()} must end at N={n}")

    @property
    def batch_size(self) -> int:
        return len(self.offset)

    @property
    def batch_index(self) -> torch.Tensor:
        """(N,) index of the cloud each point belongs to."""
        counts = torch.diff(self.offset, prepend=self.offset.new_zeros(1))
        return torch.repeat_interleave(torch.arange(len(counts), device=self.offset.device), counts)

    def to(self, device: torch.device | str) -> PointBatch:
        return replace(self, coord=self.coord.to(device), grid_coord=self.grid_coord.to(device),
                       feat=self.feat.to(device), offset=self.offset.to(device))

    def pin_memory(self) -> PointBatch:
        """A copy in page-locked memory (what a DataLoader with ``pin_memory`` calls), for faster copies to CUDA."""
        return replace(self, coord=self.coord.pin_memory(), grid_coord=self.grid_coord.pin_memory(),
                       feat=self.feat.pin_memory(), offset=self.offset.pin_memory())

    @classmethod
    def collate(cls, clouds: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                condition: str | None = None) -> PointBatch:
        """Stack (coord, grid_coord, feat) arrays of several clouds (of one dataset) into one batch."""
        if not clouds:
            raise ValueError("PointBatch.collate needs at least one cloud")
        coord = torch.from_numpy(np.concatenate([c[0] for c in clouds]).astype(np.float32))
        grid = torch.from_numpy(np.concatenate([c[1] for c in clouds]).astype(np.int32))
        feat = torch.from_numpy(np.concatenate([c[2] for c in clouds]).astype(np.float32))
        offset = torch.from_numpy(np.cumsum([len(c[0]) for c in clouds]).astype(np.int64))
        return cls(coord, grid, feat, offset, condition)


def use_condition(model: torch.nn.Module, condition: str | None) -> None:
    """Give every part of ``model`` that reads a dataset condition (a ``default_condition`` attribute: PDNorm) the
    condition of the dataset it runs on, for batches that name none; a run over one dataset sets it once."""
    for module in model.modules():
        if hasattr(module, "default_condition"):
            module.default_condition = condition


@dataclass(frozen=True)
class GridSpec:
    """An axis-aligned box [lo, hi] split into ``shape`` = (X, Y, Z) cells; cell i is centred at
    ``lo + (i + 0.5) * (hi - lo) / n``."""

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

    def centers(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """World (x, y, z) of every cell centre, laid out (Z, Y, X, 3) like the channels-last volume."""
        nx, ny, nz = self.shape
        zz, yy, xx = torch.meshgrid(torch.arange(nz, device=device), torch.arange(ny, device=device),
                                    torch.arange(nx, device=device), indexing="ij")
        return self.index_to_world(torch.stack([xx, yy, zz], dim=-1).float())
