"""Trilinear sampling of a channels-last volume in Triton: forward, backward and double backward.

Each program takes BLOCK_P points and all channels, walks the 8 corners of their cells (unrolled at compile
time) and reads one contiguous channel row per corner. The per-corner weight, its gradient and its mixed
second derivatives are formed in registers from the fractional position, so nothing of size
(points x 8) is stored. Gradients to the volume are scattered with atomic adds. The maths and the
autograd wiring are shared with the PyTorch reference in :mod:`renderer.trilinear`; this module only
supplies the three computations (``TRITON_IMPL``).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import triton
import triton.language as tl

BLOCK_P = 16  # points per program: the fastest of 16-256 with the eikonal double backward on an H200 (results/perf)


@triton.jit
def _axis(p, n):
    """Lower/upper corner index, fractional position and clamp-gradient mask along one axis of size n."""
    inside = ((p > 0.0) & (p < n - 1.0)).to(tl.float32)
    q = tl.minimum(tl.maximum(p, 0.0), n - 1.0)
    base = tl.minimum(tl.floor(q), tl.maximum(n - 2.0, 0.0))
    lo = base.to(tl.int64)
    hi = tl.minimum(lo + 1, n - 1)
    return lo, hi, q - base, inside


@triton.jit
def _points(points_ptr, pid, M, P, nx, ny, nz, BLOCK_P: tl.constexpr):
    idx = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = idx < M
    px = tl.load(points_ptr + idx * 3, mask=pmask, other=0.0).to(tl.float32)
    py = tl.load(points_ptr + idx * 3 + 1, mask=pmask, other=0.0).to(tl.float32)
    pz = tl.load(points_ptr + idx * 3 + 2, mask=pmask, other=0.0).to(tl.float32)
    lx, hx, fx, ix = _axis(px, nx)
    ly, hy, fy, iy = _axis(py, ny)
    lz, hz, fz, iz = _axis(pz, nz)
    batch = (idx // P).to(tl.int64)
    return idx, pmask, lx, hx, fx, ix, ly, hy, fy, iy, lz, hz, fz, iz, batch


@triton.jit
def _rows(ptr, idx, pmask, C, BLOCK_C: tl.constexpr):
    """The (BLOCK_P, BLOCK_C) channel rows of the block's points in a (M, C) tensor, and their mask."""
    ch = tl.arange(0, BLOCK_C)
    mask = pmask[:, None] & (ch < C)[None, :]
    return tl.load(ptr + idx[:, None] * C + ch[None, :], mask=mask, other=0.0).to(tl.float32), ch, mask


@triton.jit
def _store_xyz(ptr, idx, pmask, x, y, z):
    tl.store(ptr + idx * 3, x, mask=pmask)
    tl.store(ptr + idx * 3 + 1, y, mask=pmask)
    tl.store(ptr + idx * 3 + 2, z, mask=pmask)


@triton.jit
def _corner(k: tl.constexpr, lx, hx, fx, ly, hy, fy, lz, hz, fz, batch, nx, ny, nz):
    """Row, weight, weight gradient (x, y, z) and mixed second derivatives (xy, xz, yz) of corner k."""
    bx = k & 1  # arithmetic on a constexpr folds at compile time
    by = (k >> 1) & 1
    bz = (k >> 2) & 1
    cx = lx + (hx - lx) * bx
    cy = ly + (hy - ly) * by
    cz = lz + (hz - lz) * bz
    row = ((batch * nz + cz) * ny + cy) * nx + cx
    wx = fx * bx + (1.0 - fx) * (1 - bx)
    wy = fy * by + (1.0 - fy) * (1 - by)
    wz = fz * bz + (1.0 - fz) * (1 - bz)
    sx = 2 * bx - 1
    sy = 2 * by - 1
    sz = 2 * bz - 1
    return (row, wx * wy * wz, sx * wy * wz, wx * sy * wz, wx * wy * sz,
            sx * sy * wz, sx * wy * sz, wx * sy * sz)


