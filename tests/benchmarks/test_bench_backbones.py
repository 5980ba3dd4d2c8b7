"""Backbone and lifting speed on CPU (pytest-benchmark; ``pytest tests/benchmarks --benchmark-only``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backbones.lift import lift_to_volume
from backbones.registry import create_backbone
from backbones.structures import PointBatch
from tasks.synth.indoor import make_room, room_cloud
from tasks.transforms import grid_sample_train

N_POINTS = 40_000


def _indoor_batch(voxel: float = 0.02) -> PointBatch:
    """A 40k-point generated room at 2 cm voxels, colour + normal features (6 channels)."""
    rng = np.random.default_rng(0)
    cloud = room_cloud(make_room(rng, 12), 2500.0, rng)
    sampled = grid_sample_train(cloud.coord, voxel, rng)
    keep = sampled.index[:N_POINTS]
    assert len(keep) == N_POINTS, "the room should hold at least 40k voxels"
    feat = np.c_[cloud.color[keep] / 255.0, cloud.normal[keep]]
    return PointBatch.collate([(cloud.coord[keep], sampled.grid_coord[:N_POINTS], feat)])


@pytest.mark.parametrize("name", ["spunet-v1m1", "spunet-mini"])
def test_spunet_forward_backward_40k(benchmark, name: str) -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = create_backbone(name)
    batch = _indoor_batch()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(batch).square().mean().backward()

    benchmark.pedantic(step, rounds=3, warmup_rounds=1)
    benchmark.extra_info["points"] = N_POINTS


def test_lift_throughput(benchmark) -> None:
    """6 views of 64-channel stride-8 maps of 256x704 images into a 100x100x8 volume (80k voxels)."""
    torch.set_num_threads(2)
    feats = torch.randn(1, 6, 64, 32, 88)
    k = torch.tensor([[300.0, 0, 352], [0, 300.0, 128], [0, 0, 1]]).expand(1, 6, 3, 3)
    poses = torch.eye(4).repeat(1, 6, 1, 1)
    for i in range(6):
        a = i * np.pi / 3
        poses[0, i, :3, :3] = torch.tensor([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]],
                                           dtype=torch.float32)
    result = benchmark(lift_to_volume, feats, 8, k, poses, (256, 704), (-50, -5, -50), (50, 3, 50), (100, 8, 100))
    benchmark.extra_info["voxels_per_s"] = 100 * 100 * 8 / benchmark.stats.stats.median
    assert result[1].sum() > 0


def _room_batch(points: int, voxel: float = 0.02) -> PointBatch:
    """A generated room grid-sampled at ``voxel``, its first ``points`` voxels (one point each)."""
    rng = np.random.default_rng(0)
    cloud = room_cloud(make_room(rng, 12), 6000.0, rng)
    sampled = grid_sample_train(cloud.coord, voxel, rng)
    keep = sampled.index[:points]
    assert len(keep) == points, f"the room holds {len(keep)} voxels at {voxel} m, fewer than {points}"
    feat = np.c_[cloud.color[keep] / 255.0, cloud.normal[keep]]
    return PointBatch.collate([(cloud.coord[keep], sampled.grid_coord[:points], feat)])


@pytest.mark.parametrize(("name", "attention"), [("spunet-v1m1", "-"), ("ptv3-v1m1", "default"),
                                                 ("ptv3-v1m1", "math")])
def test_forward_100k_room(benchmark, name: str, attention: str) -> None:
    """Eval-mode forward of the full-size backbones on one 100k-point room at 2 cm (#28's comparison). For PTv3,
    ``attention`` picks the SDPA kernels: PyTorch's choice (a fused flash kernel on the CPU) or the math
    reference."""
    from contextlib import nullcontext

    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = create_backbone(name).eval()
    batch = _room_batch(100_000)
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]) if attention == "math" else nullcontext():
        benchmark.pedantic(model, args=(batch,), rounds=2, warmup_rounds=1)
    benchmark.extra_info["points"] = 100_000
