"""Reference values of the recipes, each with its source: what PonderV2 (or, where it has no config, Pointcept or
UniPAD) sets, read from the public configs at a pinned commit.

A task's reference fine-tuning recipe is ``TaskSpec.recipe``, a tuple of :class:`Setting` over the fine-tuning
recipe's defaults (``bench.recipes.FinetuneRecipe``); the pre-training references are in ``bench.recipes``.
``tests/test_references.py`` pins every value against its own table, so a changed value must change both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    """One recipe value: ``key`` is a field (``lr``), a nested field (``schedule.div_factor``) or a task type's
    setting (``semseg.lovasz_weight``); ``source`` says where the value comes from: ``owner/repo@commit path:key``,
    or ``ponderbench: <why>`` for the suite's own choice."""

    key: str
    value: Any
    source: str

    @property
    def item(self) -> str:
        """As a ``key=value`` override."""
        return f"{self.key}={self.value!r}"



PONDERV2 = "OpenGVLab/PonderV2@aad65d6"  # configs unchanged since 6e26712 (2024-04-25)
POINTCEPT = "Pointcept/Pointcept@d74c646"
UNIPAD = "Nightmare-n/UniPAD@3d24add"


def _from(repo: str, path: str, *values: tuple[str, Any, str]) -> tuple[Setting, ...]:
    """Settings read from one config file: (recipe key, value, the config's key)."""
    return tuple(Setting(key, value, f"{repo} {path}:{where}") for key, value, where in values)


def _suite(key: str, value: Any, why: str) -> Setting:
    return Setting(key, value, f"ponderbench: {why}")


TILT = (-1 / 64, 1 / 64)  # x and y tilts, in units of pi
ROTATIONS = tuple((a, 1.0, "") for a in (0.0, 0.5, 1.0, 1.5))
SCALES = (0.9, 0.95, 1.0, 1.05, 1.1)
# Pointcept's RandomFlip(p=1) view mirrors x and y
SCALE_FLIP_VIEWS = (*((0.0, s, "") for s in SCALES), *((0.0, s, "xy") for s in SCALES))
# PonderV2's ScanNet and S3DIS test: four rotations at scales 1, 0.95 and 1.05, and a mirror
THIRTEEN_VIEWS = (*((a, s, "") for s in (1.0, 0.95, 1.05) for a in (0.0, 0.5, 1.0, 1.5)), (0.0, 1.0, "xy"))


def _indoor_augment(dropout_p: float, translation: float) -> tuple[str, ...]:
    """The indoor fine-tuning transforms of PonderV2's configs (CenterShift, which only moves the origin the
    rotations turn about, is left out)."""
    return (f"RandomDropout(ratio=0.2, p={dropout_p})", "RandomRotate(angle=(-1, 1), axis='z', p=0.5)",
            f"RandomRotate(angle={TILT}, axis='x', p=0.5)", f"RandomRotate(angle={TILT}, axis='y', p=0.5)",
            "RandomScale(scale=(0.9, 1.1))", "RandomFlip(p=0.5, axes='xy')", "RandomJitter(sigma=0.005, clip=0.02)",
            "ElasticDistortion(params=((0.2, 0.4), (0.8, 1.6)))", "ChromaticAutoContrast(p=0.2, blend_factor=None)",
            f"ChromaticTranslation(p=0.95, ratio={translation})", "ChromaticJitter(p=0.95, std=0.05)")