@triton.jit
def _trilinear_fwd(volume_ptr, points_ptr, out_ptr, M, P, C, nx, ny, nz,
                   BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    idx, pmask, lx, hx, fx, _, ly, hy, fy, _, lz, hz, fz, _, batch = _points(
        points_ptr, tl.program_id(0), M, P, nx, ny, nz, BLOCK_P)
    ch = tl.arange(0, BLOCK_C)
    mask = pmask[:, None] & (ch < C)[None, :]
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    for k in tl.static_range(8):
        row, w, _, _, _, _, _, _ = _corner(k, lx, hx, fx, ly, hy, fy, lz, hz, fz, batch, nx, ny, nz)
        v = tl.load(volume_ptr + row[:, None] * C + ch[None, :], mask=mask, other=0.0).to(tl.float32)
        acc += w[:, None] * v
    tl.store(out_ptr + idx[:, None] * C + ch[None, :], acc, mask=mask)


@triton.jit
def _trilinear_bwd(volume_ptr, points_ptr, gout_ptr, gvol_ptr, gpts_ptr, M, P, C, nx, ny, nz,
                   NEED_VOLUME: tl.constexpr, NEED_POINTS: tl.constexpr,
                   BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    idx, pmask, lx, hx, fx, ix, ly, hy, fy, iy, lz, hz, fz, iz, batch = _points(
        points_ptr, tl.program_id(0), M, P, nx, ny, nz, BLOCK_P)
    g, ch, mask = _rows(gout_ptr, idx, pmask, C, BLOCK_C)
    gx = tl.zeros([BLOCK_P], dtype=tl.float32)
    gy = tl.zeros([BLOCK_P], dtype=tl.float32)
    gz = tl.zeros([BLOCK_P], dtype=tl.float32)
    for k in tl.static_range(8):
        row, w, dx, dy, dz, _, _, _ = _corner(k, lx, hx, fx, ly, hy, fy, lz, hz, fz, batch, nx, ny, nz)
        if NEED_VOLUME:
            tl.atomic_add(gvol_ptr + row[:, None] * C + ch[None, :], w[:, None] * g, mask=mask)
        if NEED_POINTS:
            v = tl.load(volume_ptr + row[:, None] * C + ch[None, :], mask=mask, other=0.0).to(tl.float32)
            dot = tl.sum(v * g, axis=1)
            gx += dx * dot
            gy += dy * dot
            gz += dz * dot
    if NEED_POINTS:
        _store_xyz(gpts_ptr, idx, pmask, gx * ix, gy * iy, gz * iz)


@triton.jit
def _trilinear_dbwd(volume_ptr, points_ptr, gout_ptr, ggvol_ptr, ggpts_ptr, dgout_ptr, dvol_ptr, dpts_ptr,
                    M, P, C, nx, ny, nz, HAS_GGV: tl.constexpr, HAS_GGP: tl.constexpr,
                    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    idx, pmask, lx, hx, fx, ix, ly, hy, fy, iy, lz, hz, fz, iz, batch = _points(
        points_ptr, tl.program_id(0), M, P, nx, ny, nz, BLOCK_P)
    g, ch, mask = _rows(gout_ptr, idx, pmask, C, BLOCK_C)
    if HAS_GGP:  # the gradient to points was masked by the clamp: so is what flows back into it
        ggx = tl.load(ggpts_ptr + idx * 3, mask=pmask, other=0.0).to(tl.float32) * ix
        ggy = tl.load(ggpts_ptr + idx * 3 + 1, mask=pmask, other=0.0).to(tl.float32) * iy
        ggz = tl.load(ggpts_ptr + idx * 3 + 2, mask=pmask, other=0.0).to(tl.float32) * iz
    d_g = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    dpx = tl.zeros([BLOCK_P], dtype=tl.float32)
    dpy = tl.zeros([BLOCK_P], dtype=tl.float32)
    dpz = tl.zeros([BLOCK_P], dtype=tl.float32)
    for k in tl.static_range(8):
        row, w, dx, dy, dz, dxy, dxz, dyz = _corner(k, lx, hx, fx, ly, hy, fy, lz, hz, fz, batch, nx, ny, nz)
        offs = row[:, None] * C + ch[None, :]
        if HAS_GGV:
            ggv = tl.load(ggvol_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            d_g += w[:, None] * ggv
            a = tl.sum(ggv * g, axis=1)
            dpx += dx * a
            dpy += dy * a
            dpz += dz * a
        if HAS_GGP:
            v = tl.load(volume_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            q = dx * ggx + dy * ggy + dz * ggz
            d_g += q[:, None] * v
            tl.atomic_add(dvol_ptr + offs, q[:, None] * g, mask=mask)
            b = tl.sum(v * g, axis=1)
            dpx += (dxy * ggy + dxz * ggz) * b
            dpy += (dxy * ggx + dyz * ggz) * b
            dpz += (dxz * ggx + dyz * ggy) * b
    tl.store(dgout_ptr + idx[:, None] * C + ch[None, :], d_g, mask=mask)
    _store_xyz(dpts_ptr, idx, pmask, dpx * ix, dpy * iy, dpz * iz)


def _launch(volume: torch.Tensor, points: torch.Tensor) -> tuple[tuple[int], dict]:
    b, nz, ny, nx, c = volume.shape
    m = points.shape[0] * points.shape[1]
    grid = (triton.cdiv(m, BLOCK_P),)
    return grid, dict(M=m, P=points.shape[1], C=c, nx=nx, ny=ny, nz=nz, BLOCK_P=BLOCK_P,
                      BLOCK_C=max(2, triton.next_power_of_2(c)))


def _f32(shape: torch.Size | tuple, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros(shape, device=like.device, dtype=torch.float32)


def _forward(volume: torch.Tensor, points: torch.Tensor, memo: dict | None = None) -> torch.Tensor:
    grid, meta = _launch(volume, points)
    out = _f32((*points.shape[:2], volume.shape[-1]), volume)
    _trilinear_fwd[grid](volume.contiguous(), points.contiguous(), out, **meta)
    return out.to(volume.dtype)


def _backward(volume: torch.Tensor, points: torch.Tensor, grad_out: torch.Tensor, need_volume: bool,
              need_points: bool, memo: dict | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    grid, meta = _launch(volume, points)
    g_volume, g_points = _f32(volume.shape, volume), _f32(points.shape, points)
    _trilinear_bwd[grid](volume.contiguous(), points.contiguous(), grad_out.contiguous(), g_volume, g_points,
                         NEED_VOLUME=need_volume, NEED_POINTS=need_points, **meta)
    return (g_volume.to(volume.dtype) if need_volume else None, g_points.to(points.dtype) if need_points else None)


def _double_backward(volume: torch.Tensor, points: torch.Tensor, grad_out: torch.Tensor,
                     gg_volume: torch.Tensor | None, gg_points: torch.Tensor | None, memo: dict | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grid, meta = _launch(volume, points)
    d_grad, d_volume, d_points = _f32(grad_out.shape, grad_out), _f32(volume.shape, volume), _f32(points.shape, points)
    ggv = gg_volume.contiguous() if gg_volume is not None else d_volume  # a placeholder pointer when absent
    ggp = gg_points.contiguous() if gg_points is not None else d_points
    _trilinear_dbwd[grid](volume.contiguous(), points.contiguous(), grad_out.contiguous(), ggv, ggp, d_grad, d_volume,
                          d_points, HAS_GGV=gg_volume is not None, HAS_GGP=gg_points is not None, **meta)
    return d_grad.to(grad_out.dtype), d_volume.to(volume.dtype), d_points.to(points.dtype)


TRITON_IMPL = SimpleNamespace(forward=_forward, backward=_backward, double_backward=_double_backward)  # memo unused
