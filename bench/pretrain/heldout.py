"""Rendered vs real depth on a pre-training run's held-out sweeps or frames, before and after the run.

The initial weights come back from the recipe's seed (the engine seeds before it builds the model), the trained
ones from the run's checkpoint, so a finished run can be drawn at any time without having kept its first state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.hooks import CHECKPOINT
from bench.pretrain.data import heldout_samples
from bench.pretrain.engine import Pretrainer
from bench.pretrain.plots import plot_heldout_depth
from bench.recipes import pretrain_recipe_from
from tasks.errors import DataFormatError
from tasks.io import load_torch


@dataclass(frozen=True)
class HeldoutDepth:
    before: float  # median |depth error| (metres) over every held-out ray, initial weights
    after: float  # the same, the checkpoint's weights
    picture: Path


def draw_heldout(run_dir: str | Path, out: str | Path | None = None, data: str | Path | None = None,
                 rows: int = 3, device: str = "cpu") -> HeldoutDepth:
    """Draw ``rows`` held-out views or sweeps (evenly spread over them) of the pre-training run in ``run_dir``
    to ``out`` (default ``run_dir/renders/heldout.png``); ``data``: where its data is now, if it moved."""
    run_dir = Path(run_dir)
    recipe_file, checkpoint = run_dir / "recipe.json", run_dir / CHECKPOINT
    for path in (recipe_file, checkpoint):
        if not path.is_file():
            raise DataFormatError(path, "not there: draw_heldout needs a pre-training run's recipe and checkpoint")
    try:
        saved = json.loads(recipe_file.read_text())
        recipe = pretrain_recipe_from(saved["recipe"])
    except (json.JSONDecodeError, KeyError, ValueError, TypeError) as exc:
        raise DataFormatError(recipe_file, f"not a pre-training recipe ({exc})") from exc
    pretrainer = Pretrainer(recipe, data or saved["data"], run_dir, device=device, progress=False)
    held = heldout_samples(pretrainer.source, recipe, pretrainer.voxel, with_preview=True)
    if not held:
        raise ValueError(f"{run_dir}: no held-out view or sweep to render ({recipe.mode} mode on "
                         f"{pretrainer.source.kind})")
    shown = [held[i] for i in np.unique(np.linspace(0, len(held) - 1, rows).round().astype(int))]

    def depths() -> list[np.ndarray]:
        return [pretrainer.render_preview(s)[1] * s.metres_per_unit for s in shown]

    state = load_torch(checkpoint, "a training checkpoint")
    before, before_depth = pretrainer.heldout_depth_error(held), depths()
    pretrainer.model.load_state_dict(state["model"])
    after, after_depth = pretrainer.heldout_depth_error(held), depths()
    out = Path(out) if out else run_dir / "renders" / "heldout.png"
    steps = int(state["step"])
    plot_heldout_depth([(s.name, s.preview.depth * s.metres_per_unit, b, a)
                        for s, b, a in zip(shown, before_depth, after_depth, strict=True)], out,
                       f"{run_dir.name}: held-out depth before and after {steps} steps of pre-training "
                       f"(all held-out rays: median |error| {before:.2f} -> {after:.2f} m)")
    return HeldoutDepth(before, after, out)