def _semseg_ft(path: str, dataset: str, epochs: int, batch: int, views: tuple, crop: tuple[str, Any, str]
               ) -> tuple[Setting, ...]:
    """PonderV2's indoor semantic fine-tuning: ``dataset`` is where the task's dataset sits in the config's train
    list (``data.train.datasets[1]`` in a multi-dataset config)."""
    return _from(PONDERV2, path,
                 ("epochs", epochs, "epoch"), ("batch_size", batch, "batch_size"),
                 ("optimizer", "sgd", "optimizer.type (SGD, nesterov=True)"), ("lr", 0.05, "optimizer.lr"),
                 ("momentum", 0.9, "optimizer.momentum"), ("weight_decay", 1e-4, "optimizer.weight_decay"),
                 ("schedule.kind", "onecycle", "scheduler.type"), ("schedule.pct_start", 0.05, "scheduler.pct_start"),
                 ("schedule.div_factor", 10.0, "scheduler.div_factor"),
                 ("schedule.final_div_factor", 1e4, "scheduler.final_div_factor"),
                 ("precision", "fp16", "enable_amp (torch.cuda.amp: float16)"),
                 ("grid_size", 0.02, f"{dataset}.transform[GridSample].grid_size"),
                 ("augment", _indoor_augment(0.2, 0.05), f"{dataset}.transform[RandomDropout..ChromaticJitter]"),
                 crop, ("test_fragments", None, "data.test.test_cfg.voxelize (GridSample mode='test': every fragment)"),
                 ("tta_views", views, "data.test.test_cfg.aug_transform"),
                 ("semseg.lovasz_weight", 1.0, "model.criteria[LovaszLoss].loss_weight"),
                 ("semseg.mix_prob", 0.8, "mix_prob (Mix3D in the collate)"))


# the ScanNet 77.0 row's fine-tuning, as it treats ScanNet (one dataset of its joint training: see the README)
SCANNET_SEMSEG = _semseg_ft(
    "configs/scannet/semseg-ppt-v1m1-0-sc-s3-st-spunet-lovasz-ft.py", "data.train.datasets[1]", 100, 24, THIRTEEN_VIEWS,
    ("max_points", 100_000, "data.train.datasets[1].transform[SphereCrop].point_max"))
SCANNET200_SEMSEG = _semseg_ft(
    "configs/scannet200/semseg-ppt-v1m1-0-spunet-lovasz-ft.py", "data.train", 600, 12, ROTATIONS,
    ("max_points", 100_000, "data.train.transform[SphereCrop].point_max"))
S3DIS_SEMSEG = _semseg_ft(
    "configs/s3dis/semseg-ppt-v1m1-0-s3-sc-st-spunet-lovasz-ft.py", "data.train.datasets[2]", 100, 24, THIRTEEN_VIEWS,
    ("crop_fraction", 0.6, "data.train.datasets[2].transform[SphereCrop].sample_rate"))


def _insseg(path: str) -> tuple[Setting, ...]:
    """PonderV2's PointGroup fine-tuning (its configs have no test-time setup: ``data.test`` is empty)."""
    return _from(PONDERV2, path,
                 ("epochs", 800, "epoch"), ("batch_size", 12, "batch_size"),
                 ("optimizer", "sgd", "optimizer.type (SGD, nesterov=True)"), ("lr", 0.1, "optimizer.lr"),
                 ("momentum", 0.9, "optimizer.momentum"), ("weight_decay", 1e-4, "optimizer.weight_decay"),
                 ("schedule.kind", "poly", "scheduler.type (PolyLR)"),
                 ("schedule.power", 0.9, "scheduler.type (PolyLR's power, ponder/utils/scheduler.py)"),
                 ("precision", "fp16", "enable_amp (torch.cuda.amp: float16)"),
                 ("grid_size", 0.02, "data.train.transform[GridSample].grid_size"),
                 ("augment", _indoor_augment(0.5, 0.1), "data.train.transform[RandomDropout..ChromaticJitter]"),
                 ("crop_fraction", 0.8, "data.train.transform[SphereCrop].sample_rate"))


SCANNET_INSSEG = _insseg("configs/scannet/insseg-ppt-v1m1-0-pointgroup-spunet-ft.py")
SCANNET200_INSSEG = _insseg("configs/scannet200/insseg-ppt-v1m1-0-pointgroup-spunet-ft.py")


