"""The low-level tasks end to end: a Ponder model fitted to a scene's training frames, its held-out frames
rendered and scored, its SDF meshed and scored; on the generated ScanNet test scene and the real 7-Scenes frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.finetune.engine import finetune
from bench.finetune.lowlevel import lowlevel_scenes
from bench.recipes import apply_overrides, get_finetune_recipe
from tasks.contract import is_heldout
from tasks.metrics.lowlevel import read_mesh
from tasks.spec import get_task

RECIPE = apply_overrides(get_finetune_recipe("tiny"), ["fit.steps=40"])  # enough steps for the SDF to cross zero


def test_scenes_hold_out_frames_by_the_contracts_rule(tiny_root: Path) -> None:
    (scene,) = lowlevel_scenes(get_task("nvs-scannet"), tiny_root)
    frames = len(scene.all_views)
    assert len(scene.heldout) == sum(is_heldout(i) for i in range(frames)) > 0
    assert len(scene.train.views) + len(scene.heldout) == frames
    assert set(scene.heldout.names).isdisjoint(scene.train.views.names)
    assert scene.mesh is not None and len(read_mesh(scene.mesh)[0]) > 10_000  # the exact surface, 2 cm apart


@pytest.mark.slow
def test_both_tasks_share_one_fit_and_write_their_outputs(tiny_root: Path, tmp_path: Path) -> None:
    runs = tmp_path / "results" / "runs" / "finetune"
    nvs = finetune(get_task("nvs-scannet"), "spunet-micro", tiny_root, recipe=RECIPE, artifacts=runs / "nvs",
                   picture=tmp_path / "strip.png")
    assert 5.0 < nvs.scores["PSNR"] < 60.0 and -1.0 <= nvs.scores["SSIM"] <= 1.0
    assert nvs.scores["AbsRel"] >= 0 and nvs.scores["RMSE"] > 0 and 0.0 <= nvs.scores["delta1"] <= 1.0
    assert (tmp_path / "strip.png").stat().st_size > 10_000
    fits = sorted((tmp_path / "results" / "runs" / "fits").iterdir())
    assert len(fits) == 1
    stamp = (fits[0] / "checkpoint.pt").stat().st_mtime_ns
    recon = finetune(get_task("recon-scannet"), "spunet-micro", tiny_root, recipe=RECIPE, artifacts=runs / "recon",
                     picture=tmp_path / "mesh.png")
    assert (fits[0] / "checkpoint.pt").stat().st_mtime_ns == stamp  # the finished fit was reused, not redone
    assert 0.0 <= recon.scores["fscore"] <= 1.0 and recon.scores["chamfer_l1"] > 0
    vertices, faces = read_mesh(next((runs / "recon").glob("*/mesh.ply")))
    assert len(faces) == recon.scores["mesh_faces"] > 0
    assert (tmp_path / "mesh.png").stat().st_size > 10_000


@pytest.mark.slow
def test_nvs_on_the_real_7scenes_frames(shared_data: Path, tmp_path: Path) -> None:
    spec = get_task("nvs-7scenes")
    (scene,) = lowlevel_scenes(spec, shared_data)
    assert len(scene.heldout) == 20 and len(scene.train.views) == 80
    result = finetune(spec, "spunet-micro", shared_data, recipe=apply_overrides(RECIPE, ["fit.steps=3"]),
                      artifacts=tmp_path / "runs" / "finetune" / "nvs")
    assert result.scores["heldout_frames"] == 20
    assert np.isfinite(result.scores["PSNR"]) and 0.0 <= result.scores["delta1"] <= 1.0
