"""What a 3D backbone costs: parameters, forward + backward throughput and the memory a step adds, on a fixed
generated scene.

Run in a fresh process (``python -m bench.perf.cost NAME [--plugin FILE]``, one JSON line), so that no earlier
backbone's memory is counted. ``step_peak_mib``: peak resident memory while the steps run, above the resident
memory before them (the scene, torch and the weights).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

POINTS = 40_000
STEPS = 3


def measure(name: str) -> dict[str, float]:
    import torch

    from backbones.registry import count_parameters, create_backbone
    from backbones.structures import PointBatch
    from bench.matrix.runner import PeakRSS
    from tasks.contract import in_channels, point_features, voxel_size
    from tasks.structures import Scene
    from tasks.synth.indoor import make_room, room_cloud
    from tasks.transforms import grid_sample_train

    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    cloud = room_cloud(make_room(rng, 10), 2500.0, rng)
    keep = np.sort(rng.choice(len(cloud.coord), POINTS, replace=False))
    scene = Scene("cost_room", cloud.coord[keep], cloud.color[keep].astype(np.float32), cloud.normal[keep])
    torch.manual_seed(0)
    net = create_backbone(name, in_channels=in_channels("indoor"))
    sampled = grid_sample_train(scene.coord, voxel_size("indoor", net.config.voxel_size), rng)
    batch = PointBatch.collate([(scene.coord[sampled.index], sampled.grid_coord,
                                 point_features(scene, "indoor")[sampled.index])])
    with PeakRSS() as memory:
        net(batch).square().mean().backward()  # warm-up
        start = time.perf_counter()
        for _ in range(STEPS):
            net.zero_grad(set_to_none=True)
            net(batch).square().mean().backward()
        seconds = (time.perf_counter() - start) / STEPS
    return {"params": count_parameters(net), "points": len(sampled.index), "points_per_s": len(sampled.index) / seconds,
            "step_peak_mib": (memory.peak - memory.start) / 2**20}


def measure_in_fresh_process(name: str, plugins: tuple[str, ...] = ()) -> dict[str, float | str]:
    """:func:`measure` in a child process; a failure comes back as ``{"error": its last line}``."""
    args = [sys.executable, "-m", "bench.perf.cost", name, *(f"--plugin={p}" for p in plugins)]
    out = subprocess.run(args, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    if out.returncode:
        lines = out.stderr.strip().splitlines() or [f"exit code {out.returncode}"]
        return {"error": lines[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backbone")
    parser.add_argument("--plugin", action="append", default=[])
    args = parser.parse_args()
    from backbones.registry import load_plugin

    for plugin in args.plugin:
        load_plugin(plugin)
    print(json.dumps(measure(args.backbone)))


if __name__ == "__main__":
    main()
