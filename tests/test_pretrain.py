"""Pre-training engine: all three modes end to end on the tiny suite, exact resume (also after kill -9),
the non-finite-loss stop, export, recipes, and two gloo processes against one process."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from bench.pretrain.engine import Pretrainer
from bench.pretrain.heldout import draw_heldout
from bench.recipes import PRESETS as PRESETS_BY_NAME
from bench.recipes import get_recipe, pretrain_recipe_from
from bench.trainer import Diverged

REPO = Path(__file__).resolve().parents[1]
MICRO = ["grid=(16,16,8)", "volume_channels=8", "unet_base=4", "unet_levels=2", "sdf_channels=8",
         "color_channels=8", "hidden=16", "semantic_dim=8", "n_uniform=12", "n_importance=6", "views=2",
         "rays_per_view=24", "render_size=(12,16)", "max_points=3000", "lr=1e-3", "render_every=2"]
PRESETS = {"indoor": ("indoor-mini", "scannet", ["backbone=spunet-micro"]),
           "image": ("image-mini", "scannet", ["backbone=timm:resnet18", "image_size=(64,64)"]),
           "outdoor-kitti": ("outdoor-mini", "semantickitti", ["backbone=spunet-micro", "lidar_rays=128",
                                                               "grid=(30,30,4)", "semantic_dim=0"]),
           "outdoor-nuscenes": ("outdoor-mini", "nuscenes", ["backbone=spunet-micro", "lidar_rays=128",
                                                             "grid=(30,30,4)", "semantic_dim=0"]),
           # PonderV2's outdoor pretext: camera rays, the mask token, the conv projection, depth loss only
           "outdoor-camera": ("outdoor", "nuscenes", ["backbone=spunet-micro", "grid=(30,30,4)", "batch_size=1",
                                                      "semantic_dim=0", "field_layers=2", "geometry_features=4"])}


def micro_recipe(case: str, *extra: str):  # noqa: ANN201
    preset, _, overrides = PRESETS[case]
    return get_recipe(preset, [*MICRO, *overrides, "epochs=2", "steps_per_epoch=2", *extra])


def state_of(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


@pytest.mark.parametrize("case", list(PRESETS))
def test_every_mode_runs_end_to_end_on_the_tiny_suite(tiny_root: Path, tmp_path: Path, case: str) -> None:
    recipe = micro_recipe(case)
    result = Pretrainer(recipe, tiny_root / PRESETS[case][1], tmp_path / "run", progress=False).run()
    run = tmp_path / "run"
    assert result.steps == 4 and (run / "checkpoint.pt").is_file() and (run / "loss_curve.png").is_file()
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4] and {x["event"] for x in lines} == {"train"}
    sdf_terms = {"depth", "sdf", "free_space", "eikonal", "total"}
    expected = ({"depth", "total"} if case == "outdoor-camera" else
                sdf_terms | ({"rgb"} if case in ("indoor", "image") else set()))
    assert expected <= set(lines[0])
    if case == "indoor":
        assert "semantic" in lines[0], "ScanNet labels give the semantic rendering loss"
    assert sorted(p.name for p in (run / "renders").iterdir()) == ["step_000002.png", "step_000004.png"]
    meta = json.loads((run / "backbone.json").read_text())
    assert meta["sha256"] == hashlib.sha256((run / "backbone.pt").read_bytes()).hexdigest()
    assert meta["backbone"] == recipe.backbone and meta["steps"] == 4 and meta["code_version"]
    assert set(meta["final_losses"]) == set(result.last_losses)
    weights = torch.load(run / "backbone.pt")
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
    if case != "image":  # dataset roots report the depth error on validation scenes pre-training never saw
        assert result.heldout_depth_error_before > 0 and result.heldout_depth_error_after > 0


def test_resume_continues_exactly(tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = micro_recipe("indoor")
    Pretrainer(recipe, tiny_root / "scannet", tmp_path / "straight", progress=False).run()

    original = Pretrainer._step_loss
    calls = {"n": 0}

    def crash_in_epoch_two(self, *args):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == 4:  # the second step of epoch 2: its first step is lost with the crash
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(Pretrainer, "_step_loss", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        Pretrainer(recipe, tiny_root / "scannet", tmp_path / "resumed", progress=False).run()
    assert json.loads((tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 3
    monkeypatch.setattr(Pretrainer, "_step_loss", original)
    Pretrainer(recipe, tiny_root / "scannet", tmp_path / "resumed", progress=False, resume=True).run()

    straight, resumed = state_of(tmp_path / "straight"), state_of(tmp_path / "resumed")
    for name, value in straight.items():
        assert torch.equal(value, resumed[name]), name
    rows = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["event"], r["step"]) for r in rows] == [("train", 1), ("train", 2), ("resume", 2), ("train", 3),
                                                       ("train", 4)]


def test_resume_refuses_another_recipe(tiny_root: Path, tmp_path: Path) -> None:
    Pretrainer(micro_recipe("indoor", "epochs=1"), tiny_root / "scannet", tmp_path, progress=False).run()
    with pytest.raises(ValueError, match=r"belongs to another run \(differs in lr\)"):
        Pretrainer(micro_recipe("indoor", "epochs=1", "lr=0.5"), tiny_root / "scannet", tmp_path, resume=True).run()


@pytest.mark.slow
def test_kill_9_loses_at_most_the_current_epoch(tiny_root: Path, tmp_path: Path) -> None:
    args = [*MICRO, *PRESETS["indoor"][2], "epochs=3", "steps_per_epoch=3", "render_every=0"]
    cmd = [sys.executable, "-m", "bench.cli", "pretrain", "--preset", "indoor-mini", "--data",
           str(tiny_root / "scannet"), "--out", str(tmp_path / "run"), "--device", "cpu", "--no-progress", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    losses = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if losses.is_file() and len(losses.read_text().splitlines()) >= 4:  # inside epoch 2
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] >= 1 and state["step"] == 3 * state["epoch"]
    recipe = get_recipe("indoor-mini", args)
    result = Pretrainer(recipe, tiny_root / "scannet", tmp_path / "run", progress=False, resume=True).run()
    assert result.steps == 9
    steps = [json.loads(x)["step"] for x in losses.read_text().splitlines() if '"train"' in x]
    assert steps == list(range(1, 10))


def test_non_finite_loss_stops_with_the_step_and_terms(tiny_root: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from renderer.fields import NeuSVariance

    monkeypatch.setattr(NeuSVariance, "forward", lambda self: self.variance * float("nan"))
    trainer = Pretrainer(micro_recipe("indoor"), tiny_root / "scannet", tmp_path, progress=False)
    with pytest.raises(Diverged, match=r"non-finite loss at step 1 \(epoch 1\): rgb=nan.*total=nan"):
        trainer.run()
    assert not (tmp_path / "checkpoint.pt").exists()


def test_unknown_data_layout_is_named(tmp_path: Path) -> None:
    from tasks.errors import DataFormatError

    with pytest.raises(DataFormatError, match=f"{tmp_path}.*needs RGB-D views"):
        Pretrainer(micro_recipe("indoor"), tmp_path, tmp_path / "run")


def test_recipe_overrides_are_typed() -> None:
    recipe = get_recipe("indoor-mini", ["losses.rgb=5", "grid=(8,8,4)", "steps_per_epoch=None", "lr=1"])
    assert recipe.losses.rgb == 5.0 and recipe.grid == (8, 8, 4) and recipe.steps_per_epoch is None
    assert isinstance(recipe.lr, float)
    for bad, message in [("epochs=x", "expected int"), ("foo=1", "has no field 'foo'"),
                         ("losses.bar=2", "LossWeights has no field"), ("amp=1", "True or False"),
                         ("mode=sideways", r"expected one of \(.indoor.")]:
        with pytest.raises(ValueError, match=message):
            get_recipe("indoor-mini", [bad])


@pytest.mark.parametrize("preset", sorted(PRESETS_BY_NAME))
def test_a_recipe_comes_back_from_its_json(preset: str) -> None:
    recipe = get_recipe(preset, ["steps_per_epoch=7", "grad_clip=None"])
    assert pretrain_recipe_from(json.loads(json.dumps(asdict(recipe)))) == recipe


@pytest.mark.parametrize("case", ["indoor", "outdoor-nuscenes"])
def test_heldout_pictures_reproduce_the_runs_own_errors(tiny_root: Path, tmp_path: Path, case: str) -> None:
    """The initial weights come back from the seed, the trained ones from the checkpoint: the errors drawn are
    the ones the run measured before its first step and after its last."""
    result = Pretrainer(micro_recipe(case, "render_every=0"), tiny_root / PRESETS[case][1], tmp_path / "run",
                        progress=False).run()
    drawn = draw_heldout(tmp_path / "run", rows=2)
    assert (drawn.before, drawn.after) == (result.heldout_depth_error_before, result.heldout_depth_error_after)
    assert drawn.before != drawn.after and drawn.picture == tmp_path / "run" / "renders" / "heldout.png"
    assert drawn.picture.stat().st_size > 0


def test_heldout_pictures_name_what_is_missing(tiny_root: Path, tmp_path: Path) -> None:
    from tasks.errors import DataFormatError

    with pytest.raises(DataFormatError, match=f"{tmp_path / 'recipe.json'}.*not there"):
        draw_heldout(tmp_path)
    Pretrainer(micro_recipe("image", "epochs=1", "steps_per_epoch=1"), tiny_root / "scannet", tmp_path / "image",
               progress=False).run()
    with pytest.raises(ValueError, match="no held-out view or sweep to render \\(image mode"):
        draw_heldout(tmp_path / "image")


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tiny_root: Path, tmp_path: Path,
                                                                       free_port: int) -> None:
    """Data-parallel training averages the two processes' gradients; one process accumulates the same two samples'
    halves.

    Both runs use one thread per process (the summation order of a matmul depends on the thread count, and
    the SDF band loss turns such float noise into visible differences), and SGD, whose updates are linear
    in the gradients (Adam's first steps turn sign flips of ~0 gradients into lr-sized differences).
    """
    args = [*MICRO, *PRESETS["indoor"][2], "epochs=1", "steps_per_epoch=3", "render_every=0", "optimizer=sgd",
            "lr=0.01"]
    common = ["-m", "bench.cli", "pretrain", "--preset", "indoor-mini", "--data", str(tiny_root / "scannet"),
              "--device", "cpu", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launches = {
        "ddp": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port}",
                *common, "--out", str(tmp_path / "ddp"), *args, "batch_size=1"],
        "one": [sys.executable, *common, "--out", str(tmp_path / "one"), *args, "batch_size=2"],
    }
    for name, cmd in launches.items():
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{name}: {done.stderr[-3000:]}"
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_in_sync"] is True and summary["steps"] == 3
    logs = [[json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()] for run in launches]
    assert logs[0][0]["total"] == pytest.approx(logs[1][0]["total"], rel=1e-6), "same samples, same first loss"
    two, single = state_of(tmp_path / "ddp"), state_of(tmp_path / "one")
    for name, value in single.items():
        if value.is_floating_point() and "running" not in name:  # BatchNorm running stats follow rank 0 only
            torch.testing.assert_close(two[name], value, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


def test_unusable_scenes_are_skipped_with_a_warning(tiny_root: Path, tmp_path: Path, caplog) -> None:  # noqa: ANN001
    from dataclasses import replace

    from bench.pretrain.data import UnusableScene, build_sample
    from bench.pretrain.engine import PretrainBatches

    trainer = Pretrainer(micro_recipe("indoor"), tiny_root / "scannet", tmp_path, progress=False)
    good = trainer.source.scene(1)
    blank = replace(good, views=replace(good.views, depth=good.views.depth * 0))
    with pytest.raises(UnusableScene, match="no pixel with valid depth"):
        build_sample(blank, trainer.recipe, trainer.voxel, 0, 0)
    loader = trainer.source.loader
    trainer.source.loader = lambda i: blank if i == 0 else loader(i)
    with caplog.at_level("WARNING"):
        batches = PretrainBatches(trainer.source, trainer.recipe, trainer.voxel, 1, trainer.ranks)
        sample = batches._sample(0, 0, scene_index=0, preview=False)
    assert sample.name == good.name and "skipped" in caplog.text and "no pixel with valid depth" in caplog.text


@pytest.mark.parametrize("total", [1, 2, 20, 40, 1000])
def test_one_cycle_survives_short_runs(total: int) -> None:
    from bench.optim import Schedule, build_schedule

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    schedule = build_schedule(opt, Schedule(pct_start=0.05), 0.1, total)
    for _ in range(total):
        opt.step()
        schedule.step()


def _micro_model_and_sample(tiny_root: Path, *extra: str):  # noqa: ANN202
    from bench.pretrain.data import build_sample, open_source
    from bench.pretrain.model import PonderModel

    recipe = micro_recipe("indoor", *extra)
    source = open_source(tiny_root / "scannet", recipe.mode)
    torch.manual_seed(0)
    return PonderModel(recipe, source.class_names), build_sample(source.scene(0), recipe, 0.1, 0, 0)


def _gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_the_chunked_step_gives_the_losses_and_gradients_of_one_pass(tiny_root: Path) -> None:
    """The engine's step renders in chunks of ``ray_chunk``; the result is one un-chunked pass's (a plain
    render, loss and backward, written out here), up to float summation order, perturbed samples included."""
    from bench.pretrain.data import sample_rng
    from renderer.losses import rendering_losses
    from renderer.render import render_rays

    model, sample = _micro_model_and_sample(tiny_root, "rays_per_view=64")
    assert len(sample.rays) > 2 * 7 and sample.labels_known, "several chunks, the semantic loss included"
    model.zero_grad()
    sdf, color = model(sample)
    out = render_rays(model.field.bind(sdf, color, sample.spec), sample.rays, model.sampler, perturb=True,
                      generator=sample_rng(0, 0, 0)[1])
    want = rendering_losses(out, sample.rays, model.recipe.losses, model.class_embeddings)
    (want["total"] * 0.5).backward()
    want_grads = _gradients(model)
    for chunk in (None, 7):
        object.__setattr__(model.recipe, "ray_chunk", chunk)
        model.zero_grad()
        got = model.train_step(sample, sample_rng(0, 0, 0)[1], loss_scale=0.5)
        assert got.keys() == want.keys()
        for name, value in want.items():
            assert got[name] == pytest.approx(float(value.detach()), rel=1e-5, abs=1e-7), (chunk, name)
        got_grads = _gradients(model)
        assert got_grads.keys() == want_grads.keys()
        for name, grad in want_grads.items():  # float32 sums in another order: noise relative to the gradient's scale
            torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-4 * float(grad.abs().max()) + 1e-9,
                                       msg=lambda m, n=name, c=chunk: f"chunk {c}, {n}: {m}")


def test_the_engine_and_the_renderer_benchmark_step_through_one_function(tiny_root: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """What the renderer benchmarks (and results/perf) time is what pre-training runs: one function, at the
    recipe's chunk size."""
    import bench.perf.renderer_step as perf
    import bench.pretrain.model as model_module
    import renderer.step

    original = renderer.step.render_and_backward
    assert model_module.render_and_backward is original and perf.render_and_backward is original
    chunks: list[int | None] = []

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        chunks.append(kwargs["chunk"])
        return original(*args, **kwargs)

    monkeypatch.setattr(model_module, "render_and_backward", spy)
    monkeypatch.setattr(perf, "render_and_backward", spy)
    Pretrainer(micro_recipe("indoor", "ray_chunk=20", "render_every=0"), tiny_root / "scannet", tmp_path / "run",
               progress=False).run()
    assert chunks == [20] * 4, "every pre-training step renders through it, in the recipe's chunks"
    field, volumes, rays = perf.make_inputs("ours", rays=8)
    perf.ours_step(field, volumes, rays)
    assert chunks[-1] == get_recipe("indoor").ray_chunk is not None