def _lidarseg(path: str, views: tuple, augment_at: str) -> tuple[Setting, ...]:
    """Pointcept's SpUNet LiDAR segmentation (PonderV2 has none: its outdoor models are UniPAD's). Its
    SemanticKITTI cross-entropy class weights are not a recipe field (see the README)."""
    return _from(POINTCEPT, path,
                 ("epochs", 50, "epoch"), ("batch_size", 12, "batch_size"),
                 ("optimizer", "adamw", "optimizer.type"), ("lr", 0.002, "optimizer.lr"),
                 ("weight_decay", 0.005, "optimizer.weight_decay"),
                 ("schedule.kind", "onecycle", "scheduler.type"), ("schedule.pct_start", 0.04, "scheduler.pct_start"),
                 ("schedule.div_factor", 10.0, "scheduler.div_factor"),
                 ("schedule.final_div_factor", 100.0, "scheduler.final_div_factor"),
                 ("precision", "fp16", "enable_amp (amp_dtype float16)"),
                 ("grid_size", 0.05, "data.train.transform[GridSample].grid_size"),
                 ("max_points", None, "data.train.transform (no SphereCrop)"),
                 ("augment", ("RandomRotate(angle=(-1, 1), axis='z', p=0.5)", "RandomScale(scale=(0.9, 1.1))",
                              "RandomFlip(p=0.5, axes='xy')", "RandomJitter(sigma=0.005, clip=0.02)"), augment_at),
                 ("test_fragments", None, "data.test.test_cfg.voxelize (GridSample mode='test': every fragment)"),
                 ("tta_views", views, "data.test.test_cfg.aug_transform"),
                 ("semseg.lovasz_weight", 0.0, "model.criteria (CrossEntropyLoss only)"))


SEMANTIC_KITTI_SEMSEG = _lidarseg("configs/semantic_kitti/semseg-spunet-v1m1-0-base.py", ROTATIONS,
                                  "data.train.transform[0, 2:5] (PointClip left out)")
NUSCENES_SEMSEG = _lidarseg("configs/nuscenes/semseg-spunet-v1m1-0-base.py", SCALE_FLIP_VIEWS,
                            "data.train.transform[0:4]")

