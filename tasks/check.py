"""``ponderbench data check``: what a data root holds per benchmark, and exactly what is missing or broken."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tasks.errors import DataFormatError
from tasks.formats.base import SceneDataset
from tasks.formats.nuscenes import NuScenesLidarSegDataset
from tasks.formats.s3dis import S3DISDataset
from tasks.formats.scannet import ScanNetDataset, read_scannet_frames
from tasks.formats.semantickitti import SemanticKITTIDataset


@dataclass
class DatasetReport:
    dataset: str
    path: Path
    splits: dict[str, int] = field(default_factory=dict)  # split -> scenes read
    points: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.splits)


# dataset -> (sub-folder, {split: factory})
CHECKS: dict[str, tuple[str, dict[str, Callable[[Path], SceneDataset]]]] = {
    "scannet": ("scannet", {s: (lambda r, s=s: ScanNetDataset(r, s, "segment20")) for s in ("train", "val")}),
    "scannet200": ("scannet", {s: (lambda r, s=s: ScanNetDataset(r, s, "segment200")) for s in ("train", "val")}),
    "s3dis": ("s3dis", {s: (lambda r, s=s: S3DISDataset(r, s)) for s in ("train", "val")}),
    "semantickitti": ("semantickitti", {s: (lambda r, s=s: SemanticKITTIDataset(r, s)) for s in ("train", "val")}),
    "nuscenes": ("nuscenes", {s: (lambda r, s=s: NuScenesLidarSegDataset(r, s, _nuscenes_version(r)))
                              for s in ("train", "val")}),
}


def _nuscenes_version(root: Path) -> str:
    for version in ("v1.0-trainval", "v1.0-mini"):
        if (root / version).is_dir():
            return version
    raise DataFormatError(root, "no v1.0-trainval or v1.0-mini table folder")


def check_dataset(name: str, root: Path, max_scenes: int | None = None) -> DatasetReport:
    folder, splits = CHECKS[name]
    report = DatasetReport(name, root / folder)
    if not report.path.is_dir():
        report.problems.append(f"{report.path}: folder is missing")
        return report
    for split, factory in splits.items():
        try:
            dataset = factory(report.path)
        except (DataFormatError, ValueError, AssertionError, OSError) as exc:
            report.problems.append(f"{split}: {exc}")
            continue
        if len(dataset) == 0:
            report.problems.append(f"{split}: no scenes found under {report.path}")
            continue
        read = 0
        for scene_name in dataset.names[:max_scenes]:
            try:
                report.points += len(dataset.load(scene_name))
                read += 1
            except (DataFormatError, ValueError) as exc:
                report.problems.append(f"{split}/{scene_name}: {exc}")
        report.splits[split] = read
    if name == "scannet" and (report.path / "rgbd").is_dir():
        for scene in sorted((report.path / "rgbd").iterdir())[:max_scenes]:
            try:
                read_scannet_frames(scene)
            except DataFormatError as exc:
                report.problems.append(f"rgbd/{scene.name}: {exc}")
    return report


def check_root(root: str | Path, datasets: list[str] | None = None, max_scenes: int | None = None
               ) -> list[DatasetReport]:
    return [check_dataset(name, Path(root), max_scenes) for name in (datasets or list(CHECKS))]
