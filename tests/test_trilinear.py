"""Trilinear sampling: the reference agrees with F.grid_sample and passes gradcheck/gradgradcheck; the Triton
kernels match it in forward, backward and double backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from renderer.trilinear import trilinear, trilinear_reference


def test_matches_grid_sample_inside_the_volume() -> None:
    torch.manual_seed(0)
    volume = torch.randn(2, 4, 5, 6, 3, dtype=torch.float64)  # (B, Z, Y, X, C)
    points = torch.rand(2, 50, 3, dtype=torch.float64) * torch.tensor([5.0, 4.0, 3.0], dtype=torch.float64)
    ours = trilinear_reference(volume, points)
    # grid_sample: input (B, C, Z, Y, X), grid (x, y, z) in [-1, 1] with align_corners=True
    grid = points / torch.tensor([5.0, 4.0, 3.0], dtype=torch.float64) * 2 - 1
    ref = F.grid_sample(volume.permute(0, 4, 1, 2, 3), grid[:, :, None, None, :], align_corners=True)
    torch.testing.assert_close(ours, ref[:, :, :, 0, 0].transpose(1, 2))


def test_exact_at_cell_centres_and_clamped_outside() -> None:
    volume = torch.arange(2 * 3 * 4, dtype=torch.float64).reshape(1, 2, 3, 4, 1)
    pts = torch.tensor([[[3.0, 2.0, 1.0], [0.0, 0.0, 0.0], [9.0, -4.0, 0.0]]], dtype=torch.float64)
    out = trilinear_reference(volume, pts)[0, :, 0]
    torch.testing.assert_close(out, torch.tensor([23.0, 0.0, 3.0], dtype=torch.float64))


def test_reference_gradcheck_and_gradgradcheck() -> None:
    torch.manual_seed(1)
    volume = torch.randn(1, 3, 4, 5, 2, dtype=torch.float64, requires_grad=True)
    # keep points off cell boundaries, where the trilinear derivative jumps
    points = (torch.rand(1, 12, 3, dtype=torch.float64) * 0.8 + 0.1 + torch.randint(0, 2, (1, 12, 3))
              ).requires_grad_(True)
    assert torch.autograd.gradcheck(trilinear_reference, (volume, points))
    assert torch.autograd.gradgradcheck(trilinear_reference, (volume, points))


def test_eikonal_style_double_backward() -> None:
    """d/dvolume of |d f(x)/dx|^2 exists and matches finite differences."""
    torch.manual_seed(2)
    volume = torch.randn(1, 3, 3, 3, 1, dtype=torch.float64, requires_grad=True)
    points = torch.tensor([[[0.3, 1.6, 0.7], [1.2, 0.4, 1.5]]], dtype=torch.float64, requires_grad=True)

    def eikonal(vol: torch.Tensor) -> torch.Tensor:
        f = trilinear_reference(vol, points).sum()
        (grad,) = torch.autograd.grad(f, points, create_graph=True)
        return grad.square().sum()

    assert torch.autograd.gradcheck(eikonal, (volume,))


def test_gradgradcheck_with_both_second_order_inputs() -> None:
    """The double backward receives gradients for both outputs of the backward (volume and points)."""
    torch.manual_seed(3)
    volume = torch.randn(2, 2, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    points = (torch.rand(2, 5, 3, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    grad_out = torch.randn(2, 5, 2, dtype=torch.float64, requires_grad=True)

    def backward(vol: torch.Tensor, pts: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(trilinear_reference(vol, pts), (vol, pts), g, create_graph=True)

    assert torch.autograd.gradcheck(backward, (volume, points, grad_out))


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="expected volume"):
        trilinear(torch.zeros(1, 2, 2, 2), torch.zeros(1, 4, 3))


@pytest.mark.parametrize(("shape", "points_per_batch"), [((2, 3, 4, 5, 6), 40), ((1, 1, 3, 2, 33), 70)])
def test_triton_matches_reference(interpreter, shape: tuple[int, ...], points_per_batch: int) -> None:
    """Forward, both gradients and the eikonal-style double backward, at random points inside and outside."""
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)  # fresh inputs on every run
    b, nz, ny, nx, c = shape
    volume = torch.randn(*shape, generator=gen, requires_grad=True)
    extent = torch.tensor([nx + 1.0, ny + 1.0, nz + 1.0])
    points = (torch.rand(b, points_per_batch, 3, generator=gen) * extent - 1.0).requires_grad_(True)
    g = torch.randn(b, points_per_batch, c, generator=gen)
    results = []
    for backend in ("triton", "reference"):
        out = trilinear(volume, points, backend=backend)
        g_vol, g_pts = torch.autograd.grad((out * g).sum(), (volume, points), create_graph=True)
        second = (g_pts.square().sum(-1) + 1).sqrt().sum() + (g_vol * torch.linspace(0, 1, c)).square().sum()
        results.append((out, g_vol, g_pts, *torch.autograd.grad(second, (volume, points))))
    names = ("out", "d_volume", "d_points", "dd_volume", "dd_points")
    for got, want, name in zip(results[0], results[1], names, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


def test_corners_once_per_chain_never_across_calls_or_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference computes a chain's corners once (forward, backward and double backward share them), compares
    no point values to find them, and never hands one call's corners to another (other values, other device)."""
    import renderer.trilinear as tri

    computed = []
    real_corners = tri.corners

    def counting(points: torch.Tensor, shape: tuple[int, ...], memo: dict | None = None) -> object:
        computed.append(memo is None or "corners" not in memo)
        return real_corners(points, shape, memo)

    def no_equal(*args: object) -> bool:
        raise AssertionError("corners must not be found by comparing point values")

    monkeypatch.setattr(tri, "corners", counting)
    monkeypatch.setattr(torch, "equal", no_equal)
    gen = torch.Generator().manual_seed(0)
    volume = torch.randn(1, 3, 4, 5, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    points = (torch.rand(1, 7, 3, generator=gen, dtype=torch.float64) * 3).requires_grad_(True)
    out = trilinear_reference(volume, points)
    (g_points,) = torch.autograd.grad(out.sum(), points, create_graph=True)
    g_points.square().sum().backward()
    assert sum(computed) == 1 and len(computed) == 3  # forward, backward, double backward

    points.data += 0.5  # what gradcheck does between calls: no version bump
    moved = trilinear_reference(volume, points)
    fresh = trilinear_reference(volume, points.detach().clone())
    torch.testing.assert_close(moved, fresh)
    on_meta = trilinear_reference(volume.detach().to("meta"), points.detach().to("meta"))
    assert on_meta.device.type == "meta" and on_meta.shape == out.shape
