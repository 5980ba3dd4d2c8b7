"""Rays, NeuS sampling, fields and rendering: known geometry renders the right depth and normal."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from renderer.fields import FieldConfig, VolumeField, gradient_by_autograd, neus_alpha
from renderer.losses import LossWeights, rendering_losses
from renderer.rays import RayBundle, near_far_from_box, pixel_rays, sample_rays
from renderer.render import render_rays, sample_along
from renderer.samplers import NeuSSampler, sample_pdf
from renderer.semantic import class_embeddings, deterministic_embeddings, load_embeddings
from renderer.step import render_and_backward
from tasks.contract import INDOOR_GRID, UNIT_BOX


class AnalyticField:
    """A surface given by a signed-distance function (positive outside), painted one colour."""

    def __init__(self, sdf_fn, inv_s: float = 2000.0) -> None:  # noqa: ANN001
        self.sdf_fn, self.sharpness = sdf_fn, inv_s

    def sdf(self, points: torch.Tensor, batch_index: torch.Tensor, geometry: bool = True
            ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sdf_fn(points), points.new_zeros(*points.shape[:2], 0)

    def sdf_and_gradient(self, points, batch_index, create_graph):  # noqa: ANN001, ANN201
        return gradient_by_autograd(self, points, batch_index, create_graph)

    def color(self, points, batch_index, gradients, geometry, directions):  # noqa: ANN001, ANN201
        return torch.full_like(points, 0.25), None

    def inv_s(self) -> torch.Tensor:
        return torch.tensor(self.sharpness)


def rays_towards(origin: torch.Tensor, targets: torch.Tensor) -> RayBundle:
    directions = torch.nn.functional.normalize(targets - origin, dim=-1)
    origins = origin.expand_as(directions).contiguous()
    near, far, hit = near_far_from_box(origins, directions, *UNIT_BOX)
    assert hit.all()
    return RayBundle(origins, directions, near, far, torch.zeros(len(origins), dtype=torch.long))


def test_sphere_renders_its_depth_and_normal() -> None:
    centre, radius = torch.tensor([0.05, -0.02, 0.1]), 0.3
    field = AnalyticField(lambda p: (p - centre).norm(dim=-1) - radius)
    origin = torch.tensor([0.0, 0.0, -0.5])
    gen = torch.Generator().manual_seed(0)
    targets = centre + torch.nn.functional.normalize(torch.randn(64, 3, generator=gen), dim=-1) * radius * 0.7
    rays = rays_towards(origin, targets)
    # analytic first hit of |o + t d - c| = r
    oc = rays.origins - centre
    b = (oc * rays.directions).sum(-1)
    t_hit = -b - torch.sqrt(b * b - (oc * oc).sum(-1) + radius**2)
    out = render_rays(field, rays, perturb=False)
    assert out.samples.t.shape == (64, 132)
    assert (out.depth - t_hit).abs().max() < 5e-3
    assert (out.opacity > 0.99).all()
    expected_normal = torch.nn.functional.normalize(rays.origins + rays.directions * t_hit[:, None] - centre, dim=-1)
    cos = (torch.nn.functional.normalize(out.normal, dim=-1) * expected_normal).sum(-1)
    assert cos.min() > 0.995
    torch.testing.assert_close(out.rgb, torch.full_like(out.rgb, 0.25), atol=1e-2, rtol=0)


def test_plane_renders_its_depth_and_importance_samples_gather_at_the_surface() -> None:
    height = 0.2
    field = AnalyticField(lambda p: height - p[..., 2])  # outside (positive) below the plane z = height
    origin = torch.tensor([0.1, -0.1, -0.45])
    targets = torch.tensor([[x, y, height] for x in (-0.3, 0.0, 0.3) for y in (-0.3, 0.0, 0.3)])
    rays = rays_towards(origin, targets)
    t_hit = (height - rays.origins[:, 2]) / rays.directions[:, 2]
    out = render_rays(field, rays, perturb=True, generator=torch.Generator().manual_seed(1))
    assert (out.depth - t_hit).abs().max() < 5e-3
    torch.testing.assert_close(out.normal / out.opacity[:, None], torch.tensor([0.0, 0.0, -1.0]).expand(9, 3),
                               atol=1e-3, rtol=0)
    near_surface = ((out.samples.t - t_hit[:, None]).abs() < 0.05).sum(-1)
    assert (near_surface >= 30).all(), "the 36 importance samples concentrate within 5 cm of the surface"


def test_pixel_rays_turn_plane_depth_into_distance() -> None:
    k = torch.tensor([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    c, s = math.cos(0.4), math.sin(0.4)
    pose = torch.eye(4)
    pose[:3, :3] = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    pose[:3, 3] = torch.tensor([0.1, 0.2, 0.3])
    u, v = torch.tensor([0, 320, 639]), torch.tensor([0, 240, 479])
    origins, directions, scale = pixel_rays(k.expand(3, 3, 3), pose.expand(3, 4, 4), u, v)
    plane_depth = torch.tensor([1.0, 2.0, 3.0])
    world = origins + directions * (plane_depth * scale)[:, None]
    cam = (world - pose[:3, 3]) @ pose[:3, :3]  # back into the camera frame
    torch.testing.assert_close(cam[:, 2], plane_depth)
    torch.testing.assert_close(cam[:, 0] / cam[:, 2], (u - 320.0) / 500.0)


def test_sample_rays_only_at_valid_depth_and_inside_the_box() -> None:
    gen = torch.Generator().manual_seed(0)
    depth = torch.zeros(2, 30, 40)
    depth[0, 10:20, 5:35] = 0.5
    depth[1, :3, :3] = 0.4  # only 9 valid pixels: all of them are taken
    image = torch.rand(2, 30, 40, 3, generator=gen)
    k = torch.tensor([[40.0, 0, 20], [0, 40.0, 15], [0, 0, 1]]).expand(2, 3, 3)
    pose = torch.eye(4).expand(2, 4, 4).clone()
    pose[:, 2, 3] = -0.3
    rays = sample_rays(image, depth, k, pose, 16, UNIT_BOX, generator=gen, batch_index=3)
    assert len(rays) == 16 + 9
    assert (rays.batch_index == 3).all() and (rays.near >= 0.01).all() and (rays.far > rays.near).all()
    hit = rays.origins + rays.directions * rays.depth[:, None]
    torch.testing.assert_close(hit[:, 2], torch.cat([torch.full((16,), 0.2), torch.full((9,), 0.1)]))
    torch.testing.assert_close(rays.directions.norm(dim=-1), torch.ones(25))


def test_box_misses_are_reported() -> None:
    near, far, hit = near_far_from_box(torch.tensor([[2.0, 2.0, 2.0], [0.0, 0.0, 0.0]]),
                                       torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), *UNIT_BOX)
    assert hit.tolist() == [False, True]
    assert float(near[1]) == pytest.approx(0.01) and float(far[1]) == pytest.approx(0.55)


def test_sample_pdf_follows_the_weights() -> None:
    bins = torch.linspace(0, 1, 11).expand(2, 11)
    weights = torch.zeros(2, 10)
    weights[:, 7] = 1.0
    samples = sample_pdf(bins, weights, 50)
    assert ((samples >= 0.7) & (samples <= 0.8)).float().mean() > 0.9


def test_neus_alpha_is_opaque_only_when_entering_a_surface() -> None:
    sdf = torch.tensor([[0.01, -0.01]])
    deltas = torch.full((1, 2), 0.02)
    inward = neus_alpha(sdf, torch.tensor([[[0.0, 0.0, -1.0]] * 2]), torch.tensor([[0.0, 0.0, 1.0]]), deltas,
                        torch.tensor(500.0))
    outward = neus_alpha(sdf, torch.tensor([[[0.0, 0.0, 1.0]] * 2]), torch.tensor([[0.0, 0.0, 1.0]]), deltas,
                         torch.tensor(500.0))
    assert 1 - (1 - inward).prod() > 0.99 and outward.max() < 1e-2


def test_volume_field_renders_and_every_loss_has_gradients() -> None:
    torch.manual_seed(0)
    config = FieldConfig(sdf_channels=8, color_channels=8, hidden=32, geometry_features=8, semantic_dim=16)
    field = VolumeField(config)
    spec = type(INDOOR_GRID)(INDOOR_GRID.lo, INDOOR_GRID.hi, (8, 8, 4))
    sdf_volume = torch.randn(2, 4, 8, 8, 8, requires_grad=True)
    color_volume = torch.randn(2, 4, 8, 8, 8, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    n = 12
    rays = rays_towards(torch.tensor([0.0, 0.0, -0.5]), torch.rand(2 * n, 3, generator=gen) - 0.5)
    rays = RayBundle(rays.origins, rays.directions, rays.near, rays.far, torch.arange(2).repeat_interleave(n),
                     rgb=torch.rand(2 * n, 3, generator=gen), depth=rays.near + 0.3,
                     label=torch.randint(-1, 5, (2 * n,), generator=gen))
    out = render_rays(field.bind(sdf_volume, color_volume, spec), rays, NeuSSampler(16, 8), perturb=True, generator=gen)
    assert out.semantic.shape == (2 * n, 16)
    emb = class_embeddings([f"class{i}" for i in range(5)], dim=16)
    losses = rendering_losses(out, rays, LossWeights(), emb)
    assert set(losses) == {"rgb", "depth", "sdf", "free_space", "eikonal", "semantic", "total"}
    losses["total"].backward()
    for name, param in [*field.named_parameters(), ("sdf_volume", sdf_volume), ("color_volume", color_volume)]:
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name
    # each scene's rays read their own volume
    assert sdf_volume.grad[0].abs().sum() > 0 and sdf_volume.grad[1].abs().sum() > 0


def test_render_path_follows_ponderv2() -> None:
    """The SDF sees position only through the volume; free space is one-sided; depth is the weights' mean."""
    torch.manual_seed(1)
    field = VolumeField(FieldConfig(sdf_channels=4, color_channels=4, hidden=16, geometry_features=4))
    spec = type(INDOOR_GRID)(INDOOR_GRID.lo, INDOOR_GRID.hi, (6, 6, 4))
    flat = torch.ones(1, 4, 6, 6, 4)
    field.bind(flat, flat, spec)
    points = torch.rand(1, 5, 3) - 0.5
    sdf, _, gradient = field.sdf_and_gradient(points, torch.zeros(1, dtype=torch.long), create_graph=False)
    assert torch.allclose(sdf, sdf[0, 0].expand_as(sdf)) and gradient.abs().max() < 1e-6  # a constant volume

    volume = torch.randn(1, 4, 6, 6, 4)
    rays = rays_towards(torch.tensor([0.0, 0.0, -0.5]), torch.rand(16, 3) - 0.5)
    rays = RayBundle(rays.origins, rays.directions, rays.near, rays.far, rays.batch_index,
                     rgb=torch.rand(16, 3), depth=rays.near + 0.3)
    out = render_rays(field.bind(volume, volume, spec), rays, NeuSSampler(12, 6))
    assert ((out.depth >= out.samples.t[:, 0]) & (out.depth <= out.samples.t[:, -1])).all()
    far = rendering_losses(replace(out, sdf=torch.full_like(out.sdf, 0.3)), rays)["free_space"]
    near = rendering_losses(replace(out, sdf=torch.full_like(out.sdf, -0.1)), rays)["free_space"]
    assert float(far) == 0.0  # farther from any surface than the band: nothing to correct
    torch.testing.assert_close(near, torch.tensor(0.15))  # relu(0.05 - (-0.1)), weight 1


