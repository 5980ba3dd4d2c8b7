"""One error type for bad data on disk, always naming the file and the problem."""

from __future__ import annotations

from pathlib import Path


class DataFormatError(ValueError):
    """A file of a dataset is missing, unreadable or inconsistent.

    The message always starts with the offending path so that a user with thousands of scenes
    can find the one bad file.
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
