"""The one input contract of every 3D backbone: a collated batch of voxelised point clouds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class PointBatch:
    """Points of B clouds stacked along dim 0 (Pointcept's layout).

    ``offset[i]`` is the end index of cloud i, so cloud i spans ``offset[i-1]:offset[i]``.
    ``grid_coord`` are non-negative integer voxel coordinates per cloud.
    """

    coord: torch.Tensor  # (N, 3) float32
    grid_coord: torch.Tensor  # (N, 3) int32
    feat: torch.Tensor  # (N, C) float32
    offset: torch.Tensor  # (B,) int64

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
        return PointBatch(self.coord.to(device), self.grid_coord.to(device), self.feat.to(device),
                          self.offset.to(device))

    @classmethod
    def collate(cls, clouds: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> PointBatch:
        """Stack (coord, grid_coord, feat) arrays of several clouds into one batch."""
        if not clouds:
            raise ValueError("PointBatch.collate needs at least one cloud")
        coord = torch.from_numpy(np.concatenate([c[0] for c in clouds]).astype(np.float32))
        grid = torch.from_numpy(np.concatenate([c[1] for c in clouds]).astype(np.int32))
        feat = torch.from_numpy(np.concatenate([c[2] for c in clouds]).astype(np.float32))
        offset = torch.from_numpy(np.cumsum([len(c[0]) for c in clouds]).astype(np.int64))
        return cls(coord, grid, feat, offset)
