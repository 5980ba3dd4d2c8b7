"""Dense projections from the scattered feature volume to the renderer's SDF + colour volumes: a 3D U-Net
(PonderV2 indoor) or one convolution (PonderV2 outdoor, :class:`SimpleConv3D`).

U-Net reference: 96 backbone channels in, 128 out split 64 SDF + 64 colour, 4 levels. The split is two 1x1
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


class SimpleConv3D(nn.Module):
    """PonderV2's outdoor projection (``SimpleConv3D-v1m1``): one 3x3x3 convolution, BatchNorm and ReLU. Its one
    volume is both the SDF and the colour volume (the original's ``share_volume``), so the outdoor volume of
    180 x 180 x 5 cells costs one convolution instead of a U-Net."""

    def __init__(self, in_channels: int = 96, out_channels: int = 32) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv3d(in_channels, out_channels, 3, padding=1), nn.BatchNorm3d(out_channels),
                                  nn.ReLU(inplace=True))

    def forward(self, volume: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Z, Y, X, in_channels) -> the same (B, Z, Y, X, out_channels) volume twice (SDF, colour)."""
        out = self.conv(volume.permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1).contiguous()
        return out, out
