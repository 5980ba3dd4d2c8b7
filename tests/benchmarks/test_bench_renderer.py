"""Renderer speed: compositing and trilinear sampling (reference on CPU, Triton vs reference on CUDA), and one
renderer training step against the eager PonderV2-style baseline in ``bench/perf/renderer_step.py``.

``pytest tests/benchmarks/test_bench_renderer.py --benchmark-only`` runs them; the step benchmarks also
record each variant's peak RSS, measured in a fresh process, in ``extra_info``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.perf.renderer_step import STEPS, composite_cumprod, make_inputs
from renderer.trilinear import trilinear
from renderer.volrend import composite, composite_reference

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _composite_inputs(device: str, rays: int = 10_240, samples: int = 132, channels: int = 7):
    gen = torch.Generator().manual_seed(0)
    alpha = torch.rand(rays, samples, generator=gen).pow(4).to(device).requires_grad_(True)
    values = torch.rand(rays, samples, channels, generator=gen).to(device).requires_grad_(True)
    return alpha, values


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", ["reference", "cumprod", "triton"])
def test_composite_fwd_bwd_10240x132(benchmark, device: str, variant: str) -> None:
    if variant == "triton" and device == "cpu":
        pytest.skip("Triton runs on CUDA (the CPU interpreter is for parity, not speed)")
    torch.set_num_threads(2)
    alpha, values = _composite_inputs(device)
    fn = {"reference": composite_reference, "cumprod": composite_cumprod,
          "triton": lambda a, v: composite(a, v, backend="triton")}[variant]

    def step() -> None:
        out, opacity = fn(alpha, values)
        torch.autograd.grad(out.sum() + opacity.sum(), (alpha, values))
        _sync(device)

    benchmark.pedantic(step, rounds=10, warmup_rounds=2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_trilinear_eikonal_169k_points(benchmark, device: str, backend: str) -> None:
    """Sampling 1,280 x 132 points from a 64-channel 32 x 128 x 128 volume, with an eikonal-style double backward."""
    if backend == "triton" and device == "cpu":
        pytest.skip("Triton runs on CUDA (the CPU interpreter is for parity, not speed)")
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    volume = torch.randn(1, 32, 128, 128, 64, generator=gen).to(device).requires_grad_(True)
    points = (torch.rand(1, 1280 * 132, 3, generator=gen) * torch.tensor([127.0, 127.0, 31.0])).to(device)
    points.requires_grad_(True)

    def step() -> None:
        feats = trilinear(volume, points, backend)
        (grad,) = torch.autograd.grad(feats.sum(), points, create_graph=True)
        ((grad.norm(dim=-1) - 1).square().mean() + feats.square().mean()).backward()
        _sync(device)

    benchmark.pedantic(step, rounds=5, warmup_rounds=1)


def _memory_in_fresh_process(variant: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "bench.perf.renderer_step", variant, "1"], capture_output=True,
                            text=True, check=True,
                            cwd=Path(__file__).parents[2], env={"PYTHONPATH": str(Path(__file__).parents[2])})
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return {key: report[key] for key in ("peak_rss_bytes", "rss_before_step_bytes")}


@pytest.mark.parametrize("variant", ["ours", "eager"])
def test_renderer_step_1280_rays(benchmark, variant: str) -> None:
    """Forward + backward of 1,280 rays x 132 samples on the reference 128-channel 32 x 128 x 128 volume."""
    torch.set_num_threads(2)
    field, volumes, rays = make_inputs(variant)

    def step() -> None:
        for volume in volumes:
            volume.grad = None
        field.zero_grad(set_to_none=True)
        STEPS[variant](field, volumes, rays)

    benchmark.pedantic(step, rounds=3, warmup_rounds=1)
    benchmark.extra_info.update(_memory_in_fresh_process(variant))
