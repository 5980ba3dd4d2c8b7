"""Training draws of a fine-tune, by optimiser step.

A draw depends only on (seed, pass, position): draw ``j`` of a run is position ``j % n`` of pass ``j // n`` over
the ``n`` training scenes, shuffled by a generator seeded with (seed, pass) and augmented by one seeded with
(seed, pass, position). The same seed therefore gives the same run with any number of loader workers, and a
resumed run draws exactly what the uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate

import numpy as np
from torch.utils.data import Dataset

from bench.distributed import Ranks

Draw = tuple[int, np.random.Generator]  # (training scene index, the draw's generator)


def scene_draw(seed: int | Sequence[int], scenes: int, draw: int) -> Draw:
    """Draw number ``draw`` of a run over ``scenes`` training scenes: its scene and its own generator."""
    passes, position = divmod(draw, scenes)
    key = list(np.atleast_1d(seed))
    order = np.random.default_rng([*key, passes]).permutation(scenes)
    return int(order[position]), np.random.default_rng([*key, passes, position])


@dataclass(frozen=True)
class Interleaved:
    """Training over several datasets as Pointcept's ``MultiDatasetDataloader`` does it: every batch comes from one
    dataset, and each cycle takes ``ratios[g]`` consecutive batches of dataset g (its config's ``loop``). Dataset
    g's scenes are rows ``starts[g]:starts[g] + sizes[g]`` of the training sequence."""

    sizes: tuple[int, ...]
    ratios: tuple[int, ...]

    @property
    def starts(self) -> tuple[int, ...]:
        return (0, *accumulate(self.sizes))[:-1]

    def locate(self, step: int) -> tuple[int, int]:
        """The dataset of batch ``step``, and how many of its batches came before it."""
        cycle, position = divmod(step, sum(self.ratios))
        ends = list(accumulate(self.ratios))
        group = next(g for g, end in enumerate(ends) if position < end)
        return group, cycle * self.ratios[group] + position - (ends[group] - self.ratios[group])


class StepBatches(Dataset):
    """This rank's share of the run's training batches, by optimiser step: of the ``batch_size`` consecutive draws
    of a step (the global batch), rank r of w takes the r-th of w equal slices; ``make`` turns them into a batch
    (e.g. augmented, grid-sampled, cropped clouds and their targets). Runs in DataLoader workers."""

    def __init__(self, make: Callable[[list[Draw]], object], *, seed: int, scenes: int, batch_size: int,
                 steps: int, ranks: Ranks = Ranks(0, 1), interleaved: Interleaved | None = None) -> None:  # noqa: B008
        if batch_size % ranks.world:
            raise ValueError(f"batch_size {batch_size} (the global batch) must split evenly over {ranks.world} "
                             "processes")
        self.make, self.seed, self.scenes, self.steps = make, seed, scenes, steps
        self.share = batch_size // ranks.world
        self.offset = ranks.rank * self.share
        self.batch_size, self.interleaved = batch_size, interleaved

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> object:
        if self.interleaved is None:
            first = step * self.batch_size + self.offset
            return self.make([scene_draw(self.seed, self.scenes, j) for j in range(first, first + self.share)])
        group, batch = self.interleaved.locate(step)  # each dataset is drawn as a run of its own, keyed by its place
        first, start = batch * self.batch_size + self.offset, self.interleaved.starts[group]
        draws = (scene_draw((self.seed, group), self.interleaved.sizes[group], j)
                 for j in range(first, first + self.share))
        return self.make([(start + i, rng) for i, rng in draws])
