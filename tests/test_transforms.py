"""Grid sampling semantics, unit-cube normalisation, and augmentations that keep cameras consistent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.formats.rgbd_frames import backproject
from tasks.formats.scannet import ScanNetDataset
from tasks.transforms import (
    ChromaticAutoContrast,
    ChromaticJitter,
    ChromaticTranslation,
    ElasticDistortion,
    RandomDropout,
    RandomFlip,
    RandomJitter,
    RandomRotate,
    RandomScale,
    augment,
    grid_sample_test,
    grid_sample_train,
    normalize_to_unit_cube,
    parse_transform,
    view_transform,
)


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
    tilt = (-1 / 64, 1 / 64)
    pipeline = (RandomRotate(p=0.5), RandomRotate(angle=tilt, axis="x", p=0.5), RandomRotate(angle=tilt, axis="y"),
                RandomScale(), RandomFlip())
    out = augment(scene, pipeline, np.random.default_rng(seed))
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
    out = augment(scene, (RandomDropout(ratio=0.5, p=1.0),), np.random.default_rng(0))
    assert len(out) == len(scene) // 2 and len(out.segment) == len(out)
    assert set(map(tuple, out.coord.tolist())) <= set(map(tuple, scene.coord.tolist()))  # a subset, unmoved
    assert len(augment(scene, (RandomDropout(ratio=0.5, p=0.0),), np.random.default_rng(0))) == len(scene)
    moved = augment(scene, (RandomJitter(sigma=0.01, clip=0.02),), np.random.default_rng(0)).coord - scene.coord
    assert np.abs(moved).max() <= 0.02 + 1e-6 and 0.005 < np.abs(moved).mean() < 0.01  # jittered, clipped


def _nearest(cloud: np.ndarray, points: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    return cKDTree(cloud).query(points)[1]


def _rigid(rotation: RandomRotate) -> np.ndarray:
    return rotation.draw(np.random.default_rng(0)).rotation


@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_rotation_about_each_axis_keeps_that_axis(axis: str) -> None:
    r = _rigid(RandomRotate(angle=(0.25, 0.25), axis=axis))  # exactly 45 degrees
    e = np.eye(3)["xyz".index(axis)]
    np.testing.assert_allclose(r @ e, e, atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0)
    np.testing.assert_allclose(np.arccos((np.trace(r) - 1) / 2), np.pi / 4)


def test_probabilities_and_flips_follow_pointcept() -> None:
    """p is the chance a transform happens (a p of 1 draws no coin); RandomFlip mirrors each axis on its own coin."""
    rng = np.random.default_rng(0)
    rotated = [RandomRotate(p=0.3).draw(rng) is not None for _ in range(2000)]
    assert 0.25 < np.mean(rotated) < 0.35
    flips = [RandomFlip(p=0.5).draw(rng) for _ in range(2000)]
    diagonals = np.array([np.diag(f.rotation) if f is not None else np.ones(3) for f in flips])
    assert 0.45 < (diagonals[:, 0] < 0).mean() < 0.55 and 0.45 < (diagonals[:, 1] < 0).mean() < 0.55
    assert (diagonals[:, 2] == 1).all() and 0.2 < ((diagonals[:, 0] < 0) & (diagonals[:, 1] < 0)).mean() < 0.3
    first, second = np.random.default_rng(5), np.random.default_rng(5)
    RandomRotate(p=1.0).draw(first)
    second.uniform(-np.pi, np.pi)
    assert first.random() == second.random()  # p = 1: only the angle was drawn


def test_scale_is_isotropic_within_its_range() -> None:
    rng = np.random.default_rng(0)
    scales = [RandomScale(scale=(0.9, 1.1)).draw(rng).scale for _ in range(500)]
    assert min(scales) >= 0.9 and max(scales) <= 1.1 and np.std(scales) > 0.05


def test_elastic_distortion_is_smooth_and_bounded(tiny_root: Path) -> None:
    scene = ScanNetDataset(tiny_root / "scannet", "train", with_views=True)[0]
    out = ElasticDistortion(params=((0.2, 0.4),), p=1.0)(scene, np.random.default_rng(0))
    shift = out.coord - scene.coord
    assert out.views is None and len(out) == len(scene)  # non-rigid: the cameras cannot follow
    assert 0.005 < np.abs(shift).mean() < 0.4
    near = _nearest(scene.coord, scene.coord + 0.01)  # neighbours move alike: a smooth field, not noise
    assert np.abs(shift - shift[near]).mean() < 0.2 * np.abs(shift).mean() + 1e-3
    assert ElasticDistortion(p=0.0)(scene, np.random.default_rng(0)) is scene


def test_chromatic_transforms_keep_colours_in_range(tiny_root: Path) -> None:
    scene = ScanNetDataset(tiny_root / "scannet", "train")[0]
    rng = np.random.default_rng(0)
    contrast = ChromaticAutoContrast(p=1.0, blend_factor=1.0)(scene, rng)
    np.testing.assert_allclose(contrast.color.min(0), 0, atol=1e-3)
    np.testing.assert_allclose(contrast.color.max(0), 255, atol=1e-2)
    shifted = ChromaticTranslation(p=1.0, ratio=0.05)(scene, rng)
    delta = shifted.color - scene.color
    inside = ((scene.color > 20) & (scene.color < 235)).all(1)
    assert np.ptp(delta[inside], axis=0).max() < 1e-3 and np.abs(delta[inside]).max() <= 0.05 * 255 + 1e-3
    jittered = ChromaticJitter(p=1.0, std=0.05)(scene, rng)
    assert jittered.color.min() >= 0 and jittered.color.max() <= 255
    assert 5 < np.std(jittered.color[inside] - scene.color[inside]) < 20
    np.testing.assert_array_equal(jittered.coord, scene.coord)


def test_transforms_read_back_from_their_repr() -> None:
    for t in (RandomRotate(angle=(-1 / 64, 1 / 64), axis="x", p=0.5), RandomScale(), RandomFlip(axes="x"),
              RandomJitter(), RandomDropout(), ElasticDistortion(), ChromaticAutoContrast(), ChromaticTranslation(),
              ChromaticJitter()):
        assert parse_transform(repr(t)) == t
    assert repr(parse_transform("RandomRotate(angle=[-1, 1], p=1)")) == repr(RandomRotate())  # canonical numbers
    for bad, says in (("RandomSpin()", "unknown 'RandomSpin'"), ("RandomFlip(q=1)", "has no q"),
                      ("RandomFlip(0.5)", "key=value"), ("RandomRotate(axis='w')", "axis must be")):
        with pytest.raises(ValueError, match=says):
            parse_transform(bad)


def test_test_views_rotate_scale_and_mirror() -> None:
    assert view_transform((0.0, 1.0, "")) is None
    t = view_transform((0.5, 0.9, "xy"))
    np.testing.assert_allclose(t.rotation @ [1.0, 0.0, 0.0], [0.0, -1.0, 0.0], atol=1e-12)  # turned, then mirrored
    assert t.scale == 0.9


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
