"""Fine-tuning: one engine skeleton (train loop, precise BatchNorm, evaluation, run facts) and a part per task type."""

from bench.finetune.engine import FinetuneContext, finetune, register_task_type
from bench.finetune.exports import NotApplicable, load_export

__all__ = ["FinetuneContext", "NotApplicable", "finetune", "load_export", "register_task_type"]
