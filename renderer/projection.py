"""Dense 3D U-Net that turns the scattered feature volume into the renderer's SDF + colour volume.

Reference: 96 backbone channels in, 128 out split 64 SDF + 64 colour, 4 levels. The split is two 1x1
heads, so each half comes out as its own contiguous channels-last volume (B, Z, Y, X, C), the layout the
renderer samples, with no copy to split them. Pooling halves only the axes that are still at least 2
cells long, and decoders upsample to their skip's exact size, so odd and flat grids (the outdoor
180 x 180 x 5) work unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
                         nn.Conv3d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class UNet3D(nn.Module):
    def __init__(self, in_channels: int = 96, out_channels: tuple[int, ...] = (64, 64), base_channels: int = 32,
                 levels: int = 4) -> None:
        super().__init__()
        widths = [base_channels * 2**i for i in range(levels)]
        self.encoders = nn.ModuleList(_block(a, b) for a, b in zip([in_channels, *widths[:-1]], widths, strict=True))
        self.decoders = nn.ModuleList(_block(widths[i] + widths[i + 1], widths[i]) for i in range(levels - 1))
        self.heads = nn.ModuleList(nn.Conv3d(widths[0], c, 1) for c in out_channels)

    def forward(self, volume: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, Z, Y, X, in_channels) -> one (B, Z, Y, X, c) volume per entry of ``out_channels``."""
        x = volume.permute(0, 4, 1, 2, 3)
        skips = []
        for i, encoder in enumerate(self.encoders):
            if i:
                x = F.max_pool3d(x, [2 if n >= 2 else 1 for n in x.shape[2:]])
            x = encoder(x)
            skips.append(x)
        for decoder, skip in zip(reversed(self.decoders), reversed(skips[:-1]), strict=True):
            x = decoder(torch.cat([skip, F.interpolate(x, size=skip.shape[2:], mode="nearest")], 1))
        return tuple(head(x).permute(0, 2, 3, 4, 1).contiguous() for head in self.heads)