_INDOOR_PRETRAIN = "configs/scannet/pretrain-ponder-spunet-v1m1-0-base.py"
_OUTDOOR_PRETRAIN = "configs/nuscenes/pretrain-ponder-spunet-v1m1-0-base.py"
_CAMERA_PRETRAIN = "projects/configs/unipad/uvtr_cam_vs0.1_pretrain.py"
NO_CLIP = "configs/_base_/default_runtime.py:(no gradient clipping)"
# each pre-training mode's reference: PonderV2's ScanNet and nuScenes configs, UniPAD's camera pre-training
PRETRAIN: dict[str, tuple[Setting, ...]] = {
    "indoor": (*_from(
        PONDERV2, _INDOOR_PRETRAIN,
        ("backbone", "spunet-v1m1", "model.backbone.type"), ("epochs", 2000, "epoch"),
        ("batch_size", 32, "batch_size (8 x num_gpu)"), ("optimizer", "sgd", "optimizer.type (SGD, nesterov=True)"),
        ("lr", 0.002, "optimizer.lr (0.0005 x batch_size / 8)"), ("momentum", 0.9, "optimizer.momentum"),
        ("weight_decay", 1e-4, "optimizer.weight_decay"), ("schedule.pct_start", 0.05, "scheduler.pct_start"),
        ("schedule.div_factor", 10.0, "scheduler.div_factor"),
        ("schedule.final_div_factor", 1e4, "scheduler.final_div_factor"), ("amp", True, "enable_amp"),
        ("mask_ratio", 0.8, "data.train.transform[RandomDropout].dropout_ratio (model.mask is None)"),
        ("max_points", None, "data.train.transform (its SphereCrop is commented out)"),
        ("augment", ("RandomRotate(angle=(-1, 1), axis='z', p=0.5)", f"RandomRotate(angle={TILT}, axis='x', p=0.5)",
                     f"RandomRotate(angle={TILT}, axis='y', p=0.5)", "RandomScale(scale=(0.9, 1.1))",
                     "RandomFlip(p=0.5, axes='xy')"), "data.train.transform[RandomRotate..RandomFlip]"),
        ("views", 5, "num_cameras"), ("rays_per_view", 256, "model.ray_nsample"),
        ("grid", (128, 128, 32), "model.grid_shape"), ("volume_channels", 96, "model.projection.in_channels"),
        ("unet_base", 32, "model.projection (UNet3D-v1m2 f_maps, ponder/models/ponder/unet3d.py)"),
        ("unet_levels", 4, "model.projection (UNet3D-v1m2 num_levels)"),
        ("sdf_channels", 64, "model.projection.out_channels (128, halved for the SDF)"),
        ("color_channels", 64, "model.projection.out_channels (128, halved for colour and semantics)"),
        ("hidden", 128, "model.renderer.field.sdf_decoder.hidden_size"),
        ("field_layers", 1, "model.renderer.field.sdf_decoder.n_blocks"),
        ("geometry_features", 64, "model.renderer.field.sdf_decoder.out_dim (64 + 1)"),
        ("projection", "unet", "model.projection.type (UNet3D-v1m2)"),
        ("semantic_dim", 512, "model.renderer.field.semantic_decoder.out_dim"),
        ("n_uniform", 96, "model.renderer.sampler.num_samples"),
        ("n_importance", 36, "model.renderer.sampler.num_samples_importance"),
        ("losses.rgb", 10.0, "model.renderer.loss.weights.rgb_loss"),
        ("losses.depth", 1.0, "model.renderer.loss.weights.depth_loss"),
        ("losses.sdf", 10.0, "model.renderer.loss.weights.sdf_loss"),
        ("losses.free_space", 1.0, "model.renderer.loss.weights.free_space_loss"),
        ("losses.eikonal", 0.01, "model.renderer.loss.weights.eikonal_loss"),
        ("losses.semantic", 0.1, "model.renderer.loss.weights.semantic_loss"),
        ("losses.truncation", 0.05, "model.renderer.loss.sensor_depth_truncation"),
        ("losses.temperature", 0.01, "model.renderer.loss.temperature")),
        Setting("grad_clip", None, f"{PONDERV2} {NO_CLIP}")),
    "outdoor": (*_from(
        PONDERV2, _OUTDOOR_PRETRAIN,
        ("backbone", "spunet-v1m1", "model.backbone.type"), ("epochs", 24, "epoch"),
        ("batch_size", 16, "batch_size (4 x num_gpu)"), ("optimizer", "adamw", "optimizer.type"),
        ("lr", 2e-4, "optimizer.lr"), ("weight_decay", 0.01, "optimizer.weight_decay"),
        ("schedule.pct_start", 0.4, "scheduler.pct_start"), ("schedule.div_factor", 10.0, "scheduler.div_factor"),
        ("schedule.final_div_factor", 100.0, "scheduler.final_div_factor"), ("amp", True, "enable_amp"),
        ("mask_ratio", 0.8, "model.mask.ratio"), ("mask_block", 0.8, "model.mask.size (8 voxels of 0.1 m)"),
        ("augment", ("RandomRotate(angle=(-0.25, 0.25), axis='z', p=0.5)", "RandomScale(scale=(0.9, 1.1))",
                     "RandomShift(shift=(0.5, 0.5, 0.5))", "RandomFlip(p=0.5, axes='xy')"),
         "data.train.transform[RandomRotate..RandomFlip]"),
        ("outdoor_rays", "camera", "data.train.transform[ProjectOnImage, RaySample] (camera to LiDAR point)"),
        ("close_radius", 3.0, "data.train.transform[ProjectOnImage].close_radius"),
        ("views", 6, "data.train.use_camera (the 6 cameras)"),
        ("rays_per_view", 512, "data.train.transform[RaySample].point_nsample (per camera)"),
        ("mask_token", True, "model.mask (masked blocks' features become the learned mtoken)"),
        ("projection", "conv", "model.projection.type (SimpleConv3D-v1m1)"),
        ("sdf_channels", 32, "model.projection.out_channels"),
        ("color_channels", 32, "model.renderer.field.share_volume (one volume)"),
        ("hidden", 16, "model.renderer.field.sdf_decoder.hidden_size"),
        ("field_layers", 5, "model.renderer.field.sdf_decoder.n_blocks"),
        ("geometry_features", 16, "model.renderer.field.sdf_decoder.out_dim (16 + 1)"),
        ("grid", (180, 180, 5), "model.grid_shape"), ("n_uniform", 72, "model.renderer.sampler.num_samples"),
        ("n_importance", 24, "model.renderer.sampler.num_samples_importance"),
        ("semantic_dim", 0, "model.render_semantic (False)"),
        ("losses.depth", 10.0, "model.renderer.loss.weights (depth_loss only)"),
        *((f"losses.{term}", 0.0, "model.renderer.loss.weights (depth_loss only)")
          for term in ("rgb", "sdf", "free_space", "eikonal", "semantic"))),
        Setting("grad_clip", None, f"{PONDERV2} {NO_CLIP}"),
        _suite("losses.truncation", 0.5, "the SDF band in metres for the suite's outdoor SDF losses (unused by the "
                                         "reference's depth-only loss)")),
    "image": (*_from(
        UNIPAD, _CAMERA_PRETRAIN,
        ("backbone", "timm:convnext_small", "model.img_backbone (MaskConvNeXt, arch='small')"),
        ("mask_ratio", 0.3, "model.img_backbone.mae_cfg.mask_ratio"), ("epochs", 12, "total_epochs"),
        ("batch_size", 1, "data.samples_per_gpu"), ("optimizer", "adamw", "optimizer.type"),
        ("lr", 2e-4, "optimizer.lr"), ("weight_decay", 0.01, "optimizer.weight_decay"),
        ("backbone_lr_scale", 0.1, "optimizer.paramwise_cfg.custom_keys.img_backbone.lr_mult"),
        ("grad_clip", 35.0, "optimizer_config.grad_clip.max_norm"),
        ("schedule.kind", "cosine", "lr_config.policy (CosineAnnealing)"),
        ("schedule.warmup_steps", 500, "lr_config.warmup_iters (warmup='linear')"),
        ("schedule.warmup_ratio", 1.0 / 3, "lr_config.warmup_ratio"),
        ("schedule.min_lr_ratio", 1e-3, "lr_config.min_lr_ratio"), ("amp", True, "fp16_enabled")),
        Setting("image_size", (928, 1600), f"{UNIPAD} projects/configs/unipad/uvtr_cam_vs0.075_pretrain.py:"
                                           f"frustum_range (1600 x 900 images padded to 32; the 0.1 config pads "
                                           f"native images)"),
        _suite("semantic_dim", 0, "UniPAD renders no semantics")),
}


