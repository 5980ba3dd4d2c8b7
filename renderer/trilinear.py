"""Trilinear sampling of a dense feature volume at continuous points, with first and second derivatives.

The eikonal loss differentiates dSDF/dx again, so sampling needs a double backward. ``F.grid_sample``'s
double backward is where PonderV2's step spends most of its time (../shared/PERFORMANCE.md), and plain
autograd through gathers keeps an (points x 8 x channels) tensor alive per level. So the op is an
autograd Function with explicit backward and double backward, computed corner by corner (one
(points x channels) temporary at a time). Two implementations share the Functions: this module's
PyTorch one (the reference, the CPU path, checked by gradcheck/gradgradcheck and against grid_sample)
and the Triton kernels in :mod:`renderer.kernels.trilinear`.

Layout: ``volume`` (B, Z, Y, X, C) channels-last, so one corner of one point is one contiguous row;
``points`` (B, P, 3) as (x, y, z) in *index* coordinates (cell centre i at coordinate i; see
``renderer.volume.GridSpec`` for the world mapping). Points outside are clamped to the border cells and
get no gradient there. Derivatives of third order are not supported.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Protocol

import torch
from torch.autograd.function import once_differentiable

from renderer.backend import resolve_backend


@dataclass(frozen=True)
class Corners:
    """The 8 corners of every point: rows of the flattened (B*Z*Y*X, C) volume and the weight derivatives.

    Corner k takes the upper neighbour along axis a (x, y, z) when bit a of k is set.
    """

    rows: torch.Tensor  # (8, M) int64, corner-major so that one corner's rows are contiguous
    weight: torch.Tensor  # (8, M, 1)
    d_weight: torch.Tensor  # (8, M, 3) dw/dx, dw/dy, dw/dz
    d2_weight: torch.Tensor  # (8, M, 3) d2w/dxdy, d2w/dxdz, d2w/dydz (the diagonal is zero: w is multilinear)
    inside: torch.Tensor  # (M, 3) 1 where the clamp passes the gradient


def _outer(z: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(2, M) factors per axis -> (8, M) products, corner k = 4 z + 2 y + x."""
    return (z[:, None, None] * y[None, :, None] * x[None, None, :]).reshape(8, -1)


def corners(points: torch.Tensor, shape: tuple[int, ...], memo: dict | None = None) -> Corners:
    """Corner rows and weights of (B, P, 3) index-space points in a (B, Z, Y, X, C) volume.

    ``memo`` (a dict that lives as long as one forward/backward/double-backward chain, see
    :class:`TrilinearFunction`) keeps them for the chain's later passes; nothing is cached across calls, so a
    caller who changes the points' values (in place, or through ``.data`` as gradcheck does) never gets stale ones.
    """
    if memo is not None and "corners" in memo:
        return memo["corners"]
    b, nz, ny, nx = shape[:4]
    sizes = points.new_tensor([nx, ny, nz])
    p = points.detach().reshape(-1, 3)
    inside = ((p > 0) & (p < sizes - 1)).to(points.dtype)
    p = torch.minimum(p.clamp(min=0), sizes - 1)
    base = torch.minimum(p.floor(), (sizes - 2).clamp(min=0))  # lower corner, so that frac <= 1
    frac = (p - base).T  # (3, M)
    lo = base.long().T
    hi = torch.minimum(lo + 1, (sizes - 1).long()[:, None])
    (lx, ly, lz), (hx, hy, hz) = lo, hi
    batch = torch.arange(b, device=points.device).repeat_interleave(points.shape[1])
    row_z = (batch * nz + torch.stack([lz, hz])) * ny * nx
    rows = (row_z[:, None, None] + (torch.stack([ly, hy]) * nx)[None, :, None] + torch.stack([lx, hx])[None, None, :])
    fx, fy, fz = (torch.stack([1 - f, f]) for f in frac)  # (2, M) factor of the lower and upper corner
    sx = sy = sz = torch.tensor([-1.0, 1.0], dtype=points.dtype, device=points.device)[:, None].expand_as(fx)
    result = Corners(
        rows=rows.reshape(8, -1),
        weight=_outer(fz, fy, fx)[..., None],
        d_weight=torch.stack([_outer(fz, fy, sx), _outer(fz, sy, fx), _outer(sz, fy, fx)], -1),
        d2_weight=torch.stack([_outer(fz, sy, sx), _outer(sz, fy, sx), _outer(sz, sy, fx)], -1),
        inside=inside,
    )
    if memo is not None:
        memo["corners"] = result
    return result


