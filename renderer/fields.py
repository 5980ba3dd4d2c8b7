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
from renderer.trilinear import trilinear, trilinear_points_grad


class SurfaceField(Protocol):
    def sdf(self, points: torch.Tensor, batch_index: torch.Tensor, geometry: bool = True
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(R, S, 3) world points of rays in scenes ``batch_index`` (R,) -> SDF (R, S) and geometry features."""

    def sdf_and_gradient(self, points: torch.Tensor, batch_index: torch.Tensor, create_graph: bool
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SDF, geometry features and dSDF/dx (R, S, 3), differentiable again when ``create_graph``."""

    def color(self, points: torch.Tensor, batch_index: torch.Tensor, gradients: torch.Tensor,
              geometry: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """RGB (R, S, 3) in [0, 1] and, where the field has one, a semantic embedding (R, S, D)."""

    def inv_s(self) -> torch.Tensor:
        """NeuS sharpness: a scalar tensor."""


def gradient_by_autograd(field: SurfaceField, points: torch.Tensor, batch_index: torch.Tensor, create_graph: bool
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``sdf_and_gradient`` for any field, by differentiating its ``sdf`` with autograd."""
    with torch.enable_grad():  # the SDF gradient is part of the render, even for inference
        points = points.detach().requires_grad_(True)
        sdf, geometry = field.sdf(points, batch_index)
        (gradients,) = torch.autograd.grad(sdf, points, torch.ones_like(sdf), create_graph=create_graph)
    return sdf, geometry, gradients


class SplitInputMLP(nn.Module):
    """An MLP whose first layer is one linear map per input, summed (as PonderV2's decoders feed theirs).

    Inputs broadcast against each other, so a per-ray input (the view direction, (R, 1, 3)) is mapped once
    per ray, and no (rays x samples x all-inputs) concatenation, nor its sliced gradient, is materialised.
    ``out_dim`` 0 leaves the last hidden activation as the output.
    """

    def __init__(self, in_dims: list[int], hidden: int, layers: int, out_dim: int, activation: nn.Module) -> None:
        super().__init__()
        self.inputs = nn.ModuleList(nn.Linear(d, hidden, bias=i == 0) for i, d in enumerate(in_dims))
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers - 1))
        self.activation = activation
        self.out = nn.Linear(hidden, out_dim) if out_dim else None

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        h = self.inputs[0](inputs[0])
        for layer, x in zip(self.inputs[1:], inputs[1:], strict=True):
            h = h + layer(x)
        h = self.activation(h)
        for layer in self.hidden:
            h = self.activation(layer(h))
        return h if self.out is None else self.out(h)


class SDFDecoder(nn.Module):
    """Volume features -> hidden (Softplus) -> SDF and geometry features, plus a linear skip from the features.

    As PonderV2's indoor decoder computes it: the SDF depends on position only through the volume (its
    position input is multiplied by zero), so the geometry must be in the features the backbone lifts. Its two
    stacked linear maps before the activation are one linear map; this decoder has one (2.45x fewer
    multiply-adds per sample for the same function).
    """

    def __init__(self, in_dim: int, hidden: int, layers: int, geometry_features: int, beta: float) -> None:
        super().__init__()
        self.trunk = SplitInputMLP([in_dim], hidden, layers, 0, nn.Softplus(beta=beta))
        self.head = nn.Linear(hidden, 1 + geometry_features)
        self.skip = nn.Linear(in_dim, 1 + geometry_features, bias=False)

    def forward(self, feats: torch.Tensor, geometry: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.head(self.trunk(feats)) + self.skip(feats)
        return out[..., 0], out[..., 1:] if geometry else None


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
    layers: int = 1  # PonderV2 indoor: one hidden block
    geometry_features: int = 64
    softplus_beta: float = 100.0
    semantic_dim: int = 0  # 0: no semantic decoder
    variance_init: float = 0.3


class VolumeField(nn.Module):
    """Decoders over two dense feature volumes on one grid: an SDF volume and a colour volume.

    Call :meth:`bind` with the volumes of the current batch before rendering. The SDF gradient is
    assembled from the decoder's autograd gradient and :func:`trilinear_points_grad`, so that no volume
    gradient is built and discarded on the way (see :meth:`sdf_and_gradient`).
    """

    def __init__(self, config: FieldConfig = FieldConfig()) -> None:  # noqa: B008
        super().__init__()
        self.config = config
        c = config
        self.sdf_decoder = SDFDecoder(c.sdf_channels, c.hidden, c.layers, c.geometry_features, c.softplus_beta)
        shared = [3, c.color_channels, c.geometry_features]  # SDF gradient, colour features, geometry features
        # colour and semantics are linear in their inputs, as PonderV2's (n_blocks=0): a decoder with little
        # capacity leaves the work to the volume, i.e. to the features the backbone learns
        self.color_decoder = SplitInputMLP([*shared, 3], c.hidden, 1, 3, nn.Identity())  # + view direction
        semantic = SplitInputMLP(shared, c.hidden, 1, c.semantic_dim, nn.Identity()) if c.semantic_dim else None
        self.semantic_decoder = semantic
        self.variance = NeuSVariance(config.variance_init)
        self._halves: tuple[torch.Tensor, torch.Tensor] | None = None
        self._spec: GridSpec | None = None
        self.backend = "auto"

    def bind(self, sdf_volume: torch.Tensor, color_volume: torch.Tensor, spec: GridSpec) -> VolumeField:
        """Use (B, Z, Y, X, C) volumes laid out on ``spec`` (channels-last, contiguous) until the next bind."""
        for name, volume, channels in (("SDF", sdf_volume, self.config.sdf_channels),
                                       ("colour", color_volume, self.config.color_channels)):
            if volume.ndim != 5 or volume.shape[-1] != channels:
                raise ValueError(f"expected a (B, Z, Y, X, {channels}) {name} volume, got {tuple(volume.shape)}")
            if tuple(volume.shape[1:4]) != tuple(reversed(spec.shape)):
                raise ValueError(f"{name} volume cells {tuple(volume.shape[1:4])} do not match grid {spec.shape}"
                                 " (X, Y, Z)")
        self._halves, self._spec = (sdf_volume.contiguous(), color_volume.contiguous()), spec
        return self

    def _per_scene(self, half: int, points: torch.Tensor, batch_index: torch.Tensor, op, extra=None  # noqa: ANN001
                   ) -> torch.Tensor:
        """Apply ``op(volume, index points[, extra])`` to the SDF (0) or colour (1) volume, scene by scene."""
        if self._halves is None:
            raise RuntimeError("VolumeField.bind(sdf_volume, color_volume, spec) must be called before rendering")
        volume, index = self._halves[half], self._spec.world_to_index(points)
        args = (index,) if extra is None else (index, extra)
        scenes = batch_index.unique().tolist()
        if len(scenes) == 1:
            b = scenes[0]
            return op(volume[b:b + 1], *(a.reshape(1, -1, a.shape[-1]) for a in args)).reshape(*points.shape[:2], -1)
        parts = []
        for b in scenes:
            rays = batch_index == b
            res = op(volume[b:b + 1], *(a[rays].reshape(1, -1, a.shape[-1]) for a in args))
            parts.append((rays, res.reshape(int(rays.sum()), points.shape[1], -1)))
        out = parts[0][1].new_empty(*points.shape[:2], parts[0][1].shape[-1])
        for rays, res in parts:
            out[rays] = res
        return out

    def _sample(self, points: torch.Tensor, batch_index: torch.Tensor, half: int) -> torch.Tensor:
        return self._per_scene(half, points, batch_index, lambda v, p: trilinear(v, p, self.backend))

    def sdf(self, points: torch.Tensor, batch_index: torch.Tensor, geometry: bool = True
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """SDF and (unless ``geometry`` is False, as when only sampling) the geometry features."""
        return self.sdf_decoder(self._sample(points, batch_index, 0), geometry)

    def sdf_and_gradient(self, points: torch.Tensor, batch_index: torch.Tensor, create_graph: bool
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """dSDF/dx = dSDF/dfeatures . dfeatures/dx (trilinear_points_grad): the SDF sees x only through the volume."""
        points = points.detach()
        with torch.enable_grad():
            feats = self._sample(points, batch_index, 0)
            if not feats.requires_grad:  # a volume without gradient (inference): still differentiate the decoder
                feats = feats.detach().requires_grad_(True)
            sdf, geometry = self.sdf_decoder(feats)
            (d_feats,) = torch.autograd.grad(sdf, feats, torch.ones_like(sdf), create_graph=create_graph)
            d_index = self._per_scene(0, points, batch_index,
                                      lambda v, p, g: trilinear_points_grad(v, p, g, self.backend), d_feats)
            lo, hi = points.new_tensor(self._spec.lo), points.new_tensor(self._spec.hi)
            gradients = d_index * (points.new_tensor(self._spec.shape) / (hi - lo))
        return sdf, geometry, gradients

    def color(self, points: torch.Tensor, batch_index: torch.Tensor, gradients: torch.Tensor,
              geometry: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        feats = self._sample(points, batch_index, 1)
        rgb = torch.sigmoid(self.color_decoder(gradients, feats, geometry, directions[:, None, :]))
        semantic = None if self.semantic_decoder is None else self.semantic_decoder(gradients, feats, geometry)
        return rgb, semantic

    def inv_s(self) -> torch.Tensor:
        return self.variance()
