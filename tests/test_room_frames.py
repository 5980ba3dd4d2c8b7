"""RGB-D frames beside S3DIS and Structured3D rooms (PonderV2's ``<room>_rgbd/<frame>.pth``), and PonderV2's PPT
pre-training over ScanNet, S3DIS and Structured3D at once, each scene under its dataset's condition."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.pretrain.data import mixed_source, open_source
from bench.pretrain.engine import PretrainBatches, Pretrainer
from bench.recipes import get_recipe
from tasks.datasets import open_dataset
from tasks.errors import DataFormatError
from tasks.formats.room_frames import read_room_frames, write_room_frames
from tasks.heads.prompt import PPT_CLASSES, VALID_CLASSES
from tasks.structures import PosedViews

PPT_MIX = "structured3d:2,scannet:1,s3dis:1"


def _views(n: int = 3, seed: int = 0) -> PosedViews:
    rng = np.random.default_rng(seed)
    poses = np.repeat(np.eye(4)[None], n, axis=0)
    poses[:, :3, 3] = rng.normal(size=(n, 3))
    k = np.array([[40.0, 0, 16], [0, 40.0, 12], [0, 0, 1]])
    return PosedViews(rng.integers(0, 255, (n, 24, 32, 3), dtype=np.uint8),
                      rng.uniform(0.5, 4.0, (n, 24, 32)).astype(np.float32), np.repeat(k[None], n, axis=0), poses)


def test_frames_round_trip_and_a_bad_frame_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    views = _views()
    views.depth[1, :20] = 0.0  # a frame whose mask keeps a sixth of its pixels: PonderV2 sets such frames aside
    write_room_frames(tmp_path / "office_1_rgbd", views)
    with caplog.at_level(logging.WARNING):
        read = read_room_frames(tmp_path / "office_1_rgbd")
    assert read.names == ["0", "2"] and "1.pth" in caplog.text and "under 25%" in caplog.text
    assert np.array_equal(read.image, views.image[[0, 2]])
    assert np.abs(read.depth - views.depth[[0, 2]]).max() <= 0.0005  # millimetres
    assert np.array_equal(read.cam_to_world, views.cam_to_world[[0, 2]])
    assert np.array_equal(read.intrinsics, views.intrinsics[[0, 2]])


def test_a_broken_frame_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="office_1_rgbd: RGB-D frames folder of the room does not exist"):
        read_room_frames(tmp_path / "office_1_rgbd")
    write_room_frames(tmp_path / "f", _views(1))
    frame = torch.load(tmp_path / "f" / "0.pth", weights_only=False)
    del frame["extrinsic"]
    torch.save(frame, tmp_path / "f" / "0.pth")
    with pytest.raises(DataFormatError, match=r"0\.pth: an RGB-D frame needs the keys .* missing \['extrinsic'\]"):
        read_room_frames(tmp_path / "f")


def test_data_check_reads_the_frames(tiny_copy: Path) -> None:
    from tasks.check import check_dataset

    assert check_dataset("s3dis", tiny_copy).ok
    frame = next((tiny_copy / "s3dis").glob("Area_1/*_rgbd/0.pth"))
    frame.write_bytes(b"not a frame")
    report = check_dataset("s3dis", tiny_copy)
    assert not report.ok and any("office_1_rgbd/0.pth: refused as an RGB-D frame" in p for p in report.problems)


def test_rooms_carry_their_frames_and_frame_folders_are_not_rooms(tiny_root: Path) -> None:
    for name, root in (("s3dis", tiny_root / "s3dis"), ("structured3d", tiny_root / "structured3d")):
        plain, posed = open_dataset(name, root, "train"), open_dataset(name, root, "train", with_views=True)
        assert plain.names == posed.names and not any(n.endswith("_rgbd") for n in plain.names)
        scene = posed[0]
        assert plain[0].views is None and len(scene.views) == 3  # the tiny suite's views per room
        # the frames see the room: their depth back-projects onto its cloud
        from scipy.spatial import cKDTree

        from tasks.formats.rgbd_frames import backproject

        points, _ = backproject(scene.views, 0)
        dist, _ = cKDTree(scene.coord).query(points)
        assert np.median(dist) < 0.1


def test_the_mixed_source_repeats_each_dataset_its_loop_ratio_under_its_condition(tiny_root: Path) -> None:
    source = mixed_source(tiny_root, "indoor", PPT_MIX)
    assert len(source) == 2 * 2 + 2 + 2  # Structured3D's 2 training rooms twice, ScanNet's 2, S3DIS's 2
    assert source.conditions == ("Structured3D",) * 4 + ("ScanNet",) * 2 + ("S3DIS",) * 2
    assert source.condition == "Structured3D" and source.heldout  # the first dataset's held-out rooms
    assert source.class_names == PPT_CLASSES and source.class_sets == VALID_CLASSES
    assert source.scene(6).name.startswith("Area_") and source.scene(0).views is not None
    recipe = get_recipe("indoor-mini", ["backbone=spunet-v1m3-mini", f"datasets={PPT_MIX}", "views=1",
                                        "rays_per_view=16", "max_points=2000", "batch_size=8"])
    from bench import distributed

    batches = PretrainBatches(source, recipe, 0.1, 1, distributed.Ranks(0, 1))
    _, samples = batches[0]
    assert sorted(s.points.condition for s, _, _ in samples) == sorted(source.conditions)
    with pytest.raises(DataFormatError, match="datasets names scannet, which is not indoor pre-training data"):
        mixed_source(tiny_root / "nowhere", "indoor", "scannet:1")
    with pytest.raises(ValueError, match="datasets: scannet200 has the condition ScanNet of another dataset named"):
        mixed_source(tiny_root, "indoor", "scannet:1,scannet200:1")
    with pytest.raises(ValueError, match="PPT pre-training renders several indoor datasets.*this is mode image"):
        mixed_source(tiny_root, "image", "scannet:1")
    with pytest.raises(ValueError, match="datasets: 'semantickitti' is not a dataset with a condition"):
        open_source(tiny_root, "indoor", datasets="semantickitti:1")


def test_an_s3dis_root_is_pre_training_data_by_itself(tiny_root: Path) -> None:
    source = open_source(tiny_root / "s3dis", "indoor")
    assert (source.kind, source.condition, len(source.class_names)) == ("s3dis", "S3DIS", 13)
    assert open_source(tiny_root / "structured3d", "indoor").kind == "structured3d"
    assert open_source(tiny_root / "scannet", "indoor").kind == "scannet"


@pytest.mark.slow
def test_ppt_pretraining_trains_every_datasets_norms(tiny_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"  # only the three datasets, so nothing else of the root is read
    for name in ("scannet", "s3dis", "structured3d"):
        shutil.copytree(tiny_root / name, root / name)
    from tests.test_pretrain import MICRO

    recipe = get_recipe("indoor-mini", [*MICRO, "backbone=spunet-v1m3-mini", f"datasets={PPT_MIX}", "epochs=1"])
    result = Pretrainer(recipe, root, tmp_path / "run", progress=False).run()
    assert result.steps == 8 and result.heldout_depth_error_after > 0
    state = torch.load(tmp_path / "run" / "backbone.pt", weights_only=True)
    for index, condition in enumerate(("ScanNet", "S3DIS", "Structured3D")):  # the norms' order
        means = torch.cat([v for k, v in state.items() if k.endswith(f".bns.{index}.running_mean")])
        assert means.abs().sum() > 0, f"{condition}'s norms saw no batch"


def test_a_ppt_fine_tune_over_three_datasets_starts_from_the_ppt_pretraining() -> None:
    from bench.matrix.runner import datasets_read, expand, pretrain_jobs

    def jobs(*overrides: str) -> list:  # noqa: ANN202
        runs = expand(backbones=["spunet-v1m3-mini"], inits=["ponder"], tasks="scannet-semseg,s3dis-area5-semseg",
                      seeds=[0], data_roots=("data",), results="results", overrides=overrides)
        return list(pretrain_jobs(runs)), datasets_read(runs)

    [plain], read = jobs()
    assert (plain.datasets, plain.run_dir.name) == ("", "indoor-spunet-v1m3-mini-mini")
    assert read == {"scannet", "s3dis"}
    ppt, read = jobs("semseg.ppt=True", "semseg.datasets=structured3d:4,s3dis:1")
    # each task's own dataset among them: ScanNet's runs add scannet:1; S3DIS's name it already
    assert sorted(j.run_dir.name for j in ppt) == ["indoor-spunet-v1m3-mini-mini-scannet1-structured3d4-s3dis1",
                                                   "indoor-spunet-v1m3-mini-mini-structured3d4-s3dis1"]
    assert read == {"scannet", "s3dis", "structured3d"}
