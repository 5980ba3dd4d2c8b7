"""The semantic-segmentation task type: head, loss, and whole-scene evaluation.

Loss: cross-entropy + Lovász-softmax. Evaluation on whole scenes: Pointcept's test-mode grid sampling splits
each scene into fragments (one point per voxel each), their class probabilities are voted per voxel and
back to every point, optionally over four rotations (test-time augmentation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from backbones.levels import level_width
from backbones.structures import PointBatch
from bench import distributed
from bench.finetune.engine import FinetuneContext, Pretraining, SceneTaskType, register_task_type
from bench.finetune.multidataset import mixed_training_scenes, parse_datasets
from bench.hooks import Evaluation
from bench.recipes import FinetuneRecipe
from tasks.contract import MAX_TEST_FRAGMENTS, point_features
from tasks.heads.prompt import VALID_CLASSES, PromptSegmentationModel, ppt_embeddings
from tasks.heads.segmentation import SegmentationModel, lovasz_softmax
from tasks.metrics import ConfusionMatrix
from tasks.spec import TaskSpec
from tasks.structures import Scene
from tasks.transforms import IDENTITY_VIEW, TestView, view_transform, voting_fragments


@dataclass(frozen=True)
class SemanticSettings:
    lovasz_weight: float = 1.0  # the Lovasz-softmax term's weight beside cross-entropy
    mix_prob: float = 0.0  # Mix3D: the chance that a training batch's scenes are overlaid in pairs
    ppt: bool = False  # Point Prompt Training's head: points scored against class text embeddings (PPT-v1m1)
    class_embeddings: str | None = None  # PPT's text embeddings: a .json / .npz file per class name, else fixed ones
    datasets: str = ""  # with ppt, other datasets trained on too, with loop ratios: "structured3d:4,scannet:2,s3dis:1"
    levels: bool = False  # the head reads every level of the backbone, upcast and concatenated (Sonata's probe)
    level: int | None = None  # the head reads this one level only (0: the finest; the probe of each level)


@register_task_type("semseg")
class SemanticSegmentation(SceneTaskType):
    section, Settings = "semseg", SemanticSettings

    def head(self, backbone: torch.nn.Module, ctx: FinetuneContext) -> torch.nn.Module:
        settings = self.settings(ctx.recipe)
        if not getattr(settings, "ppt", False):
            levels, level = getattr(settings, "levels", False), getattr(settings, "level", None)
            width = (sum(getattr(backbone, "level_channels", ())) if levels else
                     level_width(backbone, level) if level is not None else backbone.config.out_channels)
            return SegmentationModel(backbone, width, len(ctx.spec.classes), ctx.linear_probe, levels, level)
        classes = VALID_CLASSES.get(ctx.spec.condition or "", ())
        if len(classes) != len(ctx.spec.classes):
            raise ValueError(f"semseg.ppt: PPT's class sets are ScanNet's 20, S3DIS's 13 and Structured3D's 25; "
                             f"{ctx.spec.id} has {len(ctx.spec.classes)} classes (ScanNet200: PonderV2 uses the "
                             "PDNorm backbone with a linear head there, spunet-v1m3 without semseg.ppt)")
        return PromptSegmentationModel(backbone, backbone.config.out_channels,
                                       ppt_embeddings(settings.class_embeddings), ctx.linear_probe)

    def training_data(self, ctx: FinetuneContext, data_root: Path) -> Sequence[object]:
        own = super().training_data(ctx, data_root)
        settings = self.settings(ctx.recipe)
        if not getattr(settings, "datasets", ""):
            return own
        if not settings.ppt:
            raise ValueError("semseg.datasets needs semseg.ppt=True: the datasets' label sets differ, and PPT's head "
                             "scores each batch against its own dataset's classes")
        return mixed_training_scenes(ctx.spec, data_root, own, settings.datasets)

    def pretrainings(self, spec: TaskSpec, backbone: str, recipe: FinetuneRecipe) -> list[Pretraining]:
        """With PPT over several datasets, the ``ponder`` init is PonderV2's PPT pre-training over the same datasets,
        the task's own among them (ratio 1 unless named)."""
        jobs = super().pretrainings(spec, backbone, recipe)
        settings = self.settings(recipe)
        if not (jobs and getattr(settings, "ppt", False) and getattr(settings, "datasets", "")):
            return jobs
        named = [name for name, _ in parse_datasets(settings.datasets)]
        mix = settings.datasets if spec.loader in named else f"{spec.loader}:1,{settings.datasets}"
        return [job._replace(datasets=mix) for job in jobs]

    def mix_prob(self, recipe: FinetuneRecipe) -> float:
        """Mix3D's chance: a subclass whose own Settings do not extend SemanticSettings trains without it."""
        settings = self.settings(recipe)
        return settings.mix_prob if isinstance(settings, SemanticSettings) else 0.0

    def targets(self, scene: Scene, index: np.ndarray) -> np.ndarray:
        return scene.segment[index]

    def loss(self, output: torch.Tensor, target: np.ndarray, ctx: FinetuneContext) -> torch.Tensor | None:
        labels = torch.from_numpy(target).long().to(output.device)
        if not (labels >= 0).any():
            return None  # limited annotations: no labelled point drawn in this batch
        loss = F.cross_entropy(output, labels, ignore_index=ctx.spec.ignore_index)
        weight = self.settings(ctx.recipe).lovasz_weight
        return loss + weight * lovasz_softmax(output, labels, ctx.spec.ignore_index)

    def evaluate(self, model: torch.nn.Module, scenes: Sequence[Scene], ctx: FinetuneContext) -> Evaluation:
        matrix = ConfusionMatrix(len(ctx.spec.classes), ctx.spec.ignore_index)
        for i in distributed.shard(len(scenes), ctx.ranks):
            scene = scenes[i]
            predicted = predict_scene(model, scene, ctx.voxel, ctx.domain, len(ctx.spec.classes), ctx.device,
                                      evaluation_views(ctx.recipe), ctx.recipe.test_fragments)
            matrix.update(scene.segment, predicted)
        matrix.matrix = distributed.sum_over_ranks(matrix.matrix, ctx.ranks)
        scores = matrix.scores(ctx.spec.classes)
        per_class = scores.pop("per_class_iou")
        return Evaluation({**scores, "eval_points": int(matrix.matrix.sum())}, per_class)


