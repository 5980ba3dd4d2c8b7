"""Data-layer throughput (pytest-benchmark; run with ``pytest tests/benchmarks --benchmark-only``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.synth.suite import synthesize
from tasks.transforms import grid_sample_test, grid_sample_train

N_POINTS = 1_000_000


def _cloud() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.uniform(0, 1, (N_POINTS, 3)) * [8.0, 8.0, 3.0]).astype(np.float32)


def test_grid_sample_train_1m_points(benchmark) -> None:
    coord, rng = _cloud(), np.random.default_rng(0)
    out = benchmark(grid_sample_train, coord, 0.02, rng)
    benchmark.extra_info["points_per_s"] = N_POINTS / benchmark.stats.stats.median
    assert len(out.index) > 0


def test_grid_sample_test_1m_points(benchmark) -> None:
    coord = _cloud()
    parts = benchmark(grid_sample_test, coord, 0.05)
    benchmark.extra_info["points_per_s"] = N_POINTS / benchmark.stats.stats.median
    assert sum(len(p.index) for p in parts) >= N_POINTS


def test_synth_mini_suite(benchmark, tmp_path: Path) -> None:
    counter = iter(range(1000))
    benchmark.pedantic(lambda: synthesize(tmp_path / str(next(counter)), "mini", progress=False), rounds=1,
                       iterations=1)
