"""PonderV2's outdoor pretext, piece by piece: camera rays to the LiDAR points each camera sees, the block mask and
its learned token, the one-convolution projection, and nuScenes intensity on the [0, 1] scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.pretrain.data import block_mask, camera_rays, open_source
from bench.pretrain.model import PonderModel
from bench.recipes import get_recipe
from renderer.projection import SimpleConv3D
from tasks.datasets import open_dataset
from tasks.errors import DataFormatError
from tasks.structures import PosedViews

K = np.array([[10.0, 0.0, 10.0], [0.0, 10.0, 10.0], [0.0, 0.0, 1.0]])


def forward_camera(at: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> PosedViews:
    """One 20 x 20 camera at ``at`` looking along +x (camera z = world x, camera x = -world y, camera y = -z)."""
    c2w = np.eye(4)
    c2w[:3, :3] = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    c2w[:3, 3] = at
    return PosedViews(np.zeros((1, 20, 20, 3), np.uint8), np.zeros((1, 20, 20), np.float32), K[None], c2w[None])


def test_camera_rays_end_at_the_nearest_visible_point_of_each_pixel() -> None:
    points = np.array([[10.0, 0.0, 0.0],  # centre pixel
                       [20.0, 0.0, 0.0],  # behind it in the same pixel: hidden
                       [-10.0, 0.0, 0.0],  # behind the camera
                       [2.0, 0.0, 0.0],  # nearer the LiDAR than the close radius
                       [10.0, 5.0, 0.0]],  # another pixel
                      dtype=np.float32)
    rays = camera_rays(forward_camera((0.0, 0.0, 0.5)), points, per_camera=10, close_radius=3.0,
                       rng=np.random.default_rng(0))
    ends = (rays.origins + rays.directions * rays.depth[:, None]).numpy()
    assert sorted(map(tuple, np.round(ends, 4))) == [(10.0, 0.0, 0.0), (10.0, 5.0, 0.0)]
    assert torch.allclose(rays.origins, torch.tensor([0.0, 0.0, 0.5]).expand(2, 3))
    assert torch.allclose(rays.depth.sort().values, torch.tensor([np.hypot(10, 0.5), np.sqrt(125.25)]).float())


def test_camera_rays_take_at_most_per_camera_points_per_camera() -> None:
    rng = np.random.default_rng(1)
    points = np.c_[rng.uniform(5, 30, 500), rng.uniform(-5, 5, 500), rng.uniform(-2, 2, 500)].astype(np.float32)
    two = forward_camera()
    two = PosedViews(np.repeat(two.image, 2, 0), np.repeat(two.depth, 2, 0), np.repeat(two.intrinsics, 2, 0),
                     np.repeat(two.cam_to_world, 2, 0))
    assert len(camera_rays(two, points, per_camera=7, close_radius=3.0, rng=rng)) == 14


def test_block_mask_masks_whole_blocks_in_the_stated_ratio() -> None:
    rng = np.random.default_rng(0)
    coord = rng.uniform(0, 8, (4000, 3))
    masked = block_mask(coord, 0.8 * 4, 0.8, rng)  # 3.2 m blocks: 3 x 3 x 3 = 27 occupied
    blocks = [tuple(b) for b in np.floor(coord / 3.2).astype(int)]
    by_block: dict[tuple, set] = {}
    for b, m in zip(blocks, masked, strict=True):
        by_block.setdefault(b, set()).add(bool(m))
    assert all(len(v) == 1 for v in by_block.values()), "a block is masked whole or not at all"
    assert sum(v == {False} for v in by_block.values()) == round(27 * 0.2)


def test_simple_conv3d_gives_one_volume_for_sdf_and_colour() -> None:
    sdf, color = SimpleConv3D(6, 4)(torch.randn(1, 3, 5, 7, 6))
    assert sdf.shape == (1, 3, 5, 7, 4) and sdf is color and (sdf >= 0).all()


def test_the_mask_token_replaces_exactly_the_masked_points_features(tiny_root: Path) -> None:
    recipe = get_recipe("outdoor", ["backbone=spunet-micro", "grid=(30,30,4)", "semantic_dim=0", "sdf_channels=8",
                                    "color_channels=8", "hidden=8"])
    model = PonderModel(recipe)
    assert model.mask_token is not None and model.mask_token.shape == (1, 4)
    from bench.pretrain.data import build_sample
    from tasks.contract import voxel_size

    source = open_source(tiny_root / "nuscenes", "outdoor", cameras=True)
    sample = build_sample(source.scene(0), recipe, voxel_size("outdoor", None), epoch=0, index=0)
    assert sample.masked is not None and 0 < sample.masked.float().mean() < 1
    fed = model._masked(sample).feat
    assert torch.equal(fed[~sample.masked], sample.points.feat[~sample.masked])
    assert torch.equal(fed[sample.masked], model.mask_token.expand(int(sample.masked.sum()), 4))
    held = build_sample(source.scene(0), recipe, voxel_size("outdoor", None), epoch=0, index=0, augment=False)
    assert held.masked is None, "held-out samples are not masked"


def test_camera_rays_need_cameras(tiny_root: Path) -> None:
    with pytest.raises(DataFormatError, match="semantickitti.*outdoor_rays=lidar"):
        open_source(tiny_root / "semantickitti", "outdoor", cameras=True)


def test_nuscenes_intensity_is_scaled_to_the_unit_interval(tiny_root: Path) -> None:
    scene = open_dataset("nuscenes", tiny_root / "nuscenes", "train")[0]
    raw = np.fromfile(next((tiny_root / "nuscenes" / "samples" / "LIDAR_TOP").glob("*.bin")), np.float32)
    assert scene.strength.max() <= 1.0 and raw.reshape(-1, 5)[:, 3].max() > 1.0


def test_camera_rays_come_from_views_cameras_of_the_sweep(tiny_root: Path) -> None:
    from bench.pretrain.data import build_sample
    from tasks.contract import voxel_size

    source = open_source(tiny_root / "nuscenes", "outdoor", cameras=True)
    for views in (2, 6):
        recipe = get_recipe("outdoor", ["backbone=spunet-micro", "grid=(30,30,4)", f"views={views}",
                                        "rays_per_view=16"])
        sample = build_sample(source.scene(0), recipe, voxel_size("outdoor", None), epoch=0, index=0)
        assert len(torch.unique(sample.rays.origins, dim=0)) == views and len(sample.rays) <= 16 * views
