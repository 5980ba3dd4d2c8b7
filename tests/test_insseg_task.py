"""Instance segmentation as a task: the engine's part end to end, and the generated instances' consistency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from torch import nn

from backbones.structures import PointBatch
from bench.finetune import finetune
from bench.finetune.engine import FinetuneContext
from bench.finetune.insseg import InstanceSegmentation
from bench.recipes import FinetuneRecipe, get_finetune_recipe
from tasks.classes import SCANNET20, SCANNET200
from tasks.datasets import task_scenes
from tasks.heads.instance import centre_offsets
from tasks.metrics.instance import instance_classes
from tasks.spec import get_task
from tasks.transforms import identity, view_transform


class Oracle(nn.Module):
    """A perfect instance model of one scene: the true class and the true offset of each point it is shown,
    in whichever of the test-time views (rotated, scaled, mirrored) it is shown."""

    def __init__(self, coord: np.ndarray, segment: np.ndarray, instance: np.ndarray, num_classes: int,
                 views: tuple) -> None:
        super().__init__()
        self.tree, self.segment, self.k = cKDTree(coord), segment, num_classes
        self.offsets = centre_offsets(coord, instance)
        self.views = [view_transform(v) or identity() for v in views]

    def forward(self, batch: PointBatch) -> tuple[torch.Tensor, torch.Tensor]:
        shown = batch.coord.numpy().astype(np.float64)

        def back(view) -> np.ndarray:  # noqa: ANN001
            return shown @ view.rotation / view.scale  # x = R^T y / s, in rows

        best = min(self.views, key=lambda view: self.tree.query(back(view))[0].max())
        _, index = self.tree.query(back(best))
        logits = torch.from_numpy(np.eye(self.k)[np.maximum(self.segment[index], 0)] * 10.0)
        offsets = best.scale * self.offsets[index] @ best.rotation.T  # into the frame the points are shown in
        return logits.float(), torch.from_numpy(offsets).float()


# the mini presets' four rotations, and views that also scale and mirror (as Pointcept's)
VIEWS = {"none": None, "rotations": FinetuneRecipe().tta_views,
         "scaled-mirrored": ((0.0, 1.0, ""), (0.5, 0.9, ""), (1.0, 1.1, "xy"), (1.5, 1.0, "x"))}


@pytest.mark.parametrize("views", list(VIEWS))
def test_a_perfect_model_scores_ap_one_through_voting_clustering_and_the_evaluator(tiny_root: Path, views: str
                                                                                    ) -> None:
    spec = get_task("scannet-insseg")
    scene = task_scenes(spec, tiny_root, "val")[0]
    recipe = FinetuneRecipe(tta=views != "none", tta_views=VIEWS[views] or FinetuneRecipe().tta_views)
    ctx = FinetuneContext(spec=spec, recipe=recipe, backbone="oracle", voxel=0.05,
                          device=torch.device("cpu"), linear_probe=False)
    oracle = Oracle(scene.coord.astype(np.float64), scene.segment, scene.instance, len(spec.classes),
                    recipe.tta_views)
    result = InstanceSegmentation().evaluate(oracle, [scene], ctx)
    scores, per_class = result.scores, result.per_class
    assert scores["AP50"] == pytest.approx(1.0) and scores["mAP"] == pytest.approx(1.0)
    assert scores["semantic_mIoU"] > 0.97  # below 1 only where one 5 cm voxel holds points of two classes
    evaluated = [name for name, ap in per_class.items() if ap is not None]
    assert evaluated and all(per_class[name] == pytest.approx(1.0) for name in evaluated)


def test_insseg_fine_tunes_and_records_the_benchmark_metrics(tiny_root: Path) -> None:
    spec = get_task("scannet200-insseg")
    result = finetune(spec, "spunet-micro", tiny_root, seed=0, recipe=get_finetune_recipe("tiny"))
    assert {"mAP", "AP50", "AP25", "semantic_mIoU"} <= set(result.scores)
    assert all(0.0 <= result.scores[k] <= 1.0 or np.isnan(result.scores[k]) for k in ("mAP", "AP50", "AP25"))
    assert set(result.per_class) == {SCANNET200[i] for i in instance_classes(SCANNET200)}
    assert spec.main_score == "AP50" and spec.runnable


def test_generated_instances_are_objects_consistent_with_both_label_sets(tiny_root: Path) -> None:
    """One id per furniture object, -1 on wall and floor; each id has one class in ScanNet20 and ScanNet200,
    and it is an instance class in both, the same object under both names."""
    twenty = task_scenes(get_task("scannet-insseg"), tiny_root, "train")
    two_hundred = task_scenes(get_task("scannet200-insseg"), tiny_root, "train")
    for i in range(len(twenty)):
        a, b = twenty[i], two_hundred[i]
        np.testing.assert_array_equal(a.instance, b.instance)
        stuff = np.isin(a.segment, [SCANNET20.index("wall"), SCANNET20.index("floor")])
        assert (a.instance[stuff] == -1).all() and (a.instance[~stuff] >= 0).all()
        for inst in np.unique(a.instance[a.instance >= 0]):
            names20 = {SCANNET20[c] for c in np.unique(a.segment[a.instance == inst])}
            names200 = {SCANNET200[c] for c in np.unique(b.segment[b.instance == inst])}
            assert len(names20) == 1 and len(names200) == 1, (a.name, inst, names20, names200)
            assert SCANNET200.index(next(iter(names200))) in instance_classes(SCANNET200)
            assert next(iter(names20)) == next(iter(names200)) or {*names20, *names200} == {"sofa", "couch"}
