"""Lifting multi-view 2D feature maps into a 3D feature volume, so a 2D backbone can feed the 3D renderer.

Each point (or voxel centre) is projected into every view; views that see it (in front of the camera,
inside the image) contribute a bilinear sample of their feature map, and the contributions are averaged.
The visibility count is returned too, so callers can tell unseen voxels (count 0) from dark features.

Conventions: pixel (u, v) has its centre at integer coordinates (OpenCV); a feature map of stride s covers
the image exactly (H = s * h), and cam-to-world poses use OpenCV camera axes (x right, y down, z forward).
The volume is laid out channels-last (B, Z, Y, X, C), the renderer's volume layout, with cell centres at
``lo + (i + 0.5) * (hi - lo) / n`` per axis: those of :class:`backbones.structures.GridSpec`, the renderer's grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from backbones.structures import GridSpec


def sample_views_at_points(points: torch.Tensor, features: torch.Tensor, stride: int, intrinsics: torch.Tensor,
                           cam_to_world: torch.Tensor, image_size: tuple[int, int], min_depth: float = 0.1
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean feature over the views that see each point.

    points (B, P, 3); features (B, V, C, h, w); intrinsics (B, V, 3, 3); cam_to_world (B, V, 4, 4);
    image_size (H, W) in pixels. Returns features (B, P, C) and visibility counts (B, P).
    """
    b, v, c, h, w = features.shape
    height, width = image_size
    if (h * stride, w * stride) != (height, width):
        raise ValueError(f"feature maps {h}x{w} at stride {stride} do not cover images of {height}x{width}")
    world_to_cam = torch.linalg.inv(cam_to_world.to(points.dtype))  # (B, V, 4, 4)
    cam = torch.einsum("bvij,bpj->bvpi", world_to_cam[..., :3, :3], points) + world_to_cam[..., None, :3, 3]
    z = cam[..., 2]
    pix = torch.einsum("bvij,bvpj->bvpi", intrinsics.to(points.dtype), cam)
    u, vv = pix[..., 0] / z.clamp(min=1e-6), pix[..., 1] / z.clamp(min=1e-6)
    visible = (z > min_depth) & (u >= 0) & (u <= width - 1) & (vv >= 0) & (vv <= height - 1)
    # normalised coordinates for align_corners=False: -1 and 1 are the outer edges of the image
    grid = torch.stack([(u + 0.5) / width * 2 - 1, (vv + 0.5) / height * 2 - 1], dim=-1)
    grid = torch.where(visible[..., None], grid, torch.zeros_like(grid))
    sampled = F.grid_sample(features.flatten(0, 1), grid.flatten(0, 1)[:, :, None, :].to(features.dtype),
                            mode="bilinear", padding_mode="border", align_corners=False)  # (B*V, C, P, 1)
    sampled = sampled[..., 0].unflatten(0, (b, v)) * visible[:, :, None, :]  # (B, V, C, P)
    count = visible.sum(1)
    mean = sampled.sum(1) / count.clamp(min=1)[:, None, :]
    return mean.transpose(1, 2), count


def voxel_centers(lo: tuple[float, float, float], hi: tuple[float, float, float], shape: tuple[int, int, int],
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Cell centres (Z, Y, X, 3) as (x, y, z) points of a box split into ``shape`` = (X, Y, Z) cells."""
    return GridSpec(lo, hi, shape).centers(device)


def lift_to_volume(features: torch.Tensor, stride: int, intrinsics: torch.Tensor, cam_to_world: torch.Tensor,
                   image_size: tuple[int, int], lo: tuple[float, float, float], hi: tuple[float, float, float],
                   shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature volume (B, Z, Y, X, C) over the box [lo, hi] with (X, Y, Z) = ``shape`` cells, and counts."""
    centers = voxel_centers(lo, hi, shape, features.device).to(features.dtype)
    b = features.shape[0]
    pts = centers.reshape(1, -1, 3).expand(b, -1, -1)
    mean, count = sample_views_at_points(pts, features, stride, intrinsics, cam_to_world, image_size)
    nx, ny, nz = shape
    return mean.reshape(b, nz, ny, nx, -1), count.reshape(b, nz, ny, nx)
