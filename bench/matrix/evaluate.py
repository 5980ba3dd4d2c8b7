"""``ponderbench evaluate CHECKPOINT --task T``: score a released fine-tuned model without training.

The model comes from the file alone (:func:`bench.finetune.released.released_model`); the task's own evaluation
scores it on its evaluation split, and a record is written like any run's, with protocol ``evaluate`` (``+tta``
with test-time augmentation), the file as its init (label ``checkpoint:<file name>``, path and sha256).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from backbones.structures import use_condition
from bench.finetune.engine import prepare_run
from bench.finetune.released import released_model
from bench.matrix.records import RunRecord, data_fingerprint, git_sha, package_versions, write_record
from bench.matrix.runner import PeakRSS, data_root_for
from bench.recipes import get_finetune_recipe
from tasks.datasets import expected_path, task_scenes
from tasks.spec import get_task
from tasks.synth.suite import is_generated


def evaluate_checkpoint(path: str | Path, task: str, data_roots: tuple[str, ...], results: str | Path, *,
                        tta: bool = False, backbone: str | None = None, preset: str = "mini",
                        device: str = "cpu") -> RunRecord:
    """Score ``path`` on ``task`` and write its record under ``results``; returns the record."""
    spec = get_task(task)
    if spec.task_type not in ("semseg", "insseg"):
        raise ValueError(f"evaluate scores semantic- and instance-segmentation checkpoints; {task} is "
                         f"{spec.task_type}")
    root = data_root_for(spec.dataset, data_roots)
    if root is None:
        raise FileNotFoundError(f"data not found: {' or '.join(str(expected_path(spec, r)) for r in data_roots)}")
    start = time.perf_counter()
    released = released_model(path, spec, backbone)
    recipe = get_finetune_recipe(preset, ["tta=True"] if tta else [])
    kind, ctx = prepare_run(spec, released.backbone, 0, recipe, False, device, None)
    model = released.model.to(ctx.device).eval()
    use_condition(model, spec.condition)
    with PeakRSS() as memory:
        evaluation = kind.evaluate(model, task_scenes(spec, root, spec.eval_split), ctx)
    record = RunRecord(
        task=spec.id, task_version=spec.version, backbone=released.backbone, init=f"checkpoint:{Path(path).name}",
        protocol="evaluate+tta" if tta else "evaluate", seed=0, status="ok", main_score=spec.main_score,
        main_value=evaluation.scores[spec.main_score], higher_is_better=spec.higher_is_better,
        metrics=evaluation.scores, per_class=evaluation.per_class,
        facts={"head": released.head, "checkpoint_prefix": released.prefix, "steps": 0},
        init_path=str(Path(path).resolve()), init_sha256=released.sha256, finetune_preset=preset,
        finetune_recipe=asdict(recipe), data_root=str(root), data_fingerprint=data_fingerprint(root / spec.dataset),
        data_source="generated" if is_generated(root / spec.dataset) else "real", wall_s=time.perf_counter() - start,
        peak_rss_bytes=memory.peak, git_sha=git_sha(), packages=package_versions())
    write_record(Path(results), record)
    return record