def predict_scene(model: torch.nn.Module, scene: Scene, voxel: float, domain: str, num_classes: int,
                  device: torch.device, views: Sequence[TestView] = (IDENTITY_VIEW,),
                  max_fragments: int | None = MAX_TEST_FRAGMENTS) -> np.ndarray:
    """Class of every point of ``scene``: test-mode fragments voted per voxel, every point takes its voxel's vote."""
    return point_outputs(model, scene, voxel, domain, device, lambda logits: logits.softmax(-1), views,
                         max_fragments).argmax(1)


def evaluation_views(recipe: FinetuneRecipe) -> tuple[TestView, ...]:
    """The views an evaluation votes over: the recipe's test-time views with ``tta``, else the scene as it is."""
    return tuple(recipe.tta_views) if recipe.tta else (IDENTITY_VIEW,)


def point_outputs(model: torch.nn.Module, scene: Scene, voxel: float, domain: str, device: torch.device,
                  readout: Callable[[object], torch.Tensor], views: Sequence[TestView] = (IDENTITY_VIEW,),
                  max_fragments: int | None = MAX_TEST_FRAGMENTS, vectors: slice | None = None) -> np.ndarray:
    """Per-point outputs (N, D) of a model over a whole scene: ``readout`` turns the model's output into (n, D)
    rows, which are summed over the test-mode fragments of each voxel and over the test-time ``views``
    and sent back to every point of the voxel. Columns ``vectors`` hold xyz vectors, rotated back to the
    scene's frame.

    At most ``max_fragments`` fragments: real sweeps can hold thousands of returns in one voxel (the nuScenes
    samples have 3,165 in one 10 cm voxel), which would otherwise mean thousands of forward passes.
    """
    total: np.ndarray | None = None
    for test_view in views:
        turn = view_transform(test_view)
        view = scene if turn is None else turn.apply(scene)
        feats = point_features(view, domain)
        fragments, voxel_of = voting_fragments(view.coord, voxel, max_fragments)
        sums: np.ndarray | None = None
        for fragment in fragments:
            pick = fragment.index
            batch = PointBatch.collate([(view.coord[pick], fragment.grid_coord, feats[pick])]).to(device)
            with torch.no_grad():
                rows = readout(model(batch)).float().cpu().numpy()
            sums = rows if sums is None else sums + rows
        per_point = sums[voxel_of]
        if vectors is not None and turn is not None:  # row vectors: R^T v / s
            per_point[:, vectors] = per_point[:, vectors] @ turn.rotation / turn.scale
        total = per_point if total is None else total + per_point
    return total
