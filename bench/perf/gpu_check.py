"""GPU check: the renderer's Triton kernels against their PyTorch references on CUDA, then timings.

``python -m bench.perf.gpu_check --out results/perf/gpu_check.json`` on a CUDA machine. Sections (each
independent: a failure is recorded in the JSON with its traceback and the rest still runs):

- ``environment``: device, torch, triton, spconv and cumm versions (or why they cannot be imported);
- ``copy_bandwidth``: a 1 GiB device-to-device copy, bytes read + written per second;
- ``composite_parity`` / ``trilinear_parity``: Triton against the reference (forward, backward, and for
  trilinear the double backward) on two fresh random draws, with the CPU interpreter tests' tolerances;
- ``composite``: fwd+bwd at 10,240 and 102,400 rays x 132 samples: Triton, the log-space reference and
  PonderV2's eager cumprod; GB/s and the fraction of the measured copy bandwidth; a BLOCK_R sweep;
- ``trilinear``: sampling with the eikonal double backward: Triton, the reference, ``F.grid_sample`` on the
  channels-first volume; a BLOCK_P sweep;
- ``renderer_step``: one renderer training step at 1,280 and 10,240 rays in one call (no chunking) with
  Triton, with the reference, and on the eager PonderV2-style path, with peak memory;
- ``pretrain_step``: one full reference indoor pre-training step (SpUNet-v1m1 -> volume -> U-Net ->
  renderer -> losses; bf16 autocast of the backbone as the recipe says), forward/backward split and the
  share of each labelled part of the forward;
- ``ptv3_attention``: ``ptv3-v1m1`` on a 100k-point room, eval forward and training step, with each SDPA kernel
  alone (flash, memory-efficient, math): time, peak memory, outputs against the first kernel that ran;
  ``spunet-v1m1`` on the same room.

Timings are medians of CUDA-event intervals after warm-up. ``--device cpu`` runs the same code on the CPU
as a smoke test of the script (Triton then needs ``TRITON_INTERPRET=1``); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.perf import renderer_step
from renderer.kernels import composite as composite_kernel
from renderer.kernels import trilinear as trilinear_kernel
from renderer.trilinear import trilinear
from renderer.volrend import composite, composite_reference
from tasks.io import atomic_write

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}  # tests/test_volrend.py and tests/test_trilinear.py (interpreter parity)
DEVICE = "cuda"
_measured: dict[str, float] = {}


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds of ``fn`` (CUDA events on the GPU; a synchronised host clock on the CPU)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        if DEVICE == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            begin = time.perf_counter()
            fn()
            times.append(time.perf_counter() - begin)
    return statistics.median(times)


def peak_memory_reset() -> None:
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else None


def environment() -> dict:
    import triton

    report = {"torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
              "device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"}
    if DEVICE == "cuda":
        props = torch.cuda.get_device_properties(0)
        report.update(multiprocessors=props.multi_processor_count, memory_gib=props.total_memory / 2**30,
                      capability=f"{props.major}.{props.minor}")
    for module in ("spconv", "cumm"):
        try:
            imported = __import__(module)
            report[module] = getattr(imported, "__version__", "imported")
        except Exception as exc:  # noqa: BLE001  (named, not skipped in silence)
            report[module] = f"not importable: {type(exc).__name__}: {exc}"
    return report


def copy_bandwidth() -> dict:
    src = torch.rand(256 * 2**20, device=DEVICE)  # 1 GiB of random floats
    dst = torch.empty_like(src)
    seconds = timed(lambda: dst.copy_(src), repeats=20)
    moved = 2 * src.numel() * 4
    _measured["copy_gb_per_s"] = moved / seconds / 1e9
    return {"bytes_moved": moved, "seconds": seconds, "gb_per_s": _measured["copy_gb_per_s"]}


def close(got: torch.Tensor, ref: torch.Tensor, exact: torch.Tensor) -> dict:
    """Triton (``got``) against the float32 reference (``ref``), both against the float64 reference (``exact``).

    Passes when it meets the interpreter tests' tolerance against float64, or is no further from float64 than
    twice the float32 reference is (long sums in float32 differ by their order alone). NaN never passes.
    """
    exact = exact.to(got.dtype)

    def rel(a: torch.Tensor) -> float:
        return float((a - exact).norm() / exact.norm().clamp(min=1e-30))

    ok = torch.allclose(got, exact, **TOLERANCE) or (got - exact).abs().max() <= 2 * (ref - exact).abs().max()
    return {"max_abs_vs_reference": float((got - ref).abs().max()), "max_ref": float(ref.abs().max()),
            "rel_err_triton": rel(got), "rel_err_reference_fp32": rel(ref),
            "pass": bool(ok and torch.isfinite(got).all())}


def composite_inputs(rays: int, samples: int, channels: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    alpha = torch.rand(rays, samples, generator=gen, device=DEVICE).pow(4).requires_grad_(True)
    values = torch.rand(rays, samples, channels, generator=gen, device=DEVICE).requires_grad_(True)
    return alpha, values


def composite_parity() -> dict:
    report = {}
    for seed in (1, 2):
        alpha, values = composite_inputs(3000, 132, 7, seed=seed)
        gen = torch.Generator(device=DEVICE).manual_seed(100 + seed)
        g_out = torch.randn(3000, 7, generator=gen, device=DEVICE)
        g_op = torch.randn(3000, generator=gen, device=DEVICE)
        results = []
        for backend, dtype in (("triton", torch.float32), ("reference", torch.float32), ("reference", torch.float64)):
            a, v = (t.detach().to(dtype).requires_grad_(True) for t in (alpha, values))
            out, opacity = composite(a, v, backend=backend)
            grads = torch.autograd.grad((out * g_out.to(dtype)).sum() + (opacity * g_op.to(dtype)).sum(), (a, v))
            results.append((out, opacity, *grads))
        names = ("out", "opacity", "d_alpha", "d_values")
        report[f"seed{seed}"] = {n: close(a, b, c) for n, a, b, c in zip(names, *results, strict=True)}
    report["pass"] = all(c["pass"] for draw in report.values() for c in draw.values())
    return report


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
                                ("cumprod", renderer_step.composite_cumprod))}
        row["speedup_vs_reference"] = row["reference"] / row["triton"]
        row["speedup_vs_cumprod"] = row["cumprod"] / row["triton"]
        row["triton_gb_per_s"] = bytes_moved / row["triton"] / 1e9
        if "copy_gb_per_s" in _measured:
            row["fraction_of_copy_bandwidth"] = row["triton_gb_per_s"] / _measured["copy_gb_per_s"]
        report[f"{rays}x132x7"] = row
    report["block_r_sweep_10240"] = sweep(composite_kernel, "BLOCK_R", (8, 16, 32, 64, 128),
                                          partial(composite_step, triton_composite, *composite_inputs(10_240, 132, 7)))
    return report


def sweep(module: object, name: str, values: tuple[int, ...], step: Callable[[], None]) -> dict:
    """Time ``step`` with each block size; the module's own value is restored afterwards."""
    default, times = getattr(module, name), {}
    try:
        for value in values:
            setattr(module, name, value)
            times[str(value)] = timed(step, repeats=10)
    finally:
        setattr(module, name, default)
    return {"seconds": times, "default": default, "fastest": min(times, key=times.get)}


