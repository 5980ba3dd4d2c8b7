"""One world <-> grid mapping: what is written at a world point is read back there."""

from __future__ import annotations

import pytest
import torch

from backbones.lift import voxel_centers
from renderer.projection import UNet3D
from renderer.volume import GridSpec, sample_volume, scatter_mean
from tasks.contract import INDOOR_GRID, OUTDOOR_GRID


def test_written_features_are_read_back_at_the_same_world_points() -> None:
    spec = GridSpec((-0.5, -0.5, -0.5), (0.5, 0.5, 0.5), (16, 16, 8))
    g = torch.Generator().manual_seed(0)
    cells = torch.stack([torch.randint(0, n, (40,), generator=g) for n in spec.shape], dim=1).unique(dim=0)
    points = spec.index_to_world(cells.double())
    feats = torch.randn(len(points), 4, generator=g, dtype=torch.float64)
    volume = scatter_mean(points, feats, torch.zeros(len(points), dtype=torch.long), 1, spec)
    torch.testing.assert_close(sample_volume(volume, points[None], spec)[0], feats)


def test_the_reference_implementations_mismatch_would_be_caught() -> None:
    """Sampling with PonderV2's p / 1.1 + 0.5 convention reads a different place than the scatter wrote."""
    spec = GridSpec((-0.5, -0.5, -0.5), (0.5, 0.5, 0.5), (16, 16, 8))
    point = spec.index_to_world(torch.tensor([[14.0, 2.0, 6.0]], dtype=torch.float64))
    volume = scatter_mean(point, torch.ones(1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.long), 1, spec)
    assert sample_volume(volume, point[None], spec).item() == 1.0
    assert sample_volume(volume, point[None] / 1.1, spec).item() < 0.9


def test_scatter_mean_averages_and_drops_outside_points() -> None:
    spec = GridSpec((0.0, 0.0, 0.0), (2.0, 2.0, 2.0), (2, 2, 2))
    points = torch.tensor([[0.4, 0.5, 0.5], [0.6, 0.5, 0.5], [5.0, 0.0, 0.0]])
    feats = torch.tensor([[1.0], [3.0], [100.0]])
    volume = scatter_mean(points, feats, torch.zeros(3, dtype=torch.long), 1, spec)
    assert volume[0, 0, 0, 0, 0] == 2.0 and volume.sum() == 2.0


def test_grid_centres_agree_with_the_lifting_centres() -> None:
    spec = GridSpec((-1.0, -2.0, 0.0), (1.0, 2.0, 1.0), (4, 8, 2))
    centres = voxel_centers(spec.lo, spec.hi, spec.shape).double()  # (Z, Y, X, 3)
    idx = spec.world_to_index(centres)
    zz, yy, xx = torch.meshgrid(torch.arange(2.0), torch.arange(8.0), torch.arange(4.0), indexing="ij")
    torch.testing.assert_close(idx, torch.stack([xx, yy, zz], -1).double())


def test_reference_grids() -> None:
    assert INDOOR_GRID.shape == (128, 128, 32)
    cell = [(h - lo) / n for lo, h, n in zip(OUTDOOR_GRID.lo, OUTDOOR_GRID.hi, OUTDOOR_GRID.shape, strict=True)]
    assert [round(c, 6) for c in cell] == [0.6, 0.6, 1.6]


@pytest.mark.parametrize("cells", [(4, 16, 16), (5, 18, 18), (1, 6, 7)])
def test_unet3d_keeps_the_grid_and_splits_into_contiguous_halves(cells: tuple[int, int, int]) -> None:
    net = UNet3D(in_channels=6, out_channels=(4, 3), base_channels=4, levels=4)
    sdf, color = net(torch.randn(2, *cells, 6))
    assert sdf.shape == (2, *cells, 4) and color.shape == (2, *cells, 3)
    assert sdf.is_contiguous() and color.is_contiguous()
    (sdf.sum() + color.sum()).backward()
    assert all(p.grad is not None for p in net.parameters())
