"""Whole-scene evaluation at real sizes: a generated 1M-point indoor scene and a 300k-point outdoor sweep through
``predict_scene`` (test-mode fragments voted per voxel), time and peak memory, each in a fresh process.

``pytest tests/benchmarks/test_bench_predict.py --benchmark-only``; run as a script
(``python tests/benchmarks/test_bench_predict.py indoor|outdoor``) it prints one JSON line.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

SIZES = {"indoor": 1_000_000, "outdoor": 300_000}


def _scene(domain: str):  # noqa: ANN202
    from tasks.structures import Scene
    from tasks.synth.indoor import make_room, room_cloud
    from tasks.synth.outdoor import make_street, scan_lidar

    rng = np.random.default_rng(0)
    if domain == "indoor":
        room = make_room(rng, 12)
        cloud = room_cloud(room, 20_000.0, rng)
        keep = rng.choice(len(cloud.coord), SIZES["indoor"], replace=len(cloud.coord) < SIZES["indoor"])
        return Scene("room_1m", cloud.coord[keep], cloud.color[keep].astype(np.float32), cloud.normal[keep])
    street = make_street(rng)
    pose = np.eye(4)
    pose[:3, 3] = (0.0, 0.0, 1.73)
    scan = scan_lidar(street.boxes, pose, 16_384, rng, beams=32)
    keep = rng.choice(len(scan.points), SIZES["outdoor"], replace=len(scan.points) < SIZES["outdoor"])
    points = (scan.points - pose[:3, 3])[keep].astype(np.float32)
    return Scene("sweep_300k", points, strength=scan.intensity[keep, None].astype(np.float32))


def main(domain: str) -> None:
    import torch

    from backbones.registry import create_backbone
    from bench.finetune.semseg import predict_scene
    from tasks.contract import in_channels, voxel_size
    from tasks.heads.segmentation import SegmentationModel

    torch.set_num_threads(2)
    scene = _scene(domain)
    torch.manual_seed(0)
    backbone = create_backbone("spunet-mini", in_channels=in_channels(domain))
    model = SegmentationModel(backbone, backbone.config.out_channels, 20).eval()
    before = int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
    start = time.perf_counter()
    pred = predict_scene(model, scene, voxel_size(domain, 0.02), domain, 20, torch.device("cpu"))
    seconds = time.perf_counter() - start
    assert pred.shape == (len(scene),)
    print(json.dumps({"domain": domain, "points": len(scene), "seconds": seconds,
                      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "rss_before_bytes": before}))


@pytest.mark.parametrize("domain", ["indoor", "outdoor"])
def test_predict_scene_peak_memory(benchmark, domain: str) -> None:
    repo = Path(__file__).parents[2]

    def fresh_process() -> dict:
        out = subprocess.run([sys.executable, __file__, domain], capture_output=True, text=True, check=True,
                             cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)})
        return json.loads(out.stdout.strip().splitlines()[-1])

    report = benchmark.pedantic(fresh_process, rounds=1, iterations=1)
    benchmark.extra_info.update(report)


if __name__ == "__main__":
    main(sys.argv[1])
