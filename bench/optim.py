"""The OneCycle schedule of both engines, safe for short runs."""

from __future__ import annotations

import torch


def one_cycle(optimizer: torch.optim.Optimizer, max_lr: float | list[float], total_steps: int, pct_start: float
              ) -> torch.optim.lr_scheduler.LRScheduler:
    """OneCycle over ``total_steps`` with a warm-up of at least two steps; a constant rate below 4 steps.
    ``max_lr``: one peak, or one per parameter group.

    PyTorch divides by ``pct_start * total_steps - 1``, which is zero when the warm-up would be exactly
    one step (20 steps at 5 %, say).
    """
    if total_steps < 4:
        peaks = max_lr if isinstance(max_lr, list) else [max_lr] * len(optimizer.param_groups)
        for group, peak in zip(optimizer.param_groups, peaks, strict=True):
            group["lr"] = peak
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps,
                                               pct_start=min(max(pct_start, 2.0 / total_steps), 0.5))
