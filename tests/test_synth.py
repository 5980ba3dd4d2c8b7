"""The generator: deterministic, complete, readable by every loader and by the nuScenes devkit."""

from __future__ import annotations

import contextlib
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.check import check_root
from tasks.formats.nuscenes import NuScenesLidarSegDataset
from tasks.formats.rgbd_frames import backproject
from tasks.formats.scannet import ScanNetDataset
from tasks.synth.indoor import FURNITURE, INDOOR_CLASSES, TO_SCANNET20, TO_SCANNET200
from tasks.synth.outdoor import OUTDOOR_CLASSES
from tasks.synth.suite import synthesize


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_generator_is_deterministic(tiny_root: Path, tmp_path: Path) -> None:
    again = synthesize(tmp_path / "again", "tiny", seed=0, progress=False)
    assert _digest(tiny_root) == _digest(again)


def test_seed_changes_the_data(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", "tiny", seed=1, progress=False, nuscenes_scenes=(1, 0), kitti_scans={0: 1})
    b = synthesize(tmp_path / "b", "tiny", seed=2, progress=False, nuscenes_scenes=(1, 0), kitti_scans={0: 1})
    assert _digest(a) != _digest(b)


def test_data_check_reports_the_tiny_suite_complete(tiny_root: Path) -> None:
    reports = check_root(tiny_root)
    assert [r.dataset for r in reports] == ["scannet", "scannet200", "s3dis", "structured3d", "semantickitti",
                                            "nuscenes"]
    for report in reports:
        assert report.ok, (report.dataset, report.problems)
        assert report.splits["train"] > 0 and report.splits["val"] > 0


def test_indoor_rooms_have_furniture_of_at_least_eight_scannet_classes() -> None:
    furniture20 = {INDOOR_CLASSES[k].scannet20 for k in FURNITURE}
    assert len(furniture20) >= 8


def test_segment20_and_segment200_are_consistent(tiny_root: Path) -> None:
    pairs = set()
    for split in ("train", "val"):
        for name in ScanNetDataset(tiny_root / "scannet", split).names:
            folder = tiny_root / "scannet" / split / name
            s20, s200 = np.load(folder / "segment20.npy"), np.load(folder / "segment200.npy")
            pairs |= set(zip(s200.tolist(), s20.tolist(), strict=True))
    fine_to_coarse = {}
    for fine, coarse in pairs:
        assert fine_to_coarse.setdefault(fine, coarse) == coarse, f"segment200 {fine} maps to two segment20 classes"
    # and the mapping is the generator's class table
    assert {(int(TO_SCANNET200[k]), int(TO_SCANNET20[k])) for k in range(len(INDOOR_CLASSES))} >= pairs


def test_instances_are_objects_with_one_class(tiny_root: Path) -> None:
    scene = ScanNetDataset(tiny_root / "scannet", "train")[0]
    ids = np.unique(scene.instance[scene.instance >= 0])
    assert len(ids) >= 3
    for i in ids:
        assert len(np.unique(scene.segment[scene.instance == i])) == 1


def test_rgbd_frames_lie_on_the_point_cloud(tiny_root: Path) -> None:
    """Depth rendered by ray casting back-projects onto the same surfaces the points were sampled from."""
    dataset = ScanNetDataset(tiny_root / "scannet", "train", with_views=True)
    scene = dataset[0]
    cloud = torch.from_numpy(scene.coord)
    for v in range(len(scene.views)):
        world, _ = backproject(scene.views, v, stride=3)
        dist = torch.cdist(torch.from_numpy(world), cloud).min(dim=1).values
        assert float(dist.median()) < 0.06, f"view {v}: median distance {float(dist.median()):.3f} m"


def test_devkit_loads_generated_nuscenes_with_lidarseg(tiny_root: Path) -> None:
    from nuscenes.nuscenes import NuScenes

    with contextlib.redirect_stdout(io.StringIO()):
        nusc = NuScenes(version="v1.0-mini", dataroot=str(tiny_root / "nuscenes"), verbose=False)
    assert len(nusc.lidarseg) == len(nusc.sample) > 0
    sample = nusc.sample[0]
    assert set(sample["data"]) == {"LIDAR_TOP", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK",
                                   "CAM_BACK_LEFT", "CAM_BACK_RIGHT"}
    assert len(sample["anns"]) > 0
    # the devkit's own accessors work: boxes with velocity from prev/next annotations, rendering-free paths
    _, boxes, _ = nusc.get_sample_data(sample["data"]["LIDAR_TOP"])
    assert len(boxes) > 0
    assert {b.name for b in boxes} <= {c.box for c in OUTDOOR_CLASSES if c.box}


def test_generated_nuscenes_lidar_projects_into_its_cameras(tiny_root: Path) -> None:
    dataset = NuScenesLidarSegDataset(tiny_root / "nuscenes", "train", "v1.0-mini")
    sample = dataset.sensors(dataset.names[0])
    seen = np.zeros(len(sample.points), dtype=bool)
    for v in range(len(sample.cameras)):
        _, inside = sample.project(v)
        assert inside.sum() > 100, sample.cameras[v]
        seen |= inside
    assert seen.mean() > 0.5


def test_a_dataset_written_alone_and_in_parallel_is_the_suites(tiny_root: Path, tmp_path: Path) -> None:
    alone = synthesize(tmp_path / "alone", "tiny", seed=0, progress=False, datasets=["semantickitti", "s3dis"],
                       workers=2)
    assert sorted(p.name for p in alone.iterdir()) == ["s3dis", "semantickitti"], "nothing else, no partial folder"
    for dataset in ("s3dis", "semantickitti"):
        assert _digest(alone / dataset) == _digest(tiny_root / dataset), dataset
    with pytest.raises(FileExistsError, match="s3dis"):  # never written over
        synthesize(alone, "tiny", seed=1, progress=False, datasets=["s3dis"])
    with pytest.raises(ValueError, match="writes no"):
        synthesize(alone, "tiny", progress=False, datasets=["kitti"])


def test_the_matrix_names_the_datasets_it_reads() -> None:
    from bench.matrix.runner import datasets_read, expand

    def read(tasks: str, inits: list[str]) -> set[str]:
        return datasets_read(expand(backbones=["spunet-mini"], inits=inits, tasks=tasks, seeds=[0],
                                    data_roots=("data",), results="results"))

    main_job = "scannet-semseg,s3dis-area5-semseg,semantickitti-semseg"
    assert read(main_job, ["scratch", "ponder"]) == {"scannet", "s3dis", "semantickitti"}
    assert read("s3dis-area5-semseg", ["scratch"]) == {"s3dis"}
    assert read("s3dis-area5-semseg", ["ponder"]) == {"s3dis", "scannet"}, "indoor pre-training reads ScanNet"
    assert read("nuscenes-det-fusion", ["ponder"]) == {"nuscenes", "semantickitti", "scannet"}