def test_volume_field_rejects_a_volume_of_the_wrong_shape() -> None:
    field = VolumeField(FieldConfig(sdf_channels=4, color_channels=4, hidden=8, geometry_features=4))
    with pytest.raises(ValueError, match="expected a"):
        field.bind(torch.zeros(1, 4, 8, 8, 6), torch.zeros(1, 4, 8, 8, 4), INDOOR_GRID)
    with pytest.raises(ValueError, match="do not match grid"):
        field.bind(torch.zeros(1, 4, 8, 8, 4), torch.zeros(1, 4, 8, 8, 4), INDOOR_GRID)


def test_volume_field_gradient_equals_autograd_through_sampling() -> None:
    """The assembled SDF gradient (and its derivatives) equal plain autograd through trilinear sampling."""
    torch.manual_seed(4)
    field = VolumeField(FieldConfig(sdf_channels=4, color_channels=2, hidden=8, geometry_features=3)).double()
    spec = type(INDOOR_GRID)(INDOOR_GRID.lo, INDOOR_GRID.hi, (5, 4, 3))
    sdf_volume = torch.randn(2, 3, 4, 5, 4, dtype=torch.float64, requires_grad=True)
    field.bind(sdf_volume, torch.zeros(2, 3, 4, 5, 2, dtype=torch.float64), spec)
    points = torch.rand(6, 7, 3, dtype=torch.float64) * 0.8 - 0.4
    batch_index = torch.tensor([0, 1, 1, 0, 1, 0])
    sdf, _, fast = field.sdf_and_gradient(points, batch_index, create_graph=True)
    _, _, slow = gradient_by_autograd(field, points, batch_index, create_graph=True)
    torch.testing.assert_close(fast, slow)
    weights = torch.randn_like(fast)
    torch.testing.assert_close(torch.autograd.grad((fast * weights).sum(), sdf_volume)[0],
                               torch.autograd.grad((slow * weights).sum(), sdf_volume)[0])


