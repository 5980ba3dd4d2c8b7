"""Task types: every registered one is complete, its recipe section is read from ``section.field=value`` settings
(checked and written canonically), and a new task type is a class and a registration, nothing else."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.finetune import FinetuneContext, register_task_type
from bench.finetune.engine import TASK_TYPES, check_task_settings, fit_and_evaluate, task_type, task_types
from bench.finetune.semseg import SemanticSegmentation
from bench.recipes import FinetuneRecipe, get_finetune_recipe
from tasks.datasets import task_scenes
from tasks.spec import get_task, list_tasks


@pytest.mark.parametrize("name", sorted(task_types()))
def test_every_registered_task_type_is_complete_and_reads_its_section(name: str) -> None:
    cls = TASK_TYPES[name]
    assert not inspect.isabstract(cls), f"{name}: {sorted(cls.__abstractmethods__)} not implemented"
    if cls.Settings is not None:
        assert cls.section and cls().settings(FinetuneRecipe()) == cls.Settings()  # defaults without settings


def test_every_runnable_task_has_a_registered_type() -> None:
    for task in list_tasks(runnable=True):
        assert task_type(get_task(task)).__class__ is TASK_TYPES[get_task(task).task_type]


def test_task_settings_are_typed_checked_and_canonical() -> None:
    from bench.finetune.detection import Detection

    recipe = check_task_settings(get_finetune_recipe("tiny", ["detection.epochs=5", "detection.image_size=(32,64)"]))
    assert Detection().settings(recipe).epochs == 5 and Detection().settings(recipe).image_size == (32, 64)
    same = check_task_settings(get_finetune_recipe("tiny", ["detection.image_size=( 32, 64 )", "detection.epochs=5"]))
    assert same == recipe  # one setting, one recipe: records do not go stale over spelling
    assert "detection.epochs=5" in recipe.task and sum(i.startswith("detection.epochs") for i in recipe.task) == 1
    with pytest.raises(ValueError, match="no task type has a section 'detecton'; known: detection, fit, semseg"):
        check_task_settings(get_finetune_recipe("tiny", ["detecton.epochs=5"]))
    with pytest.raises(ValueError, match="expected int"):
        check_task_settings(get_finetune_recipe("tiny", ["detection.epochs=many"]))
    with pytest.raises(ValueError, match="DetectionSettings has no field 'epoch'"):
        check_task_settings(get_finetune_recipe("tiny", ["detection.epoch=5"]))


@dataclass(frozen=True)
class FocalSettings:
    gamma: float = 2.0


class FocalSegmentation(SemanticSegmentation):
    """The README's example: semantic segmentation trained with a focal loss, its ``gamma`` a recipe setting."""

    section, Settings = "focal", FocalSettings

    def loss(self, output: torch.Tensor, target: np.ndarray, ctx: FinetuneContext) -> torch.Tensor | None:
        labels = torch.from_numpy(target).long().to(output.device)
        known = labels != ctx.spec.ignore_index
        if not known.any():
            return None
        logp = F.log_softmax(output[known], -1).gather(1, labels[known, None])[:, 0]
        return (-(1 - logp.exp()) ** self.settings(ctx.recipe).gamma * logp).mean()


def test_a_new_task_type_is_a_class_and_a_registration(tiny_root: Path) -> None:
    register_task_type("semseg-focal")(FocalSegmentation)
    try:
        spec = replace(get_task("semantickitti-semseg"), id="semantickitti-focal", task_type="semseg-focal")
        recipe = check_task_settings(get_finetune_recipe("tiny", ["focal.gamma=1.0"]))
        train, evaluation = task_scenes(spec, tiny_root, "train"), task_scenes(spec, tiny_root, "val")
        result = fit_and_evaluate(spec, "spunet-micro", train, evaluation, recipe=recipe)
        assert 0.0 <= result.scores["mIoU"] <= 1.0 and np.isfinite(result.facts.final_train_loss)
        other = fit_and_evaluate(spec, "spunet-micro", train, evaluation, recipe=get_finetune_recipe("tiny"))
        assert other.facts.final_train_loss != result.facts.final_train_loss  # gamma reached the loss
        with pytest.raises(ValueError, match="already registered"):
            register_task_type("semseg-focal")(FocalSegmentation)
    finally:
        TASK_TYPES.pop("semseg-focal")
