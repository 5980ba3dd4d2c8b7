"""One pre-training step (indoor, 40k-point scene, 5 views x 256 rays = 1,280 rays, fwd + bwd) on CPU, for the
mini preset and the reference recipe, through the engine's own step (``PonderModel.train_step``: rays rendered
in chunks of the recipe's ``ray_chunk``), with a breakdown of where the time goes (``extra_info``).

The generated room has no labels, so the semantic loss is not part of this step."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from bench.perf.gpu_check import LABELS
from bench.pretrain.data import build_sample, sample_rng
from bench.pretrain.model import PonderModel, sample_to
from bench.recipes import get_recipe
from tasks.structures import Scene
from tasks.synth.indoor import make_room, room_cloud, room_views


def _scene() -> Scene:
    rng = np.random.default_rng(0)
    room = make_room(rng, 12)
    cloud = room_cloud(room, 2500.0, rng)
    keep = np.sort(rng.choice(len(cloud.coord), 40_000, replace=False))
    return Scene("bench_room", cloud.coord[keep], cloud.color[keep].astype(np.float32), cloud.normal[keep],
                 views=room_views(room, 5, 320, 240, rng))


@pytest.mark.parametrize("preset", ["indoor-mini", "indoor"])
def test_pretrain_step_40k_points_1280_rays(benchmark, preset: str) -> None:
    torch.set_num_threads(2)
    recipe = replace(get_recipe(preset), max_points=None, views=5, rays_per_view=256, amp=False)
    scene = _scene()
    torch.manual_seed(0)
    model = PonderModel(recipe)
    position = iter(range(10**6))

    def data():  # noqa: ANN202
        return sample_to(build_sample(scene, recipe, 0.02, 0, next(position)), torch.device("cpu"))

    def step() -> None:
        sample = data()
        model.zero_grad(set_to_none=True)
        model.train_step(sample, sample_rng(0, 0, 0)[1])

    benchmark.pedantic(step, rounds=3, warmup_rounds=1)
    # one profiled step for the breakdown (seconds of CPU time inside each labelled block)
    start = time.perf_counter()
    sample = data()
    data_s = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        model.train_step(sample, sample_rng(0, 0, 0)[1])
        step_s = time.perf_counter() - start
    totals = {e.key: e.cpu_time_total / 1e6 for e in prof.key_averages() if e.key in LABELS}
    benchmark.extra_info.update({"data_s": data_s, "step_s": step_s, "ray_chunk": recipe.ray_chunk,
                                 "input_points_after_masking": int(len(sample.points.coord)),
                                 "rays": len(sample.rays), **{f"{k}_s": v for k, v in totals.items()}})
