"""Instance clustering on a 100k-point scene (radius graph with cKDTree + connected components, CPU)."""

from __future__ import annotations

import numpy as np

from tasks.heads.instance import centre_offsets, cluster_instances


def test_cluster_100k_points(benchmark) -> None:
    rng = np.random.default_rng(0)
    objects = 50
    centres = rng.uniform(0, 10, (objects, 3)) * [1, 1, 0.3]
    coord = np.concatenate([c + rng.normal(0, 0.2, (2000, 3)) for c in centres]).astype(np.float32)
    instance = np.repeat(np.arange(objects), 2000)
    probabilities = np.eye(20)[rng.integers(2, 20, objects)][instance] * 0.9 + 0.005
    offsets = centre_offsets(coord, instance) * 0.9  # a good, not perfect, offset head
    found = benchmark(cluster_instances, coord, offsets, probabilities, (0, 1), 0.02)
    benchmark.extra_info.update(points=len(coord), proposals=len(found))
    assert len(found) >= objects // 2
