"""Training draws of a fine-tune, by optimiser step.

A draw depends only on (seed, pass, position): draw ``j`` of a run is position ``j % n`` of pass ``j // n`` over
the ``n`` training scenes, shuffled by a generator seeded with (seed, pass) and augmented by one seeded with
(seed, pass, position). The same seed therefore gives the same run with any number of loader workers, and a
resumed run draws exactly what the uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from torch.utils.data import Dataset

from bench.distributed import Ranks

Draw = tuple[int, np.random.Generator]  # (training scene index, the draw's generator)


def scene_draw(seed: int, scenes: int, draw: int) -> Draw:
    """Draw number ``draw`` of a run over ``scenes`` training scenes: its scene and its own generator."""
    passes, position = divmod(draw, scenes)
    order = np.random.default_rng([seed, passes]).permutation(scenes)
    return int(order[position]), np.random.default_rng([seed, passes, position])


class StepBatches(Dataset):
    """This rank's share of the run's training batches, by optimiser step: of the ``batch_size`` consecutive draws
    of a step (the global batch), rank r of w takes the r-th of w equal slices; ``make`` turns them into a batch
    (e.g. augmented, grid-sampled, cropped clouds and their targets). Runs in DataLoader workers."""

    def __init__(self, make: Callable[[list[Draw]], object], *, seed: int, scenes: int, batch_size: int,
                 steps: int, ranks: Ranks = Ranks(0, 1)) -> None:  # noqa: B008
        if batch_size % ranks.world:
            raise ValueError(f"batch_size {batch_size} (the global batch) must split evenly over {ranks.world} "
                             "processes")
        self.make, self.seed, self.scenes, self.steps = make, seed, scenes, steps
        self.share = batch_size // ranks.world
        self.offset = ranks.rank * self.share
        self.batch_size = batch_size

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> object:
        first = step * self.batch_size + self.offset
        return self.make([scene_draw(self.seed, self.scenes, j) for j in range(first, first + self.share)])
