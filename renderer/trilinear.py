"""Trilinear sampling of a dense feature volume at continuous points, written from gathers and weights.

Unlike ``F.grid_sample``, every step here is plain autograd arithmetic, so the op can be differentiated
twice (the eikonal loss differentiates dSDF/dx again) on any device, and it is the ground truth for the
Triton kernel that replaces it on CUDA.

Layout: ``volume`` (B, Z, Y, X, C) channels-last, so one corner of one point is one contiguous row;
``points`` (B, P, 3) as (x, y, z) in *index* coordinates (cell centre i at coordinate i; see
``renderer.volume.GridSpec`` for the world mapping). Points outside are clamped to the border cells.
"""

from __future__ import annotations

import torch


def trilinear_reference(volume: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(B, Z, Y, X, C) sampled at (B, P, 3) -> (B, P, C)."""
    b, nz, ny, nx, c = volume.shape
    sizes = points.new_tensor([nx, ny, nz])
    p = torch.minimum(torch.maximum(points, torch.zeros_like(sizes)), sizes - 1)
    base = torch.minimum(p.detach().floor(), (sizes - 2).clamp(min=0))  # lower corner, so that frac <= 1
    frac = p - base
    base = base.long()
    hi = torch.minimum(base + 1, (sizes - 1).long())
    flat = volume.reshape(b, nz * ny * nx, c)
    out = points.new_zeros(b, points.shape[1], c, dtype=volume.dtype)
    for corner in range(8):
        pick = [(corner >> k) & 1 for k in range(3)]  # x, y, z bits
        idx = [hi[..., k] if pick[k] else base[..., k] for k in range(3)]
        w = torch.ones_like(frac[..., 0])
        for k in range(3):
            w = w * (frac[..., k] if pick[k] else 1 - frac[..., k])
        rows = (idx[2] * ny + idx[1]) * nx + idx[0]  # (B, P)
        out = out + w[..., None] * torch.gather(flat, 1, rows[..., None].expand(-1, -1, c))
    return out