# ------------------------------------------------------------------------------------------------- paper numbers
@dataclass(frozen=True)
class PaperResult:
    """A published number with the setup it comes from. The leaderboard draws it as a target only over runs on
    real data, labelled with this setup; over generated (mini-suite) data it is a footnote."""

    value: float
    backbone: str  # the model the number was measured with
    pretraining: str  # what the backbone was pre-trained on, and how
    finetuning: str  # how it was trained for the task
    tta: str  # the test-time augmentation, or what is known of it
    split: str
    source: str  # owner/repo@commit path: where the number is

    @property
    def setup(self) -> str:
        return (f"{self.backbone}; pre-trained {self.pretraining}; {self.finetuning}; TTA: {self.tta}; "
                f"{self.split}")


_ZOO = f"{PONDERV2} docs/model_zoo.md"
_RADAR = f"{PONDERV2} assets/radar.png (the paper's summary figure, PonderV2 vs the state of the art)"
_PPT = "SpUNet-v1m3 (PDNorm) in PPT-v1m1"
_PPT_PRETRAIN = "by PonderV2 on ScanNet + S3DIS + Structured3D (pretrain-ponder-ppt-v1m1-0-sc-s3-st-spunet)"
_PPT_TTA = "the config's test views (the model zoo does not say whether they were used)"
_NOT_STATED = "not stated in the repository"


