"""Loaders on the real samples in ../shared/data (skipped cleanly when the folder is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.classes import NUSCENES16
from tasks.formats.nuscenes import read_lidarseg_frames, read_mmdet3d_info
from tasks.formats.rgbd_folder import RGBDFolder
from tasks.formats.rgbd_frames import backproject, fuse_views
from tasks.formats.scannet import read_mmdet3d_posed_images, read_scannet_points_bin
from tasks.formats.semantickitti import SemanticKITTIDataset


def test_7scenes_frames_and_intrinsics(shared_data: Path) -> None:
    folder = RGBDFolder(shared_data / "7scenes-rgbd")
    assert len(folder) == 100
    np.testing.assert_allclose(folder.intrinsics, [[585, 0, 320], [0, 585, 240], [0, 0, 1]])
    views = folder.views([0, 50])
    assert views.image.shape == (2, 480, 640, 3) and views.depth.dtype == np.float32
    valid = views.depth[views.depth > 0]
    assert 0.3 < np.median(valid) < 4.0, "indoor depth in metres"
    rot = views.cam_to_world[:, :3, :3]
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape), atol=1e-3)


def test_7scenes_fusion_is_consistent(shared_data: Path) -> None:
    """A frame's back-projection lands on the cloud fused from *other* frames of the same scene."""
    folder = RGBDFolder(shared_data / "7scenes-rgbd")
    views = folder.views(list(range(0, 20)))
    others = fuse_views(views.select([i for i in range(20) if i != 10]), "others", voxel_size=0.01, stride=4)
    held_out, _ = backproject(views, 10, stride=16)
    dist = torch.cdist(torch.from_numpy(held_out), torch.from_numpy(others.coord)).min(1).values
    assert float(dist.median()) < 0.03, f"median distance {float(dist.median()):.3f} m"
    # whereas a wrong pose (another frame's) does not line up
    wrong = views.select([10])
    wrong.cam_to_world[0] = views.cam_to_world[19]
    misplaced, _ = backproject(wrong, 0, stride=16)
    dist_wrong = torch.cdist(torch.from_numpy(misplaced), torch.from_numpy(others.coord)).min(1).values
    assert float(dist_wrong.median()) > 2 * float(dist.median())


def test_7scenes_fused_scene_has_colour(shared_data: Path) -> None:
    scene = RGBDFolder(shared_data / "7scenes-rgbd", every=25).scene(voxel_size=0.02, stride=4)
    assert len(scene) > 10_000
    assert scene.color.min() >= 0 and scene.color.max() <= 255 and scene.color.std() > 10
    assert len(scene.views) == 4


def test_nuscenes_lidarseg_frames(shared_data: Path) -> None:
    scenes = read_lidarseg_frames(shared_data / "nuscenes-lidarseg-samples")
    assert len(scenes) == 30
    counts = [len(s) for s in scenes]
    assert 30_000 < np.mean(counts) < 40_000
    labels = np.concatenate([s.segment for s in scenes])
    assert labels.min() >= -1 and labels.max() < len(NUSCENES16)
    present = {NUSCENES16[i] for i in np.unique(labels[labels >= 0])}
    assert {"driveable_surface", "manmade", "vegetation", "car"} <= present
    # driveable surface lies below the sensor, vegetation/manmade mostly above it
    coord = np.concatenate([s.coord for s in scenes])
    road = labels == NUSCENES16.index("driveable_surface")
    assert np.median(coord[road, 2]) < -1.0
    intensity = np.concatenate([s.strength for s in scenes])
    assert intensity.min() >= 0 and intensity.max() <= 255


def test_nuscenes_multisensor_lidar_projects_into_real_cameras(shared_data: Path) -> None:
    sample = read_mmdet3d_info(next((shared_data / "nuscenes-multisensor-sample").glob("*.pkl")))
    assert len(sample.cameras) == 6 and all(img.shape == (900, 1600, 3) for img in sample.images)
    seen = np.zeros(len(sample.points), dtype=int)
    for v, cam in enumerate(sample.cameras):
        uv, inside = sample.project(v)
        assert inside.sum() > 1000, cam
        seen += inside
    assert (seen > 0).mean() > 0.3
    # front camera sees points ahead of the car (+x in the LiDAR frame of nuScenes is to the right,
    # +y is forward), the back camera those behind
    front = sample.cameras.index("CAM_FRONT")
    back = sample.cameras.index("CAM_BACK")
    assert np.median(sample.points[sample.project(front)[1], 1]) > 0
    assert np.median(sample.points[sample.project(back)[1], 1]) < 0
    assert len(sample.box_labels) == len(sample.box_centers) > 10
    assert "car" in sample.box_labels


def test_scannet_scan_sample(shared_data: Path) -> None:
    scene = read_scannet_points_bin(shared_data / "scannet-scan-sample" / "scene0000_00.bin")
    assert len(scene) == 40_684
    extent = scene.coord.max(0) - scene.coord.min(0)
    assert (extent[:2] > 3).all() and 1.5 < extent[2] < 4, "a room"
    assert scene.color.max() <= 255 and scene.color.min() >= 0


