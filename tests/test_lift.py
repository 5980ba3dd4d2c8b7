"""Lifting 2D feature maps to 3D: exact on a synthetic case, and consistent with real nuScenes calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from backbones.lift import lift_to_volume, sample_views_at_points, voxel_centers
from tasks.formats.nuscenes import read_mmdet3d_info

W, H, STRIDE = 64, 48, 4
K = torch.tensor([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]], dtype=torch.float64)


def _pixel_position_features() -> torch.Tensor:
    """(C=3, h, w): each feature cell holds the pixel coordinates (u, v) of its centre, and a constant 1."""
    h, w = H // STRIDE, W // STRIDE
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.stack([u * STRIDE + (STRIDE - 1) / 2, v * STRIDE + (STRIDE - 1) / 2, torch.ones_like(u)])


def _pose(position: tuple[float, float, float], facing_back: bool = False) -> torch.Tensor:
    pose = torch.eye(4, dtype=torch.float64)
    if facing_back:  # 180 degrees about y: looks along -z
        pose[:3, :3] = torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=torch.float64))
    pose[:3, 3] = torch.tensor(position, dtype=torch.float64)
    return pose


def _project(points: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    w2c = torch.linalg.inv(pose)
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    pix = cam @ K.T
    return pix[:, :2] / pix[:, 2:]


def test_voxel_centers_layout() -> None:
    centers = voxel_centers((0, 0, 0), (4, 2, 1), (4, 2, 1))
    assert centers.shape == (1, 2, 4, 3)  # (Z, Y, X, xyz)
    torch.testing.assert_close(centers[0, 1, 3], torch.tensor([3.5, 1.5, 0.5]))


def test_one_view_sees_the_volume_the_other_faces_away() -> None:
    feats = _pixel_position_features()[None, None].repeat(1, 2, 1, 1, 1)  # (B=1, V=2, 3, h, w)
    poses = torch.stack([_pose((0, 0, 0)), _pose((0, 0, 0), facing_back=True)])[None]
    lo, hi, shape = (-0.5, -0.4, 1.5), (0.5, 0.4, 2.5), (8, 6, 4)
    volume, count = lift_to_volume(feats, STRIDE, K.expand(1, 2, 3, 3), poses, (H, W), lo, hi, shape)
    assert volume.shape == (1, 4, 6, 8, 3) and count.shape == (1, 4, 6, 8)
    assert (count == 1).all()
    centers = voxel_centers(lo, hi, shape).to(torch.float64).reshape(-1, 3)
    expected = _project(centers, poses[0, 0])
    got = volume[0, ..., :2].reshape(-1, 2)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-9)  # bilinear is exact on a linear function
    torch.testing.assert_close(volume[0, ..., 2], torch.ones(4, 6, 8, dtype=torch.float64))


def test_two_views_are_averaged_and_unseen_voxels_are_empty() -> None:
    feats = _pixel_position_features()[None, None].repeat(1, 2, 1, 1, 1)
    poses = torch.stack([_pose((0, 0, 0)), _pose((0.3, 0, 0))])[None]
    points = torch.tensor([[0.1, 0.05, 2.0], [0.0, 0.0, -2.0], [3.0, 0.0, 2.0]], dtype=torch.float64)[None]
    mean, count = sample_views_at_points(points, feats, STRIDE, K.expand(1, 2, 3, 3), poses, (H, W))
    assert count.tolist() == [[2, 0, 0]]  # in front of both / behind both / outside both images
    expected = (_project(points[0, :1], poses[0, 0]) + _project(points[0, :1], poses[0, 1])) / 2
    torch.testing.assert_close(mean[0, 0, :2], expected[0], rtol=0, atol=1e-9)
    torch.testing.assert_close(mean[0, 1:], torch.zeros(2, 3, dtype=torch.float64))


def test_gradients_flow_to_the_image_features() -> None:
    feats = _pixel_position_features()[None, None].clone().requires_grad_(True)
    volume, _ = lift_to_volume(feats, STRIDE, K[None, None], _pose((0, 0, 0))[None, None], (H, W),
                               (-0.5, -0.4, 1.5), (0.5, 0.4, 2.5), (4, 4, 2))
    volume.sum().backward()
    assert feats.grad.abs().sum() > 0


def test_real_nuscenes_cameras_give_features_to_the_lidar_points_they_see(shared_data: Path) -> None:
    sample = read_mmdet3d_info(next((shared_data / "nuscenes-multisensor-sample").glob("*.pkl")))
    height, width = sample.images[0].shape[:2]
    stride = 4
    v = len(sample.cameras)
    # camera i paints every feature cell with the value i + 1
    feats = torch.arange(1, v + 1, dtype=torch.float64)[None, :, None, None, None].expand(
        1, v, 1, height // stride, width // stride)
    points = torch.from_numpy(sample.points[:, :3].astype(np.float64))[None]
    mean, count = sample_views_at_points(points, feats, stride, torch.from_numpy(sample.intrinsics)[None],
                                         torch.linalg.inv(torch.from_numpy(sample.lidar_to_cam))[None],
                                         (height, width))
    seen_by = np.stack([sample.project(i)[1] for i in range(v)])  # (V, N)
    np.testing.assert_array_equal(count[0].numpy(), seen_by.sum(0))
    expected = np.where(seen_by.sum(0) > 0, (seen_by * np.arange(1, v + 1)[:, None]).sum(0) / np.maximum(
        seen_by.sum(0), 1), 0.0)
    np.testing.assert_allclose(mean[0, :, 0].numpy(), expected, atol=1e-9)
    assert (count[0] > 0).float().mean() > 0.3 and (count[0] == 0).any()


def test_lifted_volume_is_read_by_the_renderer_grid_at_the_same_points() -> None:
    from renderer.volume import GridSpec, sample_volume

    spec = GridSpec((-0.5, -0.4, 1.5), (0.5, 0.4, 2.5), (8, 6, 4))
    feats = _pixel_position_features()[None, None]
    volume, _ = lift_to_volume(feats, STRIDE, K[None, None], _pose((0, 0, 0))[None, None], (H, W), spec.lo,
                               spec.hi, spec.shape)
    centres = voxel_centers(spec.lo, spec.hi, spec.shape).double().reshape(1, -1, 3)[:, ::7]
    torch.testing.assert_close(sample_volume(volume, centres, spec)[0, :, :2], _project(centres[0], _pose((0, 0, 0))))
