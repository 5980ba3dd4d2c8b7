"""The instance-segmentation part of the fine-tuning engine (PointGroup-style, as Pointcept fine-tunes PonderV2).

Training: cross-entropy + L1 and negative cosine on the offsets to each point's instance centre (the centre of
the whole instance, not of its part inside the training crop). Evaluation on whole scenes: class probabilities
and offsets are voted per voxel over the test-mode fragments, points are shifted by their offsets and clustered
per class, and the proposals are scored with the ScanNet benchmark's AP. The semantic head's mIoU is reported
beside it.
"""

from __future__ import annotations

import numpy as np
import torch

from bench import distributed
from bench.finetune.engine import FinetuneContext, register_task_type
from bench.finetune.plots import plot_instances
from bench.finetune.semseg import point_outputs
from tasks.heads.instance import InstanceSegmentationModel, centre_offsets, cluster_instances, pointgroup_loss
from tasks.metrics import ConfusionMatrix
from tasks.metrics.instance import instance_classes, scannet_instance_ap
from tasks.structures import Scene


@register_task_type("insseg")
class InstanceSegmentation:
    def build(self, backbone: torch.nn.Module, ctx: FinetuneContext) -> torch.nn.Module:
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

    def evaluate(self, model: torch.nn.Module, scenes: object, ctx: FinetuneContext) -> dict[str, object]:
        classes = ctx.spec.classes
        stuff = [i for i in range(len(classes)) if i not in instance_classes(classes)]
        k = len(classes)
        matrix = ConfusionMatrix(k, ctx.spec.ignore_index)
        predicted = []
        for i in distributed.shard(len(scenes), ctx.ranks):
            scene = scenes[i]
            out = point_outputs(model, scene, ctx.voxel, ctx.domain, ctx.device,
                                lambda o: torch.cat([o[0].softmax(-1), o[1]], 1), ctx.recipe.tta,
                                vectors=slice(k, k + 3))
            votes = out[:, :k].sum(1, keepdims=True)  # each vote's probabilities sum to 1
            probs, offsets = out[:, :k] / votes, out[:, k:] / votes
            matrix.update(scene.segment, probs.argmax(1))
            predicted.append((scene.segment, scene.instance,
                              cluster_instances(scene.coord, offsets, probs, stuff, ctx.voxel)))
        matrix.matrix = distributed.sum_over_ranks(matrix.matrix, ctx.ranks)
        predicted = distributed.gather_in_order(predicted, ctx.ranks)
        if ctx.picture is not None:
            scene = scenes[0]
            plot_instances(scene.coord, scene.instance, predicted[0][2], classes, ctx.picture,
                           f"{ctx.spec.id}: {scene.name}")
        scores = scannet_instance_ap(predicted, classes)
        semantic = matrix.scores(classes)
        return {"mAP": scores["mAP"], "AP50": scores["AP50"], "AP25": scores["AP25"],
                "semantic_mIoU": semantic["mIoU"], "proposals": sum(len(p) for _, _, p in predicted),
                "per_class": {name: (None if ap is None else ap["AP50"]) for name, ap in scores["per_class"].items()}}