def test_semantic_embeddings(tmp_path: Path) -> None:
    a = deterministic_embeddings(["chair", "table"], dim=8)
    torch.testing.assert_close(a, deterministic_embeddings(["table", "chair"], dim=8).flip(0))
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(2))
    path = tmp_path / "clip.npz"
    np.savez(path, chair=np.ones(4), table=np.zeros(4), wall=np.full(4, 2.0))
    torch.testing.assert_close(load_embeddings(path, ["table", "chair"]), torch.tensor([[0.0] * 4, [1.0] * 4]))
    with pytest.raises(ValueError, match=r"clip.npz: no embedding for classes \['sofa'\]"):
        load_embeddings(path, ["sofa"])
    bad = tmp_path / "bad.json"
    bad.write_text('{"chair": [1, 2], "table": [1, 2, 3]}')
    with pytest.raises(ValueError, match="bad.json: embeddings must be 1-D vectors of one length"):
        load_embeddings(bad, ["chair", "table"])


def test_real_7scenes_rays_hit_their_own_depth(shared_data: Path) -> None:
    """Rays of a real frame, rendered from the SDF of the cloud fused from 20 frames, stop at its depth."""
    from scipy.spatial import cKDTree

    from tasks.formats.rgbd_folder import RGBDFolder

    views = RGBDFolder(shared_data / "7scenes-rgbd").views(list(range(0, 20)))
    points, normals = [], []
    for i in range(len(views)):
        p, n = _oriented_points(views, i, stride=4)
        points.append(p)
        normals.append(n)
    cloud, cloud_normals = np.concatenate(points), np.concatenate(normals)
    tree = cKDTree(cloud)
    cloud_t, normals_t = torch.from_numpy(cloud).float(), torch.from_numpy(cloud_normals).float()

    def point_to_plane(p: torch.Tensor) -> torch.Tensor:
        """Signed distance to the nearest point's tangent plane near the cloud; far from it, plain distance."""
        _, nearest = tree.query(p.detach().reshape(-1, 3).numpy())
        nearest = torch.from_numpy(nearest).reshape(p.shape[:-1])
        offset = p - cloud_t[nearest]
        distance = offset.norm(dim=-1)
        return torch.where(distance < 0.05, (offset * normals_t[nearest]).sum(-1), distance)

    box = (tuple(cloud.min(0) - 0.1), tuple(cloud.max(0) + 0.1))
    frame = views.select([10])
    rays = sample_rays(torch.from_numpy(frame.image) / 255.0, torch.from_numpy(frame.depth),
                       torch.from_numpy(frame.intrinsics), torch.from_numpy(frame.cam_to_world), 256, box,
                       generator=torch.Generator().manual_seed(0))
    out = render_rays(AnalyticField(point_to_plane, inv_s=300.0), rays, NeuSSampler(inv_s=64.0))
    error = (out.depth - rays.depth).detach().abs()
    assert float(error.median()) < 0.02, f"median depth error {float(error.median()):.3f} m"
    assert float((error < 0.05).float().mean()) > 0.75, "Kinect noise, edges and grazing rays aside"


