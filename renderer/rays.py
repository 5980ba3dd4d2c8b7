"""Rays from posed RGB-D views: where to look, and what the real images say along each ray.

Cameras follow OpenCV (x right, y down, z forward, pixel (u, v) centred at integer coordinates, as the
loaders' back-projection assumes); ``cam_to_world`` maps camera to scene coordinates. Depth maps hold
*plane* depth (z in the camera); the renderer works in distance along a unit ray, so a target depth d at
pixel (u, v) becomes d * |K^-1 (u, v, 1)|.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass(frozen=True)
class RayBundle:
    """R rays with their sampling range and (when known) the real colour and depth they should render."""

    origins: torch.Tensor  # (R, 3)
    directions: torch.Tensor  # (R, 3) unit length
    near: torch.Tensor  # (R,)
    far: torch.Tensor  # (R,)
    batch_index: torch.Tensor  # (R,) int64, which scene of the batch (and which volume) the ray belongs to
    rgb: torch.Tensor | None = None  # (R, 3) in [0, 1]
    depth: torch.Tensor | None = None  # (R,) distance along the ray
    label: torch.Tensor | None = None  # (R,) int64 class of the pixel, -1 unknown

    def __len__(self) -> int:
        return self.origins.shape[0]

    def _map(self, fn) -> RayBundle:  # noqa: ANN001
        return replace(self, **{f.name: fn(getattr(self, f.name)) for f in fields(self)
                                if getattr(self, f.name) is not None})

    def to(self, device: torch.device | str) -> RayBundle:
        return self._map(lambda t: t.to(device))

    def __getitem__(self, index: torch.Tensor | slice) -> RayBundle:
        return self._map(lambda t: t[index])

    @staticmethod
    def cat(bundles: list[RayBundle]) -> RayBundle:
        first = bundles[0]
        return replace(first, **{f.name: torch.cat([getattr(b, f.name) for b in bundles])
                                 for f in fields(first) if getattr(first, f.name) is not None})


def pixel_rays(intrinsics: torch.Tensor, cam_to_world: torch.Tensor, u: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Origins, unit directions and plane-depth-to-distance factors of pixels (u, v) (integer pixel indices).

    ``intrinsics`` (R, 3, 3) and ``cam_to_world`` (R, 4, 4) are per ray.
    """
    pix = torch.stack([u.to(intrinsics.dtype), v.to(intrinsics.dtype), torch.ones_like(u, dtype=intrinsics.dtype)], -1)
    cam = torch.linalg.solve(intrinsics, pix[..., None])[..., 0]  # z = 1
    scale = cam.norm(dim=-1)
    directions = torch.einsum("rij,rj->ri", cam_to_world[:, :3, :3], cam / scale[:, None])
    return cam_to_world[:, :3, 3], directions, scale


def near_far_from_box(origins: torch.Tensor, directions: torch.Tensor, lo: tuple[float, float, float],
                      hi: tuple[float, float, float], near_min: float = 0.01
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entry and exit distances of rays through an axis-aligned box (slab test); ``hit`` is False for a miss."""
    inv = 1.0 / torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    t0 = (origins.new_tensor(lo) - origins) * inv
    t1 = (origins.new_tensor(hi) - origins) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp(min=near_min)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far, far > near


def sample_rays(image: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor, cam_to_world: torch.Tensor,
                rays_per_view: int, box: tuple[tuple[float, float, float], tuple[float, float, float]],
                near_min: float = 0.01, generator: torch.Generator | None = None, batch_index: int = 0,
                labels: torch.Tensor | None = None) -> RayBundle:
    """Draw ``rays_per_view`` rays from each view, only at pixels with valid depth (> 0).

    ``image`` (V, H, W, 3) in [0, 1], ``depth`` (V, H, W) plane depth (0 = invalid), ``intrinsics`` (V, 3, 3),
    ``cam_to_world`` (V, 4, 4), optional per-pixel ``labels`` (V, H, W). Pixels are drawn without
    replacement (all of them when a view has fewer valid pixels). Rays that miss ``box`` are dropped.
    """
    picks = []
    for view in range(depth.shape[0]):
        valid = torch.nonzero(depth[view].reshape(-1) > 0)[:, 0]
        order = torch.randperm(len(valid), generator=generator, device="cpu")[:rays_per_view]
        picks.append(torch.stack([torch.full_like(order, view), valid[order.to(valid.device)]], -1))
    pick = torch.cat(picks).to(depth.device)
    view, flat = pick[:, 0], pick[:, 1]
    w = depth.shape[2]
    v, u = flat // w, flat % w
    dtype = torch.float32
    origins, directions, scale = pixel_rays(intrinsics[view].to(dtype), cam_to_world[view].to(dtype), u, v)
    near, far, hit = near_far_from_box(origins, directions, *box, near_min=near_min)
    bundle = RayBundle(origins=origins, directions=directions, near=near, far=far,
                       batch_index=torch.full_like(view, batch_index),
                       rgb=image[view, v, u].to(dtype), depth=depth[view, v, u].to(dtype) * scale,
                       label=None if labels is None else labels[view, v, u].long())
    return bundle[hit]