def test_scannet_posed_images_see_the_scan(shared_data: Path) -> None:
    images, k, c2w = read_mmdet3d_posed_images(shared_data / "scannet-posed-images-sample" / "scannet_infos.pkl")
    scene = read_scannet_points_bin(shared_data / "scannet-scan-sample" / "scene0000_00.bin")
    assert len(images) == 3 == len(c2w)
    for img, pose in zip(images, c2w, strict=True):
        w2c = np.linalg.inv(pose)
        cam = scene.coord @ w2c[:3, :3].T + w2c[:3, 3]
        uv = cam @ k.T
        uv = uv[:, :2] / np.maximum(cam[:, 2:], 1e-6)
        inside = (cam[:, 2] > 0.1) & (uv[:, 0] >= 0) & (uv[:, 0] < img.shape[1]) & (uv[:, 1] >= 0) & (
            uv[:, 1] < img.shape[0])
        assert inside.sum() > 1000


def test_semantickitti_sample(shared_data: Path) -> None:
    dataset = SemanticKITTIDataset(shared_data / "semantickitti-format-sample", "train")
    assert dataset.names == ["00/000000"]
    scene = dataset[0]
    assert len(scene) == 50
    raw = np.fromfile(shared_data / "semantickitti-format-sample/sequences/00/labels/000000.label",
                      dtype=np.uint32) & 0xFFFF
    expected = {0: -1, 50: 12, 52: -1, 70: 14, 71: 15, 80: 17}  # learning map, shifted to 0..18
    for r, s in zip(raw, scene.segment, strict=True):
        assert expected[int(r)] == s


def test_camera_rays_of_the_real_multisensor_sample(shared_data: Path) -> None:
    """PonderV2's outdoor rays on real calibration: 512 per camera, each from a camera centre (near the LiDAR) to a
    LiDAR point that camera sees."""
    from bench.pretrain.data import camera_rays
    from tasks.structures import PosedViews

    sample = read_mmdet3d_info(next((shared_data / "nuscenes-multisensor-sample").glob("*.pkl")))
    views = PosedViews(np.stack(sample.images), np.zeros((6, 900, 1600), np.float32), sample.intrinsics,
                       np.linalg.inv(sample.lidar_to_cam))
    points = sample.points[:, :3].astype(np.float32)
    rays = camera_rays(views, points, 512, 3.0, np.random.default_rng(0))
    assert len(rays) == 6 * 512
    centres = rays.origins.numpy().reshape(6, 512, 3)
    assert (np.ptp(centres, axis=1) == 0).all() and (np.linalg.norm(centres[:, 0], axis=1) < 2.0).all()
    ends = (rays.origins + rays.directions * rays.depth[:, None]).numpy()
    from scipy.spatial import cKDTree

    assert (cKDTree(points).query(ends)[0] < 1e-3).all(), "every ray ends on a LiDAR point"
    assert (np.linalg.norm(ends[:, :2], axis=1) > 3.0).all()
    for v in range(6):  # and that point is in front of the ray's camera, inside its image
        cam = np.c_[ends[v * 512:(v + 1) * 512], np.ones(512)] @ sample.lidar_to_cam[v].T
        uv = cam[:, :3] @ sample.intrinsics[v].T
        assert (cam[:, 2] > 0).all() and ((uv[:, :2] / uv[:, 2:]) >= 0).all()
        assert ((uv[:, :2] / uv[:, 2:]) < [1600, 900]).all()


@pytest.mark.slow  # fuses the 80 training frames (about 20 s)
def test_a_7scenes_close_up_too_small_for_the_deepest_level_is_drawn_again(shared_data: Path, caplog) -> None:  # noqa: ANN001
    """Position 101 of the indoor-mini pre-training on the real 7-Scenes frames (seed 0, epoch 0) crops and masks the
    input into one 16-voxel cell, on which the backbone's deepest BatchNorm cannot train: the step draws again."""
    from backbones.registry import get_backbone_config
    from bench import distributed
    from bench.pretrain.data import DEEPEST_STRIDE, UnusableScene, build_sample, open_source
    from bench.pretrain.engine import PretrainBatches
    from bench.recipes import get_recipe
    from tasks.contract import voxel_size

    recipe = get_recipe("indoor-mini", ["epochs=1", "steps_per_epoch=300"])
    source = open_source(shared_data / "7scenes-rgbd", "indoor")
    voxel = voxel_size("indoor", get_backbone_config(recipe.backbone).voxel_size)
    with pytest.raises(UnusableScene, match="one cell of the backbones' deepest level"):
        build_sample(source.scene(0), recipe, voxel, 0, 101)
    batches = PretrainBatches(source, recipe, voxel, 300, distributed.Ranks(0, 1))
    sample = batches._sample(0, 101, 0, preview=False)
    assert len(np.unique(sample.points.grid_coord.numpy() // DEEPEST_STRIDE, axis=0)) >= 2
    assert "skipped" in caplog.text
