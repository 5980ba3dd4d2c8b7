"""The common shape of every scene loader: a sized, indexable collection of named scenes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

from tasks.errors import DataFormatError
from tasks.structures import Scene


class SceneDataset(ABC):
    """A split of a dataset on disk. Subclasses list scene names and load one scene by name."""

    def __init__(self, root: str | Path, split: str):
        self.root = Path(root)
        self.split = split
        if not self.root.is_dir():
            raise DataFormatError(self.root, f"data root of {type(self).__name__} does not exist")
        self.names = self._scene_names()

    @abstractmethod
    def _scene_names(self) -> list[str]: ...

    @abstractmethod
    def load(self, name: str) -> Scene: ...

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Scene:
        return self.load(self.names[index])

    def __iter__(self) -> Iterator[Scene]:
        for name in self.names:
            yield self.load(name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root='{self.root}', split='{self.split}', scenes={len(self)})"
