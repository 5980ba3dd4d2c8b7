"""``ponderbench data check``: what a data root holds per benchmark, and exactly what is missing or broken."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tasks.datasets import DATASETS, open_dataset
from tasks.errors import DataFormatError
from tasks.formats.room_frames import SUFFIX as FRAMES_SUFFIX
from tasks.formats.room_frames import read_room_frames
from tasks.formats.scannet import read_scannet_frames
from tasks.structures import Scene


@dataclass
class DatasetReport:
    dataset: str
    path: Path
    splits: dict[str, int] = field(default_factory=dict)  # split -> scenes read
    points: int = 0
    problems: list[str] = field(default_factory=list)
    present: bool = True

    @property
    def ok(self) -> bool:
        """Present and readable (an absent dataset is not a problem unless it is required)."""
        return self.present and not self.problems and bool(self.splits)

    @property
    def status(self) -> str:
        return "absent" if not self.present else "ok" if self.ok else "PROBLEMS"


CHECKS = tuple(name for name, fmt in DATASETS.items() if fmt.checked)  # the formats data check knows
SPLITS = ("train", "val")
INSTANCE_CHECKED = ("scannet", "scannet200", "s3dis")  # Pointcept's instance.npy: one id per object, -1 for none


def check_dataset(name: str, root: Path, max_scenes: int | None = None) -> DatasetReport:
    report = DatasetReport(name, root / DATASETS[name].folder)
    if not report.path.is_dir():
        report.present = False
        return report
    for split in SPLITS:
        try:
            dataset = open_dataset(name, report.path, split)
        except (DataFormatError, ValueError, AssertionError, OSError) as exc:
            report.problems.append(f"{split}: {exc}")
            continue
        if len(dataset) == 0:
            report.problems.append(f"{split}: no scenes found under {report.path}")
            continue
        read = 0
        for scene_name in dataset.names[:max_scenes]:
            try:
                scene = dataset.load(scene_name)
                report.points += len(scene)
                read += 1
            except (DataFormatError, ValueError) as exc:
                report.problems.append(f"{split}/{scene_name}: {exc}")
                continue
            if name in INSTANCE_CHECKED:
                report.problems += [f"{split}/{scene_name}: {p}" for p in instance_problems(scene)]
        report.splits[split] = read
    if name == "scannet" and (report.path / "rgbd").is_dir():
        for scene in sorted((report.path / "rgbd").iterdir())[:max_scenes]:
            try:
                read_scannet_frames(scene)
            except DataFormatError as exc:
                report.problems.append(f"rgbd/{scene.name}: {exc}")
    if name in ("s3dis", "structured3d"):  # the rooms' RGB-D frames, where there are any (pre-training reads them)
        for folder in sorted(p for p in report.path.rglob(f"*{FRAMES_SUFFIX}") if p.is_dir())[:max_scenes]:
            try:
                read_room_frames(folder)
            except DataFormatError as exc:
                report.problems.append(f"{folder.relative_to(report.path)}: {exc}")
    return report


def instance_problems(scene: Scene) -> list[str]:
    """Instance ids that do not name one object: an id whose labelled points carry several classes."""
    if scene.instance is None or scene.segment is None:
        return []
    labelled = (scene.instance >= 0) & (scene.segment >= 0)
    pairs = np.unique(np.stack([scene.instance[labelled], scene.segment[labelled]], 1), axis=0)
    ids, counts = np.unique(pairs[:, 0], return_counts=True)
    mixed = ids[counts > 1]
    return [f"instance ids {mixed[:5].tolist()}{' ...' if len(mixed) > 5 else ''} span several classes "
            f"({len(mixed)} of {len(ids)} instances)"] if len(mixed) else []


def check_root(root: str | Path, datasets: list[str] | None = None, max_scenes: int | None = None,
               required: tuple[str, ...] = ()) -> list[DatasetReport]:
    """Reports of ``datasets`` (default: all) under ``root``; unknown names (``required`` too) raise KeyError."""
    unknown = sorted((set(datasets or ()) | set(required)) - set(CHECKS))
    if unknown:
        raise KeyError(f"unknown dataset(s) {unknown}; known: {', '.join(CHECKS)}")
    return [check_dataset(name, Path(root), max_scenes) for name in (datasets or list(CHECKS))]


def failures(reports: list[DatasetReport], required: list[str] | tuple[str, ...] = ()) -> list[DatasetReport]:
    """Reports that fail the check: present and broken, or absent although ``required``."""
    return [r for r in reports if (r.present and not r.ok) or (not r.present and r.dataset in required)]
