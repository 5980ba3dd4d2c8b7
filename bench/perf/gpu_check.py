"""GPU check of the renderer's Triton kernels: parity with the PyTorch reference on CUDA, then timings.

Run on a CUDA machine (``python -m bench.gpu_check --out results/perf/gpu_check.json``). It needs only
torch, triton and this repository's ``renderer`` (no spconv, no nuScenes devkit), and prints a Markdown
summary. Measured: the card's device-to-device copy bandwidth; compositing fwd+bwd (Triton, the log-space
reference, PonderV2's cumprod form) with the bandwidth it reaches; trilinear sampling with the eikonal
double backward (Triton, reference, ``F.grid_sample``); block-size sweeps; the renderer step (1,280 and
10,240 rays) with Triton, with the reference, and on the eager PonderV2-style path. Every section is
independent: a failure is recorded in the JSON and the rest still runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from renderer.kernels import composite as composite_kernel
from renderer.kernels import trilinear as trilinear_kernel
from renderer.trilinear import trilinear
from renderer.volrend import composite, composite_reference

REPO = Path(__file__).resolve().parents[1]


def timed(fn: Callable[[], object], repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds of ``fn`` on CUDA (synchronised)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def copy_bandwidth() -> dict:
    src = torch.empty(256 * 2**20, device="cuda")  # 1 GiB
    dst = torch.empty_like(src)
    seconds = timed(lambda: dst.copy_(src), repeats=20)
    return {"bytes_moved": 2 * src.numel() * 4, "seconds": seconds, "gb_per_s": 2 * src.numel() * 4 / seconds / 1e9}


def baseline():  # noqa: ANN201
    """The eager PonderV2-style baseline module kept with the benchmarks (tests/benchmarks/renderer_step.py)."""
    sys.path.insert(0, str(REPO / "tests" / "benchmarks"))
    import renderer_step

    return renderer_step


def composite_inputs(rays: int, samples: int, channels: int, seed: int = 0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    alpha = torch.rand(rays, samples, generator=gen, device="cuda").pow(4).requires_grad_(True)
    values = torch.rand(rays, samples, channels, generator=gen, device="cuda").requires_grad_(True)
    return alpha, values


def composite_parity() -> dict:
    alpha, values = composite_inputs(3000, 132, 7, seed=1)
    g_out = torch.randn(3000, 7, device="cuda")
    g_op = torch.randn(3000, device="cuda")
    results = []
    for backend in ("triton", "reference"):
        out, opacity = composite(alpha, values, backend=backend)
        grads = torch.autograd.grad((out * g_out).sum() + (opacity * g_op).sum(), (alpha, values))
        results.append((out, opacity, *grads))
    names = ("out", "opacity", "d_alpha", "d_values")
    return {n: float((a - b).abs().max()) for n, a, b in zip(names, *results, strict=True)}


def composite_step(fn: Callable, alpha: torch.Tensor, values: torch.Tensor) -> None:
    out, opacity = fn(alpha, values)
    torch.autograd.grad(out.sum() + opacity.sum(), (alpha, values))


def triton_composite(alpha: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return composite(alpha, values, backend="triton")


def composite_timings() -> dict:
    report = {}
    for rays in (10_240, 102_400):
        alpha, values = composite_inputs(rays, 132, 7)
        bytes_moved = 3 * rays * 132 * (1 + 7) * 4  # fwd reads alpha+values; bwd reads them and writes both grads
        row = {name: timed(partial(composite_step, fn, alpha, values))
               for name, fn in (("triton", triton_composite), ("reference", composite_reference),
                                ("cumprod", baseline().composite_cumprod))}
        row["speedup_vs_reference"] = row["reference"] / row["triton"]
        row["speedup_vs_cumprod"] = row["cumprod"] / row["triton"]
        row["triton_gb_per_s"] = bytes_moved / row["triton"] / 1e9
        report[f"{rays}x132x7"] = row
    sweep = {}
    alpha, values = composite_inputs(10_240, 132, 7)
    default = composite_kernel.BLOCK_R
    for block in (8, 16, 32, 64):
        composite_kernel.BLOCK_R = block
        sweep[block] = timed(partial(composite_step, triton_composite, alpha, values))
    composite_kernel.BLOCK_R = default
    report["block_r_sweep_10240"] = sweep
    return report


def trilinear_inputs(points: int, channels: int = 64, seed: int = 0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    volume = torch.randn(1, 32, 128, 128, channels, generator=gen, device="cuda").requires_grad_(True)
    extent = torch.tensor([129.0, 129.0, 33.0], device="cuda")
    pts = (torch.rand(1, points, 3, generator=gen, device="cuda") * extent - 1.0).requires_grad_(True)
    return volume, pts


def eikonal_step(volume: torch.Tensor, points: torch.Tensor, sample: Callable) -> None:
    feats = sample(volume, points)
    (grad,) = torch.autograd.grad(feats.sum(), points, create_graph=True)
    ((grad.norm(dim=-1) - 1).square().mean() + feats.square().mean()).backward()


def grid_sample_channels_first(volume_cf: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    _, _, nz, ny, nx = volume_cf.shape
    grid = points / points.new_tensor([nx - 1, ny - 1, nz - 1]) * 2 - 1
    out = F.grid_sample(volume_cf, grid[:, :, None, None, :], align_corners=True, padding_mode="border")
    return out[:, :, :, 0, 0].transpose(1, 2)


def trilinear_parity() -> dict:
    volume, points = trilinear_inputs(20_000, channels=64, seed=2)
    g = torch.randn(1, 20_000, 64, device="cuda")
    results = []
    for backend in ("triton", "reference"):
        out = trilinear(volume, points, backend)
        g_vol, g_pts = torch.autograd.grad((out * g).sum(), (volume, points), create_graph=True)
        second = (g_pts.square().sum(-1) + 1).sqrt().sum() + g_vol.square().sum()
        results.append((out, g_vol, g_pts, *torch.autograd.grad(second, (volume, points))))
    names = ("out", "d_volume", "d_points", "dd_volume", "dd_points")
    report = {}
    for n, a, b in zip(names, *results, strict=True):
        report[n] = {"max_abs": float((a - b).abs().max()), "max_ref": float(b.abs().max())}
    return report


def trilinear_timings() -> dict:
    report = {}
    for points in (1280 * 132, 10_240 * 132):
        volume, pts = trilinear_inputs(points)
        row = {backend: timed(partial(eikonal_step, volume, pts, partial(trilinear, backend=backend)), repeats=10)
               for backend in ("triton", "reference")}
        volume_cf = volume.detach().permute(0, 4, 1, 2, 3).contiguous().requires_grad_(True)
        row["grid_sample"] = timed(partial(eikonal_step, volume_cf, pts, grid_sample_channels_first), repeats=10)
        row["speedup_vs_reference"] = row["reference"] / row["triton"]
        row["speedup_vs_grid_sample"] = row["grid_sample"] / row["triton"]
        report[f"{points}_points_64ch"] = row
    sweep = {}
    volume, pts = trilinear_inputs(1280 * 132)
    default = trilinear_kernel.BLOCK_P
    for block in (16, 32, 64, 128):
        trilinear_kernel.BLOCK_P = block
        sweep[block] = timed(partial(eikonal_step, volume, pts, partial(trilinear, backend="triton")), repeats=10)
    trilinear_kernel.BLOCK_P = default
    report["block_p_sweep_168960"] = sweep
    return report


def training_step(step: Callable, field: torch.nn.Module, volumes: tuple[torch.Tensor, ...], bundle: object) -> None:
    for volume in volumes:
        volume.grad = None
    field.zero_grad(set_to_none=True)
    step(field, volumes, bundle)


def renderer_steps() -> dict:
    steps, make_inputs = baseline().STEPS, baseline().make_inputs

    from renderer.volume import INDOOR_GRID  # noqa: F401  (make_inputs lays the volume out on it)

    report = {}
    for rays in (1280, 10_240):
        row = {}
        for name, variant, backend in (("triton", "ours", "triton"), ("reference", "ours", "reference"),
                                       ("eager", "eager", None)):
            field, volumes, bundle = make_inputs(variant, rays=rays, device="cuda")
            os.environ["PONDERBENCH_BACKEND"] = backend or "auto"  # trilinear and compositing alike

            torch.cuda.reset_peak_memory_stats()
            try:
                row[name] = timed(partial(training_step, steps[variant], field, volumes, bundle), repeats=5, warmup=2)
                row[f"{name}_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            except torch.OutOfMemoryError:
                row[name] = "out of memory"
            del field, volumes, bundle
            torch.cuda.empty_cache()
        report[f"{rays}_rays"] = row
    os.environ.pop("PONDERBENCH_BACKEND")
    return report


SECTIONS = {"copy_bandwidth": copy_bandwidth, "composite_parity": composite_parity,
            "trilinear_parity": trilinear_parity, "composite": composite_timings, "trilinear": trilinear_timings,
            "renderer_step": renderer_steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "results" / "perf" / "gpu_check.json")
    parser.add_argument("--sections", nargs="*", default=list(SECTIONS))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check needs a CUDA device")
    import triton

    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
              "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    for name in args.sections:
        start = time.perf_counter()
        try:
            report[name] = SECTIONS[name]()
        except Exception:  # noqa: BLE001  (record and go on: one failure must not lose the other sections)
            report[name] = {"error": traceback.format_exc()}
        report.setdefault("section_seconds", {})[name] = time.perf_counter() - start
        print(f"## {name}\n{json.dumps(report[name], indent=1)}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(args.out)


if __name__ == "__main__":
    main()