def _mixed(d2: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Hessian-vector product of one corner's weight: (M, 3) pairs (xy, xz, yz) times (M, 3) -> (M, 3)."""
    xy, xz, yz = d2.unbind(-1)
    vx, vy, vz = v.unbind(-1)
    return torch.stack([xy * vy + xz * vz, xy * vx + yz * vz, xz * vx + yz * vy], -1)


class TrilinearImpl(Protocol):
    """The three computations; ``memo`` is per-chain scratch an implementation may use (the reference keeps the
    points' corners there)."""

    def forward(self, volume: torch.Tensor, points: torch.Tensor, memo: dict | None = None) -> torch.Tensor: ...

    def backward(self, volume: torch.Tensor, points: torch.Tensor, grad_out: torch.Tensor, need_volume: bool,
                 need_points: bool, memo: dict | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]: ...

    def double_backward(self, volume: torch.Tensor, points: torch.Tensor, grad_out: torch.Tensor,
                        gg_volume: torch.Tensor | None, gg_points: torch.Tensor | None, memo: dict | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot product (M, C) x (M, C) -> (M, 1), without a (M, C) temporary."""
    return torch.einsum("mc,mc->m", a, b)[:, None]


def _forward(volume: torch.Tensor, points: torch.Tensor, memo: dict | None = None) -> torch.Tensor:
    c = volume.shape[-1]
    cor, flat = corners(points, volume.shape, memo), volume.reshape(-1, c)
    out, rows_k = volume.new_zeros(cor.rows.shape[1], c), volume.new_empty(cor.rows.shape[1], c)
    for k in range(8):
        out.addcmul_(cor.weight[k].to(volume.dtype), torch.index_select(flat, 0, cor.rows[k], out=rows_k))
    return out.reshape(*points.shape[:2], c)


def _backward(volume: torch.Tensor, points: torch.Tensor, grad_out: torch.Tensor, need_volume: bool,
              need_points: bool, memo: dict | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    c = volume.shape[-1]
    cor, flat, g = corners(points, volume.shape, memo), volume.reshape(-1, c), grad_out.reshape(-1, c)
    g_volume = torch.zeros_like(flat) if need_volume else None
    g_points = points.new_zeros(g.shape[0], 3) if need_points else None
    buf = torch.empty_like(g)
    for k in range(8):
        if g_volume is not None:
            g_volume.index_add_(0, cor.rows[k], torch.mul(g, cor.weight[k].to(g.dtype), out=buf))
        if g_points is not None:
            dot = _rowdot(torch.index_select(flat, 0, cor.rows[k], out=buf), g)
            g_points.addcmul_(cor.d_weight[k], dot.to(points.dtype))
    return (None if g_volume is None else g_volume.reshape(volume.shape),
            None if g_points is None else (g_points * cor.inside).reshape(points.shape))


def _double_backward(volume: torch.Tensor, points: torch.Tensor, grad_out: torch.Tensor,
                     gg_volume: torch.Tensor | None, gg_points: torch.Tensor | None, memo: dict | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of <gg_volume, g_volume> + <gg_points, g_points> w.r.t. grad_out, volume and points."""
    c = volume.shape[-1]
    cor, flat, g = corners(points, volume.shape, memo), volume.reshape(-1, c), grad_out.reshape(-1, c)
    ggv = None if gg_volume is None else gg_volume.reshape(-1, c)
    ggp = None if gg_points is None else gg_points.reshape(-1, 3) * cor.inside
    d_grad, d_volume = torch.zeros_like(g), torch.zeros_like(flat)
    d_points = points.new_zeros(g.shape[0], 3)
    buf = torch.empty_like(g)
    for k in range(8):
        rows = cor.rows[k]
        if ggv is not None:
            ggv_k = torch.index_select(ggv, 0, rows, out=buf)
            d_grad.addcmul_(cor.weight[k].to(g.dtype), ggv_k)
            d_points.addcmul_(cor.d_weight[k], _rowdot(ggv_k, g).to(points.dtype))
        if ggp is not None:
            v_k = torch.index_select(flat, 0, rows, out=buf)
            q = (cor.d_weight[k] * ggp).sum(-1, keepdim=True).to(g.dtype)
            d_grad.addcmul_(q, v_k)
            d_points.addcmul_(_mixed(cor.d2_weight[k], ggp), _rowdot(v_k, g).to(points.dtype))
            d_volume.index_add_(0, rows, torch.mul(g, q, out=buf))
    return d_grad.reshape(grad_out.shape), d_volume.reshape(volume.shape), (d_points * cor.inside).reshape(points.shape)


TORCH_IMPL = SimpleNamespace(forward=_forward, backward=_backward, double_backward=_double_backward)


class TrilinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, volume: torch.Tensor, points: torch.Tensor, impl: TrilinearImpl) -> torch.Tensor:  # noqa: ANN001
        ctx.save_for_backward(volume, points)
        ctx.impl, ctx.memo = impl, {}  # the memo serves this chain's backward and double backward
        return impl.forward(volume, points, ctx.memo)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # noqa: ANN001, ANN205
        volume, points = ctx.saved_tensors
        need_volume, need_points = ctx.needs_input_grad[:2]
        g_volume, g_points = TrilinearBackward.apply(volume, points, grad_out, ctx.impl, need_volume, need_points,
                                                     ctx.memo)
        return g_volume, g_points, None


class TrilinearBackward(torch.autograd.Function):
    """The backward as a function of (volume, points, grad_out), so that autograd can differentiate it."""

    @staticmethod
    def forward(ctx, volume, points, grad_out, impl, need_volume, need_points, memo):  # noqa: ANN001, ANN205
        ctx.save_for_backward(volume, points, grad_out)
        ctx.impl, ctx.memo = impl, memo
        return impl.backward(volume, points, grad_out.contiguous(), need_volume, need_points, memo)

    @staticmethod
    @once_differentiable
    def backward(ctx, gg_volume, gg_points):  # noqa: ANN001, ANN205
        volume, points, grad_out = ctx.saved_tensors
        d_grad, d_volume, d_points = ctx.impl.double_backward(volume, points, grad_out, gg_volume, gg_points,
                                                              ctx.memo)
        return d_volume, d_points, d_grad, None, None, None, None


def trilinear_reference(volume: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(B, Z, Y, X, C) sampled at (B, P, 3) -> (B, P, C) with the PyTorch implementation."""
    return TrilinearFunction.apply(volume, points, TORCH_IMPL)


def _impl(volume: torch.Tensor, points: torch.Tensor, backend: str) -> TrilinearImpl:
    if volume.ndim != 5 or points.ndim != 3 or points.shape[-1] != 3 or points.shape[0] != volume.shape[0]:
        raise ValueError(f"expected volume (B, Z, Y, X, C) and points (B, P, 3), got {tuple(volume.shape)}, "
                         f"{tuple(points.shape)}")
    if resolve_backend(backend, volume) == "triton":
        from renderer.kernels.trilinear import TRITON_IMPL

        return TRITON_IMPL
    return TORCH_IMPL


def trilinear(volume: torch.Tensor, points: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Trilinear sampling through the Triton kernels on CUDA, the reference elsewhere (see module doc)."""
    return TrilinearFunction.apply(volume, points, _impl(volume, points, backend))


def trilinear_points_grad(volume: torch.Tensor, points: torch.Tensor, grad_out: torch.Tensor,
                          backend: str = "auto") -> torch.Tensor:
    """d<trilinear(volume, points), grad_out>/dpoints (B, P, 3), itself differentiable (the double backward).

    This is what ``autograd.grad(sdf, points)`` computes through :func:`trilinear`, minus the volume
    gradient that autograd would also build there and throw away: the renderer's SDF gradient uses it.
    """
    return TrilinearBackward.apply(volume, points, grad_out, _impl(volume, points, backend), False, True, {})[1]
