"""Space-filling-curve codes of voxel coordinates: the point orders of Point Transformer V3.

PTv3 sorts the voxels of a cloud along a curve (z-order or Hilbert, each also with x and y swapped) and attends
within runs of consecutive voxels; one code per voxel, with the cloud's index in the bits above, so sorting a batch
keeps its clouds apart. The codes equal Pointcept's (``pointcept/models/utils/serialization``), so a voxel lands in
the same patch as in the original and checkpoints compute the same features.

Both curves are computed here on int64 tensors with bit operations (no look-up tables, no per-bit byte arrays).
"""

from __future__ import annotations

from typing import Literal

import torch

Order = Literal["z", "z-trans", "hilbert", "hilbert-trans"]
ORDERS: tuple[Order, ...] = ("z", "z-trans", "hilbert", "hilbert-trans")
MAX_DEPTH = 16  # bits per axis: 3 x 16 for the voxel, the rest of int64 for the cloud index


def z_order(grid: torch.Tensor, depth: int) -> torch.Tensor:
    """Morton code of (N, 3) non-negative voxel coordinates: bit i of x, y, z goes to bit 3i+2, 3i+1, 3i."""
    grid = grid.long()
    code = torch.zeros(len(grid), dtype=torch.long, device=grid.device)
    for bit in range(depth):
        for axis, shift in ((0, 2), (1, 1), (2, 0)):
            code |= ((grid[:, axis] >> bit) & 1) << (3 * bit + shift)
    return code


def hilbert(grid: torch.Tensor, depth: int) -> torch.Tensor:
    """Hilbert index of (N, 3) voxel coordinates on a 2^depth cube (Skilling 2004, "Programming the Hilbert
    curve": axes to transposed form, then the bits interleaved x-first from the most significant and Gray-decoded).
    Consecutive indices are face-adjacent voxels."""
    x = [grid[:, axis].long().clone() for axis in range(3)]
    for bit in reversed(range(depth)):  # undo the excess work, most significant bit first
        high, low = 1 << bit, (1 << bit) - 1
        for axis in range(3):
            on = (x[axis] & high) != 0
            flip = torch.where(on, low, (x[0] ^ x[axis]) & low)  # on: invert x0's low bits; off: swap them
            x[0] = x[0] ^ flip
            if axis:
                x[axis] = x[axis] ^ torch.where(on, 0, flip)
    gray = torch.zeros_like(x[0])
    for bit in reversed(range(depth)):
        for axis in range(3):
            gray = (gray << 1) | ((x[axis] >> bit) & 1)
    code, shift = gray, 1
    while shift < 3 * depth:  # Gray to binary: each bit is the XOR of all bits above it
        code ^= code >> shift
        shift <<= 1
    return code


def encode(grid: torch.Tensor, batch: torch.Tensor, depth: int, order: Order) -> torch.Tensor:
    """The (N,) code of each voxel along ``order``, with its cloud index ``batch`` above the 3 x ``depth`` bits."""
    if depth > MAX_DEPTH:
        raise ValueError(f"serialization depth {depth} > {MAX_DEPTH}: the cloud spans more than 2^16 voxels")
    if order not in ORDERS:
        raise ValueError(f"unknown serialization order {order!r}; one of {', '.join(ORDERS)}")
    if order.endswith("-trans"):
        grid = grid[:, [1, 0, 2]]
    code = z_order(grid, depth) if order.startswith("z") else hilbert(grid, depth)
    return batch.long() << (3 * depth) | code


def depth_for(grid: torch.Tensor) -> int:
    """Bits per axis of the smallest 2^depth cube holding every coordinate (Pointcept's adaptive depth)."""
    return int(grid.max() + 1).bit_length()
