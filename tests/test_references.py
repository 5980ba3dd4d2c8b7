"""The reference recipes, value by value, against a table that names each value's source file; the CPU presets as
stated overrides of them; ``ponderbench list recipes`` printing every value with its source.

A changed reference value must change this table too: that is the point of keeping it apart from
``tasks/references.py``.
"""

from __future__ import annotations

import json
import re

import pytest

from bench.cli import main
from bench.finetune.engine import check_task_settings
from bench.recipes import (
    DOMAIN_AUGMENT,
    FINETUNE_PRESETS,
    PRESETS,
    PRETRAIN_SETTINGS,
    finetune_sources,
    get_finetune_recipe,
    get_recipe,
    recipe_sources,
    result_fields,
)
from tasks.spec import get_task, list_tasks

P, PC, U = "OpenGVLab/PonderV2@aad65d6", "Pointcept/Pointcept@d74c646", "Nightmare-n/UniPAD@3d24add"
SCANNET_FT = f"{P} configs/scannet/semseg-ppt-v1m1-0-sc-s3-st-spunet-lovasz-ft.py"
THIRTEEN = [[a, s, ""] for s in (1.0, 0.95, 1.05) for a in (0.0, 0.5, 1.0, 1.5)] + [[0.0, 1.0, "xy"]]
FOUR = [[a, 1.0, ""] for a in (0.0, 0.5, 1.0, 1.5)]
SCALE_FLIP = [[0.0, s, f] for f in ("", "xy") for s in (0.9, 0.95, 1.0, 1.05, 1.1)]

