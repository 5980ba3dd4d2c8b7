"""A diverged run is a failure, never an ``ok`` record: non-finite or exploding losses, non-finite gradients and
non-finite outputs at evaluation stop it, with the step, the loss and what to change; a recipe may allow skipping
a few such steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.hooks import Evaluate, Evaluation
from bench.matrix.records import record_files
from bench.runlog import RunLog
from bench.trainer import Diverged, Trainer


def _trainer(losses: list[float | str], skips: int = 0, hooks: tuple = ()) -> Trainer:  # noqa: ANN001
    """A one-parameter model whose step ``i`` has loss ``losses[i]`` (a float times the weight, so its gradient is
    finite) or, for "inf-grad", a finite loss with an infinite gradient (the square root at 0)."""
    model = torch.nn.Linear(1, 1, bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

    def loss(item: float | str) -> torch.Tensor:
        w = model.weight.sum()
        if item == "inf-grad":
            return torch.sqrt(w * 0.0)
        return w * 0.0 + float(item)

    return Trainer(model, losses, loss, optimizer, scheduler, steps_per_epoch=len(losses), hooks=list(hooks),
                   skip_diverged_steps=skips)


@pytest.mark.parametrize(("losses", "message"), [
    ([1.0, float("nan"), 1.0], r"non-finite loss at step 2 \(epoch 1\): loss=nan"),
    ([2.0, 1.0, 3e5], r"loss over 10000 x its first value \(loss=2\) at step 3 \(epoch 1\): loss=3e\+05"),
    ([1.0, "inf-grad", 1.0], r"non-finite gradient at step 2 \(epoch 1\): norm (inf|nan), loss loss=-?0"),
])
def test_a_diverged_step_stops_the_run_with_the_step_the_loss_and_the_advice(losses: list, message: str) -> None:
    with pytest.raises(Diverged, match=message + r".*lower lr or enable gradient clipping"):
        _trainer(losses).run()


def test_the_recipe_may_skip_a_capped_number_of_diverged_steps() -> None:
    trainer = _trainer([1.0, float("nan"), 1.0, "inf-grad", 1.0], skips=2).run()
    assert trainer.skipped == 2 and trainer.step == 5
    with pytest.raises(Diverged, match=r"non-finite gradient at step 4 .* after 1 skipped steps"):
        _trainer([1.0, float("nan"), 1.0, "inf-grad", 1.0], skips=1).run()


def test_non_finite_outputs_at_evaluation_fail_the_run() -> None:
    def evaluate(model: torch.nn.Module) -> Evaluation:
        model(torch.tensor([[float("inf")]]))
        return Evaluation({"mIoU": 0.0})

    hook = Evaluate(evaluate, RunLog(None), "mIoU")
    with pytest.raises(Diverged, match=r"non-finite model outputs in the evaluation after step 2"):
        _trainer([1.0, 1.0], hooks=(hook,)).run()


def test_a_run_at_lr_1e6_gives_a_failed_record(tiny_root: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    assert main(["run", "--data", str(tiny_root), "--tasks", "semantickitti-semseg", "--inits", "scratch",
                 "--preset", "tiny", "--backbones", "spunet-micro", "--protocols", "finetune", "--results",
                 str(results), "--no-progress", "--workers", "1", "lr=1e6"]) == 0
    (path,) = record_files(results)
    record = json.loads(path.read_text())
    assert record["status"] == "failed" and record["main_value"] is None
    assert record["error"].startswith("Diverged: loss over 10000 x its first value"), record["error"]
    assert "lower lr or enable gradient clipping" in record["error"]
