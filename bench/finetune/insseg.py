"""The instance-segmentation task type (PointGroup-style, as Pointcept fine-tunes PonderV2).

Training: cross-entropy + L1 and negative cosine on the offsets to each point's instance centre (the centre of
the whole instance, not of its part inside the training crop). Evaluation on whole scenes: class probabilities
and offsets are voted per voxel over the test-mode fragments, points are shifted by their offsets and clustered
per class, and the proposals are scored with the ScanNet benchmark's AP. The semantic head's mIoU is reported
beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from bench import distributed
from bench.finetune.engine import FinetuneContext, SceneTaskType, register_task_type
from bench.finetune.plots import plot_instances
from bench.finetune.semseg import evaluation_views, point_outputs
from bench.hooks import Evaluation
from tasks.heads.instance import InstanceSegmentationModel, centre_offsets, cluster_instances, pointgroup_loss
from tasks.metrics import ConfusionMatrix
from tasks.metrics.instance import instance_classes, scannet_instance_ap
from tasks.structures import Scene


@register_task_type("insseg")
class InstanceSegmentation(SceneTaskType):
    def head(self, backbone: torch.nn.Module, ctx: FinetuneContext) -> torch.nn.Module:
        return InstanceSegmentationModel(backbone, backbone.config.out_channels, len(ctx.spec.classes),
                                         ctx.linear_probe)

    def targets(self, scene: Scene, index: np.ndarray) -> np.ndarray:
        """(n, 5) rows: class, instance id, offset to the instance centre."""
        if scene.instance is None:
            raise ValueError(f"{scene.name}: an instance-segmentation task needs instance ids")
        offsets = centre_offsets(scene.coord, scene.instance)[index]
        return np.c_[scene.segment[index], scene.instance[index], offsets].astype(np.float64)

    def loss(self, output: tuple[torch.Tensor, torch.Tensor], target: np.ndarray, ctx: FinetuneContext
             ) -> torch.Tensor | None:
        logits, offsets = output
        rows = torch.from_numpy(target).to(logits.device)
        segment = rows[:, 0].long()
        if not (segment >= 0).any():
            return None
        return pointgroup_loss(logits, offsets, segment, rows[:, 2:].float(), rows[:, 1].long(),
                               ctx.spec.ignore_index)["total"]

    def evaluate(self, model: torch.nn.Module, scenes: Sequence[Scene], ctx: FinetuneContext) -> Evaluation:
        classes = ctx.spec.classes
        matrix = ConfusionMatrix(len(classes), ctx.spec.ignore_index)
        predicted = []
        for i in distributed.shard(len(scenes), ctx.ranks):
            scene = scenes[i]
            probs, proposals = self.predict(model, scene, ctx)
            matrix.update(scene.segment, probs.argmax(1))
            predicted.append((scene.segment, scene.instance, proposals))
        matrix.matrix = distributed.sum_over_ranks(matrix.matrix, ctx.ranks)
        predicted = distributed.gather_in_order(predicted, ctx.ranks)
        scores = scannet_instance_ap(predicted, classes)
        semantic = matrix.scores(classes)
        return Evaluation({"mAP": scores["mAP"], "AP50": scores["AP50"], "AP25": scores["AP25"],
                           "semantic_mIoU": semantic["mIoU"], "proposals": sum(len(p) for _, _, p in predicted)},
                          {name: (None if ap is None else ap["AP50"]) for name, ap in scores["per_class"].items()})

    def predict(self, model: torch.nn.Module, scene: Scene, ctx: FinetuneContext) -> tuple[np.ndarray, list]:
        """Class probabilities of every point of the scene (voted over the test-mode fragments) and the instance
        proposals clustered from the points shifted by their offsets."""
        classes = ctx.spec.classes
        k = len(classes)
        stuff = [i for i in range(k) if i not in instance_classes(classes)]
        out = point_outputs(model, scene, ctx.voxel, ctx.domain, ctx.device,
                            lambda o: torch.cat([o[0].softmax(-1), o[1]], 1), evaluation_views(ctx.recipe),
                            ctx.recipe.test_fragments, vectors=slice(k, k + 3))
        votes = out[:, :k].sum(1, keepdims=True)  # each vote's probabilities sum to 1
        probs, offsets = out[:, :k] / votes, out[:, k:] / votes
        return probs, cluster_instances(scene.coord, offsets, probs, stuff, ctx.voxel)

    def picture(self, model: torch.nn.Module, scenes: Sequence[Scene], ctx: FinetuneContext, path: Path) -> None:
        scene = scenes[0]
        plot_instances(scene.coord, scene.instance, self.predict(model, scene, ctx)[1], ctx.spec.classes, path,
                       f"{ctx.spec.id}: {scene.name}")