# task -> {field: (value, the file it comes from)}
FINETUNE = {
    "scannet-semseg": (SCANNET_FT, {
        "epochs": 100, "batch_size": 24, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4,
        "schedule.kind": "onecycle", "schedule.pct_start": 0.05, "schedule.div_factor": 10.0,
        "schedule.final_div_factor": 1e4, "precision": "fp16", "grid_size": 0.02, "max_points": 100_000,
        "test_fragments": None, "tta_views": THIRTEEN, "semseg.lovasz_weight": 1.0, "semseg.mix_prob": 0.8}),
    "scannet200-semseg": (f"{P} configs/scannet200/semseg-ppt-v1m1-0-spunet-lovasz-ft.py", {
        "epochs": 600, "batch_size": 12, "lr": 0.05, "schedule.div_factor": 10.0, "max_points": 100_000,
        "tta_views": FOUR, "semseg.lovasz_weight": 1.0, "semseg.mix_prob": 0.8}),
    "s3dis-area5-semseg": (f"{P} configs/s3dis/semseg-ppt-v1m1-0-s3-sc-st-spunet-lovasz-ft.py", {
        "epochs": 100, "batch_size": 24, "lr": 0.05, "grid_size": 0.02, "crop_fraction": 0.6, "tta_views": THIRTEEN}),
    "scannet-insseg": (f"{P} configs/scannet/insseg-ppt-v1m1-0-pointgroup-spunet-ft.py", {
        "epochs": 800, "batch_size": 12, "optimizer": "sgd", "lr": 0.1, "schedule.kind": "poly",
        "schedule.power": 0.9, "precision": "fp16", "grid_size": 0.02, "crop_fraction": 0.8}),
    "scannet200-insseg": (f"{P} configs/scannet200/insseg-ppt-v1m1-0-pointgroup-spunet-ft.py", {
        "epochs": 800, "batch_size": 12, "lr": 0.1, "schedule.kind": "poly"}),
    "semantickitti-semseg": (f"{PC} configs/semantic_kitti/semseg-spunet-v1m1-0-base.py", {
        "epochs": 50, "batch_size": 12, "optimizer": "adamw", "lr": 0.002, "weight_decay": 0.005,
        "schedule.pct_start": 0.04, "schedule.div_factor": 10.0, "schedule.final_div_factor": 100.0,
        "grid_size": 0.05, "max_points": None, "tta_views": FOUR, "semseg.lovasz_weight": 0.0}),
    "nuscenes-lidarseg": (f"{PC} configs/nuscenes/semseg-spunet-v1m1-0-base.py", {
        "epochs": 50, "lr": 0.002, "grid_size": 0.05, "tta_views": SCALE_FLIP}),
}
AUGMENT = {
    "scannet-semseg": [
        "RandomDropout(ratio=0.2, p=0.2)", "RandomRotate(angle=(-1.0, 1.0), axis='z', p=0.5)",
        "RandomRotate(angle=(-0.015625, 0.015625), axis='x', p=0.5)",
        "RandomRotate(angle=(-0.015625, 0.015625), axis='y', p=0.5)", "RandomScale(scale=(0.9, 1.1))",
        "RandomFlip(p=0.5, axes='xy')", "RandomJitter(sigma=0.005, clip=0.02)",
        "ElasticDistortion(params=((0.2, 0.4), (0.8, 1.6)), p=0.95)",
        "ChromaticAutoContrast(p=0.2, blend_factor=None)", "ChromaticTranslation(p=0.95, ratio=0.05)",
        "ChromaticJitter(p=0.95, std=0.05)"],
    "semantickitti-semseg": [
        "RandomRotate(angle=(-1.0, 1.0), axis='z', p=0.5)", "RandomScale(scale=(0.9, 1.1))",
        "RandomFlip(p=0.5, axes='xy')", "RandomJitter(sigma=0.005, clip=0.02)"],
}
PRETRAIN = {
    "indoor": (f"{P} configs/scannet/pretrain-ponder-spunet-v1m1-0-base.py", {
        "backbone": "spunet-v1m1", "epochs": 2000, "batch_size": 32, "optimizer": "sgd", "lr": 0.002,
        "momentum": 0.9, "weight_decay": 1e-4, "schedule.pct_start": 0.05, "schedule.div_factor": 10.0,
        "schedule.final_div_factor": 1e4, "amp": True, "mask_ratio": 0.8, "views": 5, "rays_per_view": 256,
        "grid": [128, 128, 32], "volume_channels": 96, "sdf_channels": 64, "color_channels": 64, "hidden": 128,
        "semantic_dim": 512, "n_uniform": 96, "n_importance": 36, "losses.rgb": 10.0, "losses.depth": 1.0,
        "losses.sdf": 10.0, "losses.free_space": 1.0, "losses.eikonal": 0.01, "losses.semantic": 0.1,
        "losses.truncation": 0.05, "projection": "unet", "field_layers": 1, "geometry_features": 64}),
    "outdoor": (f"{P} configs/nuscenes/pretrain-ponder-spunet-v1m1-0-base.py", {
        "epochs": 24, "batch_size": 16, "optimizer": "adamw", "lr": 2e-4, "weight_decay": 0.01,
        "schedule.pct_start": 0.4, "schedule.div_factor": 10.0, "schedule.final_div_factor": 100.0,
        "mask_ratio": 0.8, "mask_block": 0.8, "rays_per_view": 512, "grid": [180, 180, 5], "n_uniform": 72,
        "n_importance": 24, "losses.depth": 10.0, "losses.rgb": 0.0, "losses.sdf": 0.0, "losses.eikonal": 0.0,
        "outdoor_rays": "camera", "close_radius": 3.0, "views": 6, "mask_token": True, "projection": "conv",
        "sdf_channels": 32, "color_channels": 32, "hidden": 16, "field_layers": 5, "geometry_features": 16}),
    "image": (f"{U} projects/configs/unipad/uvtr_cam_vs0.1_pretrain.py", {
        "backbone": "timm:convnext_small", "mask_ratio": 0.3, "epochs": 12, "lr": 2e-4, "weight_decay": 0.01,
        "backbone_lr_scale": 0.1, "grad_clip": 35.0, "schedule.kind": "cosine", "schedule.warmup_steps": 500,
        "schedule.warmup_ratio": 1 / 3, "schedule.min_lr_ratio": 1e-3}),
}
ZOO, RADAR = f"{P} docs/model_zoo.md: ", f"{P} assets/radar.png"
# task -> (the paper's number, where it is, words its setup must hold)
PAPER = {
    "scannet-semseg": (77.0, ZOO + "Indoor Semantic Segmentation, ScanNet, Val", ("SpUNet-v1m3", "PPT", "val")),
    "scannet200-semseg": (32.3, ZOO + "Indoor Semantic Segmentation, ScanNet200", ("SpUNet-v1m3", "Structured3D")),
    "s3dis-area5-semseg": (73.2, ZOO + "Indoor Semantic Segmentation, S3DIS", ("SpUNet-v1m3", "Area 5")),
    "scannet-insseg": (62.6, ZOO + "Indoor Instance Segmentation, ScanNet, mAP@50", ("PointGroup", "SpUNet-v1m3")),
    "scannet200-insseg": (30.5, ZOO + "Indoor Instance Segmentation, ScanNet200", ("PointGroup",)),
    "scannet-de-lr1": (34.6, RADAR, ("not stated",)), "scannet-de-lr20": (68.2, RADAR, ("not stated",)),
    "scannet-de-la20": (67.0, RADAR, ("not stated",)), "scannet-de-la200": (74.8, RADAR, ("not stated",)),
    "semantickitti-semseg": (71.5, RADAR, ("not stated",)), "nuscenes-lidarseg": (79.4, RADAR, ("not stated",)),
    "nuscenes-det-lidar": (70.6, f"{U} README.md: Results, Validation, UniPAD_L", ("UVTR", "val")),
    "nuscenes-det-camera": (47.4, f"{U} README.md: Results, Validation, UniPAD_C", ("ConvNeXt-S",)),
    "nuscenes-det-fusion": (73.2, f"{U} README.md: Results, Validation, UniPAD_M", ("UVTR",)),
}
SOURCE = re.compile(r"^(ponderbench: .+|[\w-]+/[\w-]+@[0-9a-f]{7} \S+\.py:.+|command line)$")


