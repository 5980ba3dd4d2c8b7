"""The low-level metrics against analytic truth: a sphere SDF, image pairs with known PSNR and SSIM, depth with a
constant offset, clouds with a known shift, a wall hiding what lies behind it; and the real 7-Scenes frames seeing
the cloud fused from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.metrics.lowlevel import (
    depth_errors,
    mesh_from_sdf,
    psnr,
    read_mesh,
    reconstruction_scores,
    sample_surface,
    seen_by_views,
    ssim,
    write_mesh,
)
from tasks.structures import PosedViews


def _sphere_points(radius: float, count: int, rng: np.random.Generator) -> np.ndarray:
    d = rng.normal(size=(count, 3))
    return radius * d / np.linalg.norm(d, axis=1, keepdims=True)


def test_a_sphere_sdf_meshes_to_the_sphere(tmp_path: Path) -> None:
    spacing, radius = 0.02, 0.3
    axis = np.arange(-0.4, 0.4 + 1e-9, spacing)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    vertices, faces = mesh_from_sdf(np.sqrt(x**2 + y**2 + z**2) - radius, np.array([axis[0]] * 3), spacing)
    error = np.abs(np.linalg.norm(vertices, axis=1) - radius)
    assert error.max() < 0.05 * spacing  # linear interpolation of an exact SDF: far under a voxel
    rng = np.random.default_rng(0)
    surface = sample_surface(vertices, faces, 40_000, rng)
    assert np.abs(np.linalg.norm(surface, axis=1) - radius).max() < 0.05 * spacing
    scores = reconstruction_scores(surface, _sphere_points(radius, 200_000, rng))
    assert scores["fscore"] > 0.999 and scores["chamfer_l1"] < 0.005
    path = write_mesh(tmp_path / "sphere.ply", vertices, faces)
    again, tri = read_mesh(path)
    np.testing.assert_allclose(again, vertices, atol=1e-6)
    np.testing.assert_array_equal(tri, faces)


def test_an_sdf_without_a_surface_is_refused() -> None:
    with pytest.raises(ValueError, match="no zero crossing"):
        mesh_from_sdf(np.ones((4, 4, 4)), np.zeros(3), 0.1)


def test_psnr_of_a_known_error() -> None:
    target = np.full((32, 48, 3), 0.5)
    assert psnr(target + 0.1, target) == pytest.approx(20.0)  # MSE 0.01: 10 log10(1 / 0.01)
    rng = np.random.default_rng(1)
    noisy = target + rng.choice([-0.05, 0.05], size=target.shape)
    assert psnr(noisy, target) == pytest.approx(10 * np.log10(1 / 0.0025))


def test_ssim_of_known_pairs() -> None:
    rng = np.random.default_rng(2)
    image = rng.random((40, 40, 3))
    assert ssim(image, image) == pytest.approx(1.0)
    # flat images: the contrast-structure term is 1, the luminance term (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)
    c1 = (0.01 * 1.0) ** 2
    expected = (2 * 0.5 * 0.6 + c1) / (0.5**2 + 0.6**2 + c1)
    assert ssim(np.full((40, 40, 3), 0.6), np.full((40, 40, 3), 0.5)) == pytest.approx(expected)
    assert ssim(1 - image, image) < 0  # anti-correlated structure


def test_a_constant_depth_offset() -> None:
    target = np.linspace(0.2, 4.0, 200).reshape(10, 20)
    target[0, :5] = 0  # invalid pixels are ignored
    valid = target > 0
    scores = depth_errors(target + 0.1, target)
    assert scores["AbsRel"] == pytest.approx(np.mean(0.1 / target[valid]))
    assert scores["RMSE"] == pytest.approx(0.1)
    assert scores["delta1"] == pytest.approx(np.mean(target[valid] > 0.4))  # (t + 0.1) / t < 1.25 <=> t > 0.4
    with pytest.raises(ValueError, match="valid"):
        depth_errors(target, np.zeros_like(target))


@pytest.mark.parametrize(("shift", "inside"), [(0.03, True), (0.07, False)])
def test_a_shifted_surface_scores_by_the_threshold(shift: float, inside: bool) -> None:
    u, v = np.meshgrid(np.arange(0, 2, 0.005), np.arange(0, 2, 0.005))
    plane = np.stack([u.ravel(), v.ravel(), np.zeros(u.size)], 1)
    scores = reconstruction_scores(plane + [0, 0, shift], plane)
    assert scores["accuracy"] == pytest.approx(shift, abs=1e-6)
    assert scores["completeness"] == pytest.approx(shift, abs=1e-6)
    assert scores["fscore"] == pytest.approx(1.0 if inside else 0.0)


def _plane(x: tuple[float, float], y: tuple[float, float], z: float, step: float = 0.015) -> np.ndarray:
    u, v = np.meshgrid(np.arange(*x, step), np.arange(*y, step))
    return np.stack([u.ravel(), v.ravel(), np.full(u.size, z)], 1)


def test_a_wall_hides_what_lies_behind_it() -> None:
    """One camera at the origin looking down +z (640 x 480, f = 500) that saw a wall at 2 m (|x| < 1, |y| < 0.8)
    in front of a larger one at 3 m, and no depth in its top rows: the far wall's middle (|x| < 1.5, |y| < 1.2)
    is hidden, and so is what lies behind the camera, beside the image or where the frame has no depth."""
    intrinsics = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    row, col = np.mgrid[0:480, 0:640]
    depth = np.where((np.abs(col + 0.5 - 320) < 250) & (np.abs(row + 0.5 - 240) < 200), 2.0, 3.0)
    depth[:20] = 0  # no depth: not observed
    views = PosedViews(np.zeros((1, 480, 640, 3), np.uint8), depth[None].astype(np.float32), intrinsics[None],
                       np.eye(4)[None])
    front = _plane((-0.99, 0.99), (-0.79, 0.79), 2.0)
    back = _plane((-1.85, 1.85), (-0.9, 0.9), 3.0)
    nearer = front[::50] * 0.75  # 50 cm nearer on the same rays, space the frame saw empty: seen (counts)
    just_behind = front[::50] + [0, 0, 0.03]  # within the 5 cm tolerance of the wall: seen
    unseen = np.array([[0.0, 0.0, -1.0], [5.0, 0.0, 2.0], [0.0, 0.0, 0.01], [0.0, -1.4, 3.0]])  # behind, beside,
    points = np.concatenate([front, back, nearer, just_behind, unseen])  # too near, in the rows without depth
    seen = seen_by_views(points, views)
    n_front, n_back = len(front), len(back)
    assert seen[:n_front].all()
    back_seen, x = seen[n_front:n_front + n_back], np.abs(back[:, 0])
    assert not back_seen[x < 1.49].any()
    assert back_seen[x > 1.51].all()
    assert seen[n_front + n_back:-len(unseen)].all()
    assert not seen[-len(unseen):].any()


@pytest.mark.slow
def test_the_real_frames_see_the_cloud_fused_from_them(shared_data: Path) -> None:
    from tasks.formats.rgbd_folder import RGBDFolder
    from tasks.formats.rgbd_frames import fuse_views

    views = RGBDFolder(shared_data / "7scenes-rgbd").views()
    cloud = fuse_views(views, "7scenes", 0.02, 2).coord.astype(np.float64)
    assert seen_by_views(cloud, views).mean() > 0.97
    centre = views.cam_to_world[0, :3, 3]
    ray = cloud - centre
    behind = centre + ray * (1 + 0.3 / np.linalg.norm(ray, axis=1, keepdims=True))  # 30 cm further along its ray
    first = views.select([0])
    in_view = seen_by_views(behind, first, tolerance=np.inf)
    assert in_view.mean() > 0.1
    assert seen_by_views(behind, first)[in_view].mean() < 0.05  # the surface the first frame saw hides its copy