def _oriented_points(views, index: int, stride: int) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """World points of one depth map with normals from its vertex-map cross product, facing the camera."""
    depth = views.depth[index, ::stride, ::stride].astype(np.float64)
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w] * stride
    k = views.intrinsics[index]
    cam = np.stack([(u - k[0, 2]) * depth / k[0, 0], (v - k[1, 2]) * depth / k[1, 1], depth], -1)
    du, dv = cam[1:-1, 2:] - cam[1:-1, :-2], cam[2:, 1:-1] - cam[:-2, 1:-1]
    normal = np.cross(du, dv)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-12
    centre = cam[1:-1, 1:-1]
    normal *= -np.sign((normal * centre).sum(-1, keepdims=True))  # towards the camera at the origin
    ok = (depth[1:-1, 1:-1] > 0) & (depth[1:-1, 2:] > 0) & (depth[1:-1, :-2] > 0) & (depth[2:, 1:-1] > 0) & (
        depth[:-2, 1:-1] > 0)
    c2w = views.cam_to_world[index]
    return ((centre[ok] @ c2w[:3, :3].T + c2w[:3, 3]).astype(np.float32),
            (normal[ok] @ c2w[:3, :3].T).astype(np.float32))


def test_render_with_triton_kernels_matches_reference(interpreter, monkeypatch) -> None:
    """The whole render and its gradients agree when both kernels run through Triton (interpreter on CPU)."""
    torch.manual_seed(5)
    field = VolumeField(FieldConfig(sdf_channels=4, color_channels=4, hidden=16, geometry_features=4))
    spec = type(INDOOR_GRID)(INDOOR_GRID.lo, INDOOR_GRID.hi, (6, 6, 4))
    sdf_volume = torch.randn(1, 4, 6, 6, 4, requires_grad=True)
    color_volume = torch.randn(1, 4, 6, 6, 4, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    rays = rays_towards(torch.tensor([0.0, 0.0, -0.5]), torch.rand(20, 3, generator=gen) - 0.5)
    rays = RayBundle(rays.origins, rays.directions, rays.near, rays.far, rays.batch_index,
                     rgb=torch.rand(20, 3, generator=gen), depth=rays.near + 0.4)
    results = []
    # the same samples for both: where a sample falls is a discontinuous function of the SDF's last bits
    samples = sample_along(field.bind(sdf_volume, color_volume, spec), rays, NeuSSampler(12, 6))
    for backend in ("triton", "reference"):
        monkeypatch.setenv("PONDERBENCH_BACKEND", backend)
        out = render_rays(field.bind(sdf_volume, color_volume, spec), rays, samples=samples)
        loss = rendering_losses(out, rays)["total"]
        results.append((out.rgb, out.depth, *torch.autograd.grad(loss, (sdf_volume, color_volume,
                                                                         field.variance.variance))))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_chunked_step_gives_the_gradients_of_one_pass() -> None:
    torch.manual_seed(6)
    field = VolumeField(FieldConfig(sdf_channels=4, color_channels=4, hidden=16, geometry_features=4)).double()
    spec = type(INDOOR_GRID)(INDOOR_GRID.lo, INDOOR_GRID.hi, (6, 6, 4))
    base = torch.randn(1, 4, 6, 6, 8, dtype=torch.float64, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    rays = rays_towards(torch.tensor([0.0, 0.0, -0.5]), torch.rand(30, 3, generator=gen) - 0.5)
    depth = rays.near + 0.2 + 0.3 * torch.rand(30, generator=gen)
    depth[::7] = 0.0  # a few rays without a depth target
    rays = RayBundle(rays.origins.double(), rays.directions.double(), rays.near.double(), rays.far.double(),
                     rays.batch_index, rgb=torch.rand(30, 3, generator=gen).double(), depth=depth.double())
    results = []
    for chunk in (None, 7):
        base.grad = None
        field.zero_grad()
        volumes = (base[..., :4] * 2, base[..., 4:] + 1)  # non-leaf volumes: the gradient goes on through them
        terms = render_and_backward(field, volumes, spec, rays, NeuSSampler(10, 5), chunk=chunk, perturb=False)
        results.append((terms, base.grad.clone(), field.variance.variance.grad.clone()))
    (terms_one, *grads_one), (terms_chunked, *grads_chunked) = results
    assert terms_one.keys() == terms_chunked.keys()
    for name in terms_one:
        assert terms_chunked[name] == pytest.approx(terms_one[name], rel=1e-9, abs=1e-12), name
    for one, chunked in zip(grads_one, grads_chunked, strict=True):
        torch.testing.assert_close(chunked, one, rtol=1e-9, atol=1e-12)
