"""Training over several datasets at once (PonderV2's PPT fine-tuning over ScanNet, S3DIS and Structured3D).

The task's own training scenes come first; other datasets' training splits follow, read from the same data
root. Batches are drawn as Pointcept's ``MultiDatasetDataloader`` draws them (:class:`bench.finetune.draws.
Interleaved`): each from one dataset, with that dataset's condition, in loop ratios. Only the task's own dataset
is evaluated. An epoch is one pass over the task's own scenes with the other datasets' batches interleaved, rounded
up to whole cycles (Pointcept counts epochs by the first dataset of its config, Structured3D in PonderV2's ScanNet
config, and ends one mid-cycle). The task's own dataset leads each cycle, the others follow in the order named.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from bench.finetune.draws import Interleaved
from tasks.datasets import DATASETS, open_dataset
from tasks.errors import DataFormatError
from tasks.spec import TaskSpec
from tasks.structures import Scene


@dataclass(frozen=True)
class MixedScenes(Sequence):
    """Training scenes of several datasets: ``parts`` of (condition, scenes), the task's own first."""

    parts: tuple[tuple[str, Sequence[Scene]], ...]
    ratios: tuple[int, ...]

    @cached_property
    def interleaved(self) -> Interleaved:
        return Interleaved(tuple(len(scenes) for _, scenes in self.parts), self.ratios)

    @property
    def own(self) -> Sequence[Scene]:
        return self.parts[0][1]

    def __len__(self) -> int:
        return sum(len(scenes) for _, scenes in self.parts)

    def _locate(self, index: int) -> tuple[int, int]:
        if index < 0:
            raise IndexError(f"{index}: training scenes are indexed from 0")
        for part, start in enumerate(self.interleaved.starts):
            if index < start + len(self.parts[part][1]):
                return part, index - start
        raise IndexError(index)

    def __getitem__(self, index: int) -> Scene:  # type: ignore[override]
        part, row = self._locate(index)
        return self.parts[part][1][row]

    def condition(self, index: int) -> str:
        return self.parts[self._locate(index)[0]][0]

    def steps_per_epoch(self, own_steps: int) -> int:
        """Batches of one epoch: ``own_steps`` of the task's own, rounded up to whole cycles."""
        return math.ceil(own_steps / self.ratios[0]) * sum(self.ratios)


def parse_datasets(value: str, setting: str = "semseg.datasets") -> list[tuple[str, int]]:
    """``"structured3d:4,s3dis:1"`` -> [("structured3d", 4), ("s3dis", 1)]: dataset formats with loop ratios (1
    when not given); ``setting`` names the recipe field in errors."""
    pairs = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, _, ratio = item.partition(":")
        if name not in DATASETS or DATASETS[name].condition is None:
            known = ", ".join(n for n, f in DATASETS.items() if f.condition)
            raise ValueError(f"{setting}: {name!r} is not a dataset with a condition ({known})")
        if ratio and not (ratio.isdigit() and int(ratio) > 0):
            raise ValueError(f"{setting}: the loop ratio of {name} must be a positive integer, got {ratio!r}")
        pairs.append((name, int(ratio or 1)))
    return pairs


def mixed_training_scenes(spec: TaskSpec, data_root: Path, own: Sequence[Scene], datasets: str) -> MixedScenes:
    """The task's training scenes and those of ``datasets`` (see :func:`parse_datasets`; the task's own format may be
    named to give its ratio), each dataset under ``data_root`` in its usual folder."""
    pairs = parse_datasets(datasets)
    own_ratio = next((r for name, r in pairs if name == spec.loader), 1)
    others = [(name, r) for name, r in pairs if name != spec.loader]
    parts: list[tuple[str, Sequence[Scene]]] = [(spec.condition, own)]
    for name, _ in others:
        fmt = DATASETS[name]
        if fmt.condition in (c for c, _ in parts):
            raise ValueError(f"semseg.datasets: {name} has the condition {fmt.condition} of another dataset named")
        folder = data_root / fmt.folder
        if not folder.is_dir():
            raise DataFormatError(folder, f"semseg.datasets names {name}, whose folder is not in the task's data "
                                  "root")
        parts.append((fmt.condition, open_dataset(name, folder, "train")))
    return MixedScenes(tuple(parts), (own_ratio, *(r for _, r in others)))
