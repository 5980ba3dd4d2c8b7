"""Grid sampling semantics, unit-cube normalisation, and augmentations that keep cameras consistent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.formats.rgbd_frames import backproject
from tasks.formats.scannet import ScanNetDataset
from tasks.transforms import Augment, grid_sample_test, grid_sample_train, normalize_to_unit_cube


@pytest.fixture
def cloud() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, (5000, 3)).astype(np.float32)


def _voxels(coord: np.ndarray, size: float) -> np.ndarray:
    return np.floor(coord / size).astype(np.int64)


def test_train_mode_keeps_one_random_point_per_voxel(cloud: np.ndarray) -> None:
    out = grid_sample_train(cloud, 0.2, np.random.default_rng(1))
    occupied = np.unique(_voxels(cloud, 0.2), axis=0)
    picked = _voxels(cloud[out.index], 0.2)
    assert len(out.index) == len(occupied) == len(np.unique(picked, axis=0))
    np.testing.assert_array_equal(out.grid_coord, picked - _voxels(cloud, 0.2).min(0))
    other = grid_sample_train(cloud, 0.2, np.random.default_rng(2))
    assert not np.array_equal(np.sort(out.index), np.sort(other.index)), "the choice per voxel should be random"


def test_test_mode_fragments_cover_every_point(cloud: np.ndarray) -> None:
    parts = grid_sample_test(cloud, 0.2)
    covered = np.unique(np.concatenate([p.index for p in parts]))
    np.testing.assert_array_equal(covered, np.arange(len(cloud)))
    for part in parts:
        assert len(np.unique(part.grid_coord, axis=0)) == len(part.index)


def test_normalize_to_unit_cube(tiny_root: Path) -> None:
    scene = ScanNetDataset(tiny_root / "scannet", "train", with_views=True)[0]
    norm, _ = normalize_to_unit_cube(scene)
    extent = norm.coord.max(0) - norm.coord.min(0)
    assert extent.max() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose((norm.coord.max(0) + norm.coord.min(0)) / 2, 0, atol=1e-5)
    _assert_views_follow_points(scene, norm)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_augmentation_moves_cameras_with_points(tiny_root: Path, seed: int) -> None:
    """Back-projecting the augmented views must give the augmented cloud's geometry."""
    scene = ScanNetDataset(tiny_root / "scannet", "train", with_views=True)[0]
    aug = Augment(jitter_sigma=0.0, flip_p=0.5)
    rng = np.random.default_rng(seed)
    out = aug(scene, rng)
    # recover the similarity from three points (no jitter/dropout here)
    src, dst = scene.coord[:200].astype(np.float64), out.coord[:200].astype(np.float64)
    scale = np.linalg.norm(dst[1:] - dst[0], axis=1).mean() / np.linalg.norm(src[1:] - src[0], axis=1).mean()
    for v in range(len(scene.views)):
        before, _ = backproject(scene.views, v, stride=4)
        after, _ = backproject(out.views, v, stride=4)
        d_before = np.linalg.norm(before - before.mean(0), axis=1)
        d_after = np.linalg.norm(after - after.mean(0), axis=1)
        np.testing.assert_allclose(d_after, scale * d_before, rtol=1e-4, atol=1e-4)
    _assert_views_follow_points(scene, out)


def _assert_views_follow_points(before, after) -> None:
    """Each back-projected pixel, mapped like the points, lands where the new views back-project it."""
    pts_src = before.coord.astype(np.float64)
    pts_dst = after.coord.astype(np.float64)
    # least-squares similarity from points (exact here), applied to the old back-projection
    a = np.c_[pts_src, np.ones(len(pts_src))]
    m, *_ = np.linalg.lstsq(a, pts_dst, rcond=None)
    for v in range(len(before.views)):
        old, _ = backproject(before.views, v, stride=4)
        new, _ = backproject(after.views, v, stride=4)
        np.testing.assert_allclose(np.c_[old, np.ones(len(old))] @ m, new, atol=2e-3)


def test_dropout_and_jitter(tiny_root: Path) -> None:
    scene = ScanNetDataset(tiny_root / "scannet", "train")[0]
    out = Augment(rotate_z=0, scale=(1, 1), flip_p=0, jitter_sigma=0.01, jitter_clip=0.02, dropout=0.5)(
        scene, np.random.default_rng(0))
    assert 0.4 < len(out) / len(scene) < 0.6
    assert len(out.segment) == len(out)


def test_a_point_cap_is_a_sphere_crop_that_keeps_local_density() -> None:
    """Capping points must not thin them: inside the crop every point of the cloud is kept, so the voxels a network
    trains on are as dense as the ones it is evaluated on (random thinning made them 5x sparser)."""
    from tasks.transforms import sphere_crop

    rng = np.random.default_rng(0)
    cloud = (rng.random((20_000, 3)) * [10.0, 10.0, 3.0]).astype(np.float32)
    crop = sphere_crop(cloud, 4000, np.random.default_rng(1))
    keep = crop.index
    assert len(keep) == 4000 and np.all(np.diff(keep) > 0)
    inside = np.flatnonzero(crop.contains(cloud))
    np.testing.assert_array_equal(inside, keep)  # exactly the points inside its sphere: nothing there was dropped
    assert crop.radius < 5.0
    np.testing.assert_array_equal(sphere_crop(cloud, None, rng).index, np.arange(len(cloud)))
    assert sphere_crop(cloud, 30_000, rng).contains(cloud * 100).all()  # no crop: everything is inside