def _zoo(value: float, table: str, config: str, finetuning: str, tta: str = _PPT_TTA, split: str = "val"
         ) -> PaperResult:
    return PaperResult(value, _PPT, _PPT_PRETRAIN, f"{finetuning} ({config})", tta, split, f"{_ZOO}: {table}")


def _radar(value: float, split: str) -> PaperResult:
    return PaperResult(value, _NOT_STATED, _NOT_STATED, _NOT_STATED, _NOT_STATED, split, _RADAR)


def _unipad(value: float, row: str, name: str, backbone: str) -> PaperResult:
    return PaperResult(value, f"UVTR, {backbone}", "by UniPAD (PonderV2's outdoor) on nuScenes",
                       f"full fine-tune (projects/configs/unipad_final/final_uvtr_{row}_vs0.075_finetune.py)",
                       "none (the test table's TTA row is not this one)", "val",
                       f"{UNIPAD} README.md: Results, Validation, {name}")


# The paper's numbers per task. The indoor headline numbers all come from one setup (PPT multi-dataset training
# with SpUNet-v1m3); neither the model zoo nor the configs give single-dataset SpUNet-v1m1 numbers. The
# data-efficient and LiDAR segmentation numbers appear in the paper's summary figure only, without their setup.
PAPER: dict[str, PaperResult] = {
    "scannet-semseg": _zoo(77.0, "Indoor Semantic Segmentation, ScanNet, Val mIoU",
                           "configs/scannet/semseg-ppt-v1m1-0-sc-s3-st-spunet-lovasz-ft.py",
                           "PPT fine-tuning over ScanNet + S3DIS + Structured3D"),
    "scannet200-semseg": _zoo(32.3, "Indoor Semantic Segmentation, ScanNet200, Val mIoU",
                              "configs/scannet200/semseg-ppt-v1m1-0-spunet-lovasz-ft.py",
                              "fine-tuned on ScanNet200"),
    "s3dis-area5-semseg": _zoo(73.2, "Indoor Semantic Segmentation, S3DIS (Area5), Val mIoU",
                               "configs/s3dis/semseg-ppt-v1m1-0-s3-sc-st-spunet-lovasz-ft.py",
                               "PPT fine-tuning over S3DIS + ScanNet + Structured3D", split="Area 5"),
    "scannet-insseg": _zoo(62.6, "Indoor Instance Segmentation, ScanNet, mAP@50",
                           "configs/scannet/insseg-ppt-v1m1-0-pointgroup-spunet-ft.py",
                           "PointGroup fine-tuned on ScanNet", tta="none (the config has no test-time views)"),
    "scannet200-insseg": _zoo(30.5, "Indoor Instance Segmentation, ScanNet200, mAP@50",
                              "configs/scannet200/insseg-ppt-v1m1-0-pointgroup-spunet-ft.py",
                              "PointGroup fine-tuned on ScanNet200", tta="none (the config has no test-time views)"),
    "scannet-de-lr1": _radar(34.6, "ScanNet data-efficient, 1% of the scenes"),
    "scannet-de-lr20": _radar(68.2, "ScanNet data-efficient, 20% of the scenes"),
    "scannet-de-la20": _radar(67.0, "ScanNet data-efficient, 20 labelled points a scene"),
    "scannet-de-la200": _radar(74.8, "ScanNet data-efficient, 200 labelled points a scene"),
    "semantickitti-semseg": _radar(71.5, "SemanticKITTI (val or test not stated)"),
    "nuscenes-lidarseg": _radar(79.4, "nuScenes lidarseg (val or test not stated)"),
    "nuscenes-det-lidar": _unipad(70.6, "lidar", "UniPAD_L", "LiDAR voxel encoder (0.075 m)"),
    "nuscenes-det-camera": _unipad(47.4, "cam", "UniPAD_C (voxel_size=0.075)", "ConvNeXt-S image backbone"),
    "nuscenes-det-fusion": _unipad(73.2, "fusion", "UniPAD_M", "ConvNeXt-S + LiDAR voxel encoder"),
}