@pytest.mark.parametrize("task", list(FINETUNE))
def test_each_task_reference_value_and_its_source(task: str) -> None:
    source, values = FINETUNE[task]
    resolved = finetune_sources("reference", get_task(task))
    for key, value in values.items():
        assert resolved[key]["value"] == pytest.approx(value) if isinstance(value, float) else \
            resolved[key]["value"] == value, (task, key)
        assert resolved[key]["source"].startswith(source + ":"), (task, key, resolved[key]["source"])
    if task in AUGMENT:
        assert resolved["augment"]["value"] == AUGMENT[task]


@pytest.mark.parametrize("mode", list(PRETRAIN))
def test_each_pretraining_reference_value_and_its_source(mode: str) -> None:
    source, values = PRETRAIN[mode]
    resolved = recipe_sources(PRESETS[mode], PRETRAIN_SETTINGS[mode])
    for key, value in values.items():
        assert resolved[key]["value"] == pytest.approx(value), (mode, key)
        assert resolved[key]["source"].startswith(source + ":"), (mode, key, resolved[key]["source"])


@pytest.mark.parametrize("task", list_tasks())
def test_every_source_names_a_file_and_key_or_the_suites_reason(task: str) -> None:
    spec = get_task(task)
    if not spec.runnable:
        return
    for preset in FINETUNE_PRESETS:
        for key, entry in finetune_sources(preset, spec).items():
            assert SOURCE.match(entry["source"]), (task, preset, key, entry["source"])
    for mode, settings in PRETRAIN_SETTINGS.items():
        for key, entry in recipe_sources(PRESETS[mode], settings).items():
            assert SOURCE.match(entry["source"]), (mode, key, entry["source"])


@pytest.mark.parametrize("preset", ["mini", "small", "tiny"])
def test_a_cpu_preset_is_one_recipe_for_every_task(preset: str) -> None:
    """The CPU presets override every value a reference sets, so all tasks run the same recipe (its augmentation
    is the domain's), as before references existed."""
    alone = result_fields(check_task_settings(get_finetune_recipe(preset)))
    for task in list_tasks(runnable=True):
        assert result_fields(check_task_settings(get_finetune_recipe(preset, task=get_task(task)))) == alone, task


def test_the_mini_presets_are_what_the_main_job_has_always_run() -> None:
    mini = get_finetune_recipe("mini", task=get_task("scannet-semseg"))
    assert (mini.epochs, mini.batch_size, mini.optimizer, mini.lr, mini.weight_decay, mini.max_points) == \
        (10, 2, "adamw", 0.005, 0.01, 12_000)
    assert (mini.schedule.kind, mini.schedule.pct_start, mini.schedule.div_factor) == ("onecycle", 0.05, 25.0)
    assert (mini.grid_size, mini.crop_fraction, mini.augment, mini.test_fragments) == (None, None, None, 8)
    assert [list(v) for v in mini.tta_views] == FOUR
    indoor = get_recipe("indoor-mini")
    assert (indoor.optimizer, indoor.lr, indoor.batch_size, indoor.epochs, indoor.grad_clip) == \
        ("adamw", 2e-3, 1, 1, 1.0)
    assert indoor.augment == tuple(repr(t) for t in __import__("tasks.transforms").transforms.parse_transforms(
        DOMAIN_AUGMENT["indoor"]))
    outdoor = get_recipe("outdoor-mini")
    assert (outdoor.mask_block, outdoor.losses.rgb, outdoor.losses.sdf, outdoor.schedule.pct_start) == \
        (2.0, 10.0, 10.0, 0.05)


def test_list_recipes_prints_each_value_with_its_source(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "recipes", "--task", "scannet-semseg", "--preset", "reference", "--format", "json"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    for key, value in (("optimizer", "sgd"), ("lr", 0.05), ("batch_size", 24), ("schedule.div_factor", 10.0),
                       ("max_points", 100_000), ("tta_views", THIRTEEN)):
        assert resolved[key]["value"] == value and resolved[key]["source"].startswith(SCANNET_FT)
    assert main(["list", "recipes", "--task", "scannet-semseg", "--preset", "mini", "--format", "json"]) == 0
    mini = json.loads(capsys.readouterr().out)
    assert mini["lr"] == {"value": 0.005, "source": "ponderbench: the mini suite's CPU fine-tuning"}
    assert main(["list", "recipes", "--pretrain", "indoor", "--format", "json"]) == 0
    indoor = json.loads(capsys.readouterr().out)
    assert (indoor["optimizer"]["value"], indoor["lr"]["value"], indoor["batch_size"]["value"]) == ("sgd", 0.002, 32)
    assert main(["list", "recipes"]) == 0
    assert "mini:" in capsys.readouterr().out


@pytest.mark.parametrize("task", list_tasks())
def test_each_paper_number_carries_its_setup_and_source(task: str) -> None:
    paper = get_task(task).paper
    if task not in PAPER:
        assert paper is None, task
        return
    value, source, words = PAPER[task]
    assert paper.value == value and paper.source.startswith(source), (task, paper.source)
    assert all(w in paper.setup for w in words), (task, paper.setup)
