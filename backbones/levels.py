"""Every level of a multi-level backbone as one per-point feature (Sonata's linear probe reads its encoder so).

A backbone offers its levels with ``levels(batch)``: per-level features finest first, each voxel's cell in the next
level, and each point's voxel; and their widths as ``level_channels``. SpUNet gives its decoder's output at each
resolution and the deepest encoder stage's, PTv3 the same, Sonata's encoder each stage's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from backbones.structures import PointBatch


def upcast(levels: Sequence[torch.Tensor], clusters: Sequence[torch.Tensor]) -> torch.Tensor:
    """Features of every level brought to the finest (each voxel takes its cell's) and concatenated, finest first
    (Sonata's ``DefaultSegmentorV2`` in encoder mode)."""
    feat = levels[-1]
    for s in reversed(range(len(levels) - 1)):
        feat = torch.cat([levels[s], feat[clusters[s]]], dim=1)
    return feat


def has_levels(backbone: nn.Module) -> bool:
    return callable(getattr(backbone, "levels", None)) and hasattr(backbone, "level_channels")


def all_levels(backbone: nn.Module, batch: PointBatch) -> torch.Tensor:
    """(N, sum(level_channels)) features of every level at each point."""
    levels, point_voxel, clusters = backbone.levels(batch)
    return upcast(levels, clusters)[point_voxel]


def level_width(backbone: nn.Module, level: int) -> int:
    """Channels of ``level`` (0: the finest; negative from the deepest); a level the backbone lacks is named."""
    count = len(getattr(backbone, "level_channels", ()))
    if not -count <= level < count:
        raise ValueError(f"level {level}: {type(backbone).__name__} has levels 0 to {count - 1}" if count else
                         f"level {level}: {type(backbone).__name__} has no levels()")
    return backbone.level_channels[level]


def one_level(backbone: nn.Module, batch: PointBatch, level: int) -> torch.Tensor:
    """(N, level_channels[level]) features of one level at each point (0: the finest), each voxel taking its
    cell's: the probe of one decoder resolution."""
    level %= len(backbone.level_channels)
    levels, point_voxel, clusters = backbone.levels(batch)
    cell = torch.arange(len(levels[0]), device=levels[0].device)
    for s in range(level):
        cell = clusters[s][cell]
    return levels[level][cell][point_voxel]
