"""Fine-tuning: a class per task type (build, data, loss, evaluation), all trained on the one trainer."""

from bench.finetune.engine import (
    FinetuneContext,
    FinetuneResult,
    RunFacts,
    SceneTaskType,
    TaskType,
    TrainedTaskType,
    finetune,
    register_task_type,
)
from bench.finetune.exports import NotApplicable, load_export
from bench.hooks import Evaluation

__all__ = ["Evaluation", "FinetuneContext", "FinetuneResult", "NotApplicable", "RunFacts", "SceneTaskType",
           "TaskType", "TrainedTaskType", "finetune", "load_export", "register_task_type"]
