"""Adding a 3D backbone to PonderBench: one class, one decorator (see README, "Adding a backbone")."""

import torch
from torch import nn

from backbones.registry import register_backbone
from backbones.structures import PointBatch


@register_backbone("pointmlp-tiny", modality="3d", in_channels=6, out_channels=32, voxel_size=0.02,
                   description="example: a per-point MLP with a per-cloud max-pooled context")
class PointMLP(nn.Module):
    def __init__(self, in_channels: int = 6, out_channels: int = 32, hidden: int = 64):
        super().__init__()
        self.local = nn.Sequential(nn.Linear(in_channels + 3, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(2 * hidden, out_channels))

    def forward(self, batch: PointBatch) -> torch.Tensor:
        x = self.local(torch.cat([batch.feat, batch.coord], dim=1))  # (N, hidden)
        idx = batch.batch_index
        context = x.new_full((batch.batch_size, x.shape[1]), -torch.inf)
        context = context.scatter_reduce(0, idx[:, None].expand_as(x), x, reduce="amax")
        return self.head(torch.cat([x, context[idx]], dim=1))  # (N, out_channels)