def trilinear_inputs(points: int, channels: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    volume = torch.randn(1, 32, 128, 128, channels, generator=gen, device=DEVICE).requires_grad_(True)
    extent = torch.tensor([129.0, 129.0, 33.0], device=DEVICE)
    pts = (torch.rand(1, points, 3, generator=gen, device=DEVICE) * extent - 1.0).requires_grad_(True)
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
    report = {}
    for seed in (2, 3):
        volume, points = trilinear_inputs(20_000, channels=64, seed=seed)
        g = torch.randn(1, 20_000, 64, generator=torch.Generator(device=DEVICE).manual_seed(100 + seed),
                        device=DEVICE)
        results = []
        for backend, dtype in (("triton", torch.float32), ("reference", torch.float32), ("reference", torch.float64)):
            vol, pts = (t.detach().to(dtype).requires_grad_(True) for t in (volume, points))
            out = trilinear(vol, pts, backend)
            g_vol, g_pts = torch.autograd.grad((out * g.to(dtype)).sum(), (vol, pts), create_graph=True)
            second = (g_pts.square().sum(-1) + 1).sqrt().sum() + g_vol.square().sum()
            results.append((out, g_vol, g_pts, *torch.autograd.grad(second, (vol, pts))))
        names = ("out", "d_volume", "d_points", "dd_volume", "dd_points")
        report[f"seed{seed}"] = {n: close(a, b, c) for n, a, b, c in zip(names, *results, strict=True)}
    report["pass"] = all(c["pass"] for draw in report.values() for c in draw.values())
    return report


def first_order_step(volume: torch.Tensor, points: torch.Tensor, sample: Callable) -> None:
    sample(volume, points).square().mean().backward()


def attempt(fn: Callable[[], float]) -> float | str:
    """A timing, or the reason it could not be taken (the last line of the error)."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001  (named in the report, not skipped in silence)
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"


def ratio(num: object, den: object) -> float | None:
    return num / den if isinstance(num, float) and isinstance(den, float) else None


def trilinear_timings() -> dict:
    """Eikonal double backward (what the renderer needs) and, for a comparison grid_sample can join on every device,
    forward + first-order backward."""
    report = {}
    for points in (1280 * 132, 10_240 * 132):
        volume, pts = trilinear_inputs(points)
        volume_cf = volume.detach().permute(0, 4, 1, 2, 3).contiguous().requires_grad_(True)
        row = {}
        for order, step in (("eikonal", eikonal_step), ("first_order", first_order_step)):
            for backend in ("triton", "reference"):
                row[f"{backend}_{order}"] = attempt(partial(timed, partial(step, volume, pts, partial(
                    trilinear, backend=backend)), repeats=10))
            row[f"grid_sample_{order}"] = attempt(partial(timed, partial(step, volume_cf, pts,
                                                                         grid_sample_channels_first), repeats=10))
            row[f"speedup_vs_reference_{order}"] = ratio(row[f"reference_{order}"], row[f"triton_{order}"])
            row[f"speedup_vs_grid_sample_{order}"] = ratio(row[f"grid_sample_{order}"], row[f"triton_{order}"])
        row["triton_eikonal_vs_grid_sample_first_order"] = ratio(row["grid_sample_first_order"], row["triton_eikonal"])
        report[f"{points}_points_64ch"] = row
    volume, pts = trilinear_inputs(1280 * 132)
    report["block_p_sweep_168960"] = sweep(trilinear_kernel, "BLOCK_P", (16, 32, 64, 128, 256),
                                           partial(eikonal_step, volume, pts, partial(trilinear, backend="triton")))
    return report


def training_step(step: Callable, field: torch.nn.Module, volumes: tuple[torch.Tensor, ...], bundle: object) -> None:
    for volume in volumes:
        volume.grad = None
    field.zero_grad(set_to_none=True)
    step(field, volumes, bundle)


def renderer_steps() -> dict:
    """One renderer training step, all rays in one call: ours (Triton, reference) and the eager path (and, where
    grid_sample has no double backward, the eager path with a detached SDF gradient as a lower bound)."""
    import os

    report = {}
    variants = (("triton", "ours", "triton", renderer_step.ours_step),
                ("reference", "ours", "reference", renderer_step.ours_step),
                ("eager", "eager", "reference", renderer_step.eager_step),
                ("eager_detached_lower_bound", "eager", "reference", partial(renderer_step.eager_step,
                                                                             second_order=False)))
    for rays in (1280, 10_240):
        row = {}
        for name, variant, backend, step in variants:
            field, volumes, bundle = renderer_step.make_inputs(variant, rays=rays, device=DEVICE)
            step = partial(step, chunk=None) if variant == "ours" else step
            os.environ["PONDERBENCH_BACKEND"] = backend  # trilinear and compositing alike
            peak_memory_reset()
            try:
                row[name] = attempt(partial(timed, partial(training_step, step, field, volumes, bundle), repeats=5,
                                            warmup=2))
                row[f"{name}_peak_gib"] = peak_memory_gib() if isinstance(row[name], float) else None
            finally:
                os.environ.pop("PONDERBENCH_BACKEND")
            del field, volumes, bundle
            if DEVICE == "cuda":
                torch.cuda.empty_cache()
        for name in ("triton", "reference"):
            for base in ("eager", "eager_detached_lower_bound"):
                row[f"{name}_speedup_vs_{base}"] = ratio(row[base], row[name])
                row[f"{name}_memory_vs_{base}"] = ratio(row[f"{name}_peak_gib"], row[f"{base}_peak_gib"])
        report[f"{rays}_rays"] = row
    return report


LABELS = ("model/backbone", "model/scatter", "model/unet", "render/sampling", "render/fields", "render/compositing",
          "render/losses", "render/backward", "model/backward")


def _room_samples(recipe: object, count: int) -> list:
    """Pre-training samples of a generated 40k-point room with 5 RGB-D views (as the CPU benchmark uses)."""
    import numpy as np

    from bench.pretrain.data import build_sample
    from bench.pretrain.model import sample_to
    from tasks.structures import Scene
    from tasks.synth.indoor import make_room, room_cloud, room_views

    rng = np.random.default_rng(0)
    room = make_room(rng, 12)
    cloud = room_cloud(room, 2500.0, rng)
    keep = np.sort(rng.choice(len(cloud.coord), 40_000, replace=False))
    scene = Scene("bench_room", cloud.coord[keep], cloud.color[keep].astype(np.float32), cloud.normal[keep],
                  views=room_views(room, 5, 320, 240, rng))
    return [sample_to(build_sample(scene, recipe, 0.02, 0, i), torch.device(DEVICE)) for i in range(count)]


def _label_seconds(prof: torch.profiler.profile) -> dict[str, float]:
    """Seconds of each labelled block: its GPU span where the profiler recorded one, else its CPU span."""
    from torch.autograd import DeviceType

    gpu: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for event in prof.events():
        if event.name in LABELS:
            spans = gpu if event.device_type == DeviceType.CUDA else cpu
            spans[event.name] = spans.get(event.name, 0.0) + event.time_range.elapsed_us() / 1e6
    return {label: gpu.get(label, cpu.get(label, 0.0)) for label in LABELS if label in gpu or label in cpu}


def pretrain_step(amp: bool = True) -> dict:
    """One reference indoor pre-training step; with bf16 autocast of the backbone, else (if that fails) fp32."""
    from bench.pretrain.data import sample_rng
    from bench.pretrain.model import PonderModel
    from bench.recipes import get_recipe

    recipe = replace(get_recipe("indoor"), max_points=None, views=5, rays_per_view=256, amp=amp)
    torch.manual_seed(0)
    model = PonderModel(recipe).to(DEVICE)
    samples = _room_samples(recipe, 4)

    def step(k: int = 0) -> None:
        model.zero_grad(set_to_none=True)
        model.train_step(samples[k % len(samples)], sample_rng(0, 0, k)[1])  # the pre-training engine's step
        sync()

    counter = iter(range(10**6))
    peak_memory_reset()
    total = timed(lambda: step(next(counter)), repeats=5, warmup=2)
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA]
                                                          if DEVICE == "cuda" else [])
    with torch.profiler.profile(activities=activities) as prof:
        step(0)
        sync()
    parts = _label_seconds(prof)
    return {"recipe": "indoor (spunet-v1m1, 128x128x32 grid, 96 ch, 96+36 samples), 5 views x 256 rays",
            "input_points_after_masking": int(len(samples[0].points.coord)), "amp_bf16_backbone": amp,
            "ray_chunk": recipe.ray_chunk, "step_s": total, "peak_gib": peak_memory_gib(), "parts_s": parts,
            "share_of_step": {k: v / total for k, v in parts.items()}}


def pretrain_steps() -> dict:
    report = {}
    try:
        report["bf16"] = pretrain_step(amp=True)
    except Exception:  # noqa: BLE001  (e.g. spconv without bf16 kernels: say so, then measure fp32)
        report["bf16"] = {"error": traceback.format_exc()[-3000:]}
        report["fp32"] = pretrain_step(amp=False)
    return report


def ptv3_attention(points: int = 100_000) -> dict:
    """PTv3 (``ptv3-v1m1``, patch 1024) on one 100k-point generated room at 2 cm: eval forward and a training
    forward + backward with fp16 autocast (flash needs half precision; CPU: float32), with each SDPA kernel alone
    (flash, memory-efficient, math), their peak memory and their outputs against the math kernel's; SpUNet-v1m1 on
    the same room for scale."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from backbones.registry import create_backbone
    from tests.benchmarks.test_bench_backbones import _room_batch

    batch = _room_batch(points).to(DEVICE)
    half = torch.autocast("cuda", dtype=torch.float16) if DEVICE == "cuda" else torch.autocast("cpu", enabled=False)
    report: dict[str, object] = {"points": points, "autocast": "fp16" if DEVICE == "cuda" else "none"}
    torch.manual_seed(0)
    nets = {name: create_backbone(name).to(DEVICE) for name in ("ptv3-v1m1", "spunet-v1m1")}
    reference = None
    kernels = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
               "math": SDPBackend.MATH}
    for name, kernel in [*kernels.items(), ("spunet-v1m1", None)]:
        net = nets["spunet-v1m1" if kernel is None else "ptv3-v1m1"]
        chosen = sdpa_kernel([kernel] if kernel is not None else list(kernels.values()))

        def forward(net: torch.nn.Module = net) -> torch.Tensor:
            with torch.no_grad(), half:
                return net.eval()(batch)

        def step(net: torch.nn.Module = net) -> None:
            net.train().zero_grad(set_to_none=True)
            with half:
                loss = net(batch).float().square().mean()
            loss.backward()

        row: dict[str, object] = {}
        with chosen:
            peak_memory_reset()
            row["forward_s"] = attempt(lambda f=forward: timed(f, repeats=5, warmup=1))
            row["forward_peak_gib"] = peak_memory_gib()
            if kernel is not None and isinstance(row["forward_s"], float):
                out = forward().float()
                reference = out if reference is None else reference
                row["max_abs_vs_first_kernel"] = float((out - reference).abs().max())
            state = {k: v.clone() for k, v in net.state_dict().items()}  # training steps move BatchNorm statistics
            peak_memory_reset()
            row["train_step_s"] = attempt(lambda s=step: timed(s, repeats=3, warmup=1))
            row["train_step_peak_gib"] = peak_memory_gib()
            net.load_state_dict(state)
        report[name] = row
    return report


SECTIONS = {"environment": environment, "copy_bandwidth": copy_bandwidth, "composite_parity": composite_parity,
            "trilinear_parity": trilinear_parity, "composite": composite_timings, "trilinear": trilinear_timings,
            "renderer_step": renderer_steps, "pretrain_step": pretrain_steps, "ptv3_attention": ptv3_attention}


def main() -> None:
    global DEVICE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "results" / "perf" / "gpu_check.json")
    parser.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cpu: a smoke test of this script (needs TRITON_INTERPRET=1); its numbers mean nothing")
    args = parser.parse_args()
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check needs a CUDA device (or --device cpu for a smoke test)")
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "device_kind": DEVICE}
    for name in args.sections:
        start = time.perf_counter()
        try:
            report[name] = SECTIONS[name]()
        except Exception:  # noqa: BLE001  (record and go on: one failure must not lose the other sections)
            report[name] = {"error": traceback.format_exc()}
        report.setdefault("section_seconds", {})[name] = time.perf_counter() - start
        print(f"## {name} ({report['section_seconds'][name]:.1f} s)\n{json.dumps(report[name], indent=1)}",
              flush=True)
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(report, indent=1)))


if __name__ == "__main__":
    main()
