"""Fused compositing (alpha -> weights -> accumulated values) in Triton, forward and backward.

Forward walks each ray's samples once, keeping log-transmittance in a register; only the per-ray
outputs and the final log-transmittance are written. Backward walks the samples once in reverse,
recovering log T_i by subtracting log(1 - alpha_i) and carrying s_{i+1} = g . S_{i+1}, the gradient-
weighted value composited from sample i+1 on, so that

    dL/dalpha_i = T_i * (g . v_i + g_opacity - s_{i+1}),     dL/dv_i = alpha_i * T_i * g,

which avoids the unstable division by (1 - alpha_i). Nothing of size (rays x samples) is stored except the
gradients themselves. The reference is :func:`renderer.volrend.composite_reference`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from renderer.volrend import ALPHA_MAX

BLOCK_R = 64  # rays per program: the fastest of 8-128 on an H200 (results/perf/gpu_check.json)


@triton.jit
def _composite_fwd(alpha_ptr, values_ptr, out_ptr, opacity_ptr, logt_ptr, R, S, D,
                   BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, AMAX: tl.constexpr):
    rays = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rays < R
    ch = tl.arange(0, BLOCK_D)
    vmask = rmask[:, None] & (ch < D)[None, :]
    log_t = tl.zeros([BLOCK_R], dtype=tl.float32)
    acc = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
    for s in range(0, S):
        a = tl.load(alpha_ptr + rays * S + s, mask=rmask, other=0.0).to(tl.float32)
        a = tl.minimum(tl.maximum(a, 0.0), AMAX)
        v = tl.load(values_ptr + (rays[:, None] * S + s) * D + ch[None, :], mask=vmask, other=0.0).to(tl.float32)
        acc += (a * tl.exp(log_t))[:, None] * v
        log_t += tl.log(1.0 - a)
    tl.store(out_ptr + rays[:, None] * D + ch[None, :], acc, mask=vmask)
    tl.store(opacity_ptr + rays, 1.0 - tl.exp(log_t), mask=rmask)
    tl.store(logt_ptr + rays, log_t, mask=rmask)


@triton.jit
def _composite_bwd(alpha_ptr, values_ptr, logt_ptr, gout_ptr, gop_ptr, galpha_ptr, gvalues_ptr, R, S, D,
                   BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, AMAX: tl.constexpr):
    rays = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rays < R
    ch = tl.arange(0, BLOCK_D)
    vmask = rmask[:, None] & (ch < D)[None, :]
    g = tl.load(gout_ptr + rays[:, None] * D + ch[None, :], mask=vmask, other=0.0).to(tl.float32)
    g_op = tl.load(gop_ptr + rays, mask=rmask, other=0.0).to(tl.float32)
    log_t = tl.load(logt_ptr + rays, mask=rmask, other=0.0)
    s_next = tl.zeros([BLOCK_R], dtype=tl.float32)
    for k in range(0, S):
        s = S - 1 - k
        a_raw = tl.load(alpha_ptr + rays * S + s, mask=rmask, other=0.0).to(tl.float32)
        a = tl.minimum(tl.maximum(a_raw, 0.0), AMAX)
        log_t -= tl.log(1.0 - a)
        t = tl.exp(log_t)
        v = tl.load(values_ptr + (rays[:, None] * S + s) * D + ch[None, :], mask=vmask, other=0.0).to(tl.float32)
        gc = tl.sum(g * v, axis=1) + g_op
        in_range = (a_raw >= 0.0) & (a_raw <= AMAX)
        tl.store(galpha_ptr + rays * S + s, tl.where(in_range, t * (gc - s_next), 0.0), mask=rmask)
        tl.store(gvalues_ptr + (rays[:, None] * S + s) * D + ch[None, :], (a * t)[:, None] * g, mask=vmask)
        s_next = a * gc + (1.0 - a) * s_next


def _block_d(d: int) -> int:
    return max(2, triton.next_power_of_2(d))


class CompositeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, alpha: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
        alpha_c, values_c = alpha.contiguous(), values.contiguous()
        r, s = alpha.shape
        d = values.shape[2]
        out = torch.empty(r, d, device=alpha.device, dtype=torch.float32)
        opacity = torch.empty(r, device=alpha.device, dtype=torch.float32)
        log_t = torch.empty(r, device=alpha.device, dtype=torch.float32)
        grid = (triton.cdiv(r, BLOCK_R),)
        _composite_fwd[grid](alpha_c, values_c, out, opacity, log_t, r, s, d, BLOCK_R=BLOCK_R, BLOCK_D=_block_d(d),
                             AMAX=ALPHA_MAX)
        ctx.save_for_backward(alpha_c, values_c, log_t)
        return out.to(values.dtype), opacity.to(alpha.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor, grad_opacity: torch.Tensor):  # noqa: ANN001, ANN205
        alpha, values, log_t = ctx.saved_tensors
        r, s = alpha.shape
        d = values.shape[2]
        grad_alpha = torch.empty(r, s, device=alpha.device, dtype=torch.float32)
        grad_values = torch.empty(r, s, d, device=alpha.device, dtype=torch.float32)
        grid = (triton.cdiv(r, BLOCK_R),)
        _composite_bwd[grid](alpha, values, log_t, grad_out.contiguous(), grad_opacity.contiguous(), grad_alpha,
                             grad_values, r, s, d, BLOCK_R=BLOCK_R, BLOCK_D=_block_d(d), AMAX=ALPHA_MAX)
        return grad_alpha.to(alpha.dtype), grad_values.to(values.dtype)


def composite_triton(alpha: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return CompositeFunction.apply(alpha, values)
