"""Fields decoded from the feature volume: SDF (+ geometry features), colour, semantic embedding; NeuS alpha.

A field is anything with the :class:`SurfaceField` methods, so the renderer can be driven by the learned
:class:`VolumeField` or by an analytic surface (the geometry tests use a sphere and a plane).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from backbones.structures import GridSpec
from renderer.trilinear import trilinear


class SurfaceField(Protocol):
    def sdf(self, points: torch.Tensor, batch_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, S, 3) world points of rays in scenes ``batch_index`` (R,) -> SDF (R, S) and geometry features."""

    def color(self, points: torch.Tensor, batch_index: torch.Tensor, gradients: torch.Tensor,
              geometry: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """RGB (R, S, 3) in [0, 1] and, where the field has one, a semantic embedding (R, S, D)."""

    def inv_s(self) -> torch.Tensor:
        """NeuS sharpness: a scalar tensor."""


def mlp(dims: list[int], activation: nn.Module) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(activation)
    return nn.Sequential(*layers)


class NeuSVariance(nn.Module):
    """The single learnable sharpness of NeuS: inv_s = exp(10 v), v initialised at 0.3 (inv_s ~ 20)."""

    def __init__(self, init: float = 0.3) -> None:
        super().__init__()
        self.variance = nn.Parameter(torch.tensor(float(init)))

    def forward(self) -> torch.Tensor:
        return torch.exp(self.variance * 10.0).clamp(1e-6, 1e6)


def neus_alpha(sdf: torch.Tensor, gradients: torch.Tensor, directions: torch.Tensor, deltas: torch.Tensor,
               inv_s: torch.Tensor) -> torch.Tensor:
    """NeuS discrete opacity of each sample's interval, from the SDF estimated at its two ends (R, S)."""
    cos = (directions[:, None, :] * gradients).sum(-1)
    slope = -F.relu(-cos)  # the SDF decreases along a ray entering a surface; never let it increase
    prev_cdf = torch.sigmoid((sdf - slope * deltas * 0.5) * inv_s)
    next_cdf = torch.sigmoid((sdf + slope * deltas * 0.5) * inv_s)
    return ((prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)).clamp(0.0, 1.0)


@dataclass(frozen=True)
class FieldConfig:
    """Decoder sizes (reference: 64 + 64 volume channels, hidden 128, Softplus beta 100, 64 geometry features)."""

    sdf_channels: int = 64
    color_channels: int = 64
    hidden: int = 128
    layers: int = 2
    geometry_features: int = 64
    softplus_beta: float = 100.0
    semantic_dim: int = 0  # 0: no semantic decoder
    variance_init: float = 0.3


class VolumeField(nn.Module):
    """Decoders over a dense feature volume whose channels are split into an SDF half and a colour half.

    Call :meth:`bind` with the volume of the current batch before rendering.
    """

    def __init__(self, config: FieldConfig = FieldConfig()) -> None:  # noqa: B008
        super().__init__()
        self.config = config
        act = nn.Softplus(beta=config.softplus_beta)
        hidden = [config.hidden] * config.layers
        self.sdf_decoder = mlp([config.sdf_channels + 3, *hidden, 1 + config.geometry_features], act)
        color_in = 3 + config.color_channels + config.geometry_features
        self.color_decoder = mlp([color_in + 3, *hidden, 3], nn.ReLU())
        semantic = mlp([color_in, *hidden, config.semantic_dim], nn.ReLU()) if config.semantic_dim else None
        self.semantic_decoder = semantic
        self.variance = NeuSVariance(config.variance_init)
        self._halves: tuple[torch.Tensor, torch.Tensor] | None = None
        self._spec: GridSpec | None = None
        self.backend = "auto"

    def bind(self, volume: torch.Tensor, spec: GridSpec) -> VolumeField:
        """Use ``volume`` (B, Z, Y, X, sdf_channels + color_channels) laid out on ``spec`` until the next bind."""
        expected = self.config.sdf_channels + self.config.color_channels
        if volume.ndim != 5 or volume.shape[-1] != expected:
            raise ValueError(f"expected a (B, Z, Y, X, {expected}) volume, got {tuple(volume.shape)}")
        if tuple(volume.shape[1:4]) != tuple(reversed(spec.shape)):
            raise ValueError(f"volume cells {tuple(volume.shape[1:4])} do not match grid {spec.shape} (X, Y, Z)")
        split = self.config.sdf_channels  # contiguous halves: every sampling call reads whole rows
        self._halves, self._spec = (volume[..., :split].contiguous(), volume[..., split:].contiguous()), spec
        return self

    def _sample(self, points: torch.Tensor, batch_index: torch.Tensor, half: int) -> torch.Tensor:
        """Features of the SDF (0) or colour (1) half at (R, S, 3) points, each ray reading its own scene."""
        if self._halves is None:
            raise RuntimeError("VolumeField.bind(volume, spec) must be called before rendering")
        volume = self._halves[half]
        index = self._spec.world_to_index(points)
        out = points.new_empty(*points.shape[:2], volume.shape[-1])
        for b in batch_index.unique().tolist():
            rays = batch_index == b
            if rays.all():
                return trilinear(volume[b:b + 1], index.reshape(1, -1, 3), self.backend).reshape(out.shape)
            out[rays] = trilinear(volume[b:b + 1], index[rays].reshape(1, -1, 3), self.backend).reshape(
                int(rays.sum()), points.shape[1], -1)
        return out

    def sdf(self, points: torch.Tensor, batch_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self._sample(points, batch_index, 0)
        h = self.sdf_decoder(torch.cat([feats, points], -1))
        return h[..., 0], h[..., 1:]

    def color(self, points: torch.Tensor, batch_index: torch.Tensor, gradients: torch.Tensor,
              geometry: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        feats = self._sample(points, batch_index, 1)
        shared = torch.cat([gradients, feats, geometry], -1)
        view = directions[:, None, :].expand(*points.shape[:2], 3)
        rgb = torch.sigmoid(self.color_decoder(torch.cat([shared, view], -1)))
        semantic = None if self.semantic_decoder is None else self.semantic_decoder(shared)
        return rgb, semantic

    def inv_s(self) -> torch.Tensor:
        return self.variance()
