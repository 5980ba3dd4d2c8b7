"""Pictures of a fine-tuned model's predictions, written beside the leaderboard's tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bench.pretrain.plots import save_figure  # noqa: E402
from tasks.metrics.instance import InstancePrediction  # noqa: E402

BACKGROUND = (0.82, 0.82, 0.82)


def _instance_colours(count: int) -> np.ndarray:
    return plt.get_cmap("tab20")(np.arange(count) % 20)[:, :3]


def plot_instances(coord: np.ndarray, instance: np.ndarray, predictions: Sequence[InstancePrediction],
                   classes: Sequence[str], path: Path, title: str) -> None:
    """Top-down view of one scene: ground-truth instances (left) beside the predicted ones (right), one colour
    per instance, points of no instance in grey; predictions drawn in order of score, the best on top."""
    truth = np.tile(BACKGROUND, (len(coord), 1))
    ids = np.unique(instance[instance >= 0])
    for colour, inst in zip(_instance_colours(len(ids)), ids, strict=True):
        truth[instance == inst] = colour
    predicted = np.tile(BACKGROUND, (len(coord), 1))
    ranked = sorted(predictions, key=lambda p: p.score)
    for colour, pred in zip(_instance_colours(len(ranked)), ranked, strict=True):
        predicted[pred.mask] = colour
    order = np.argsort(coord[:, 2])  # higher points drawn last, as seen from above
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.5), sharex=True, sharey=True)
    for ax, colours, name in ((axes[0], truth, f"ground truth ({len(ids)} instances)"),
                              (axes[1], predicted, f"predicted ({len(ranked)} proposals)")):
        ax.scatter(coord[order, 0], coord[order, 1], c=colours[order], s=2, linewidths=0)
        ax.set_title(name)
        ax.set_aspect("equal")
        ax.set_xlabel("x (m)")
    axes[0].set_ylabel("y (m)")
    for pred in ranked[-8:]:  # label the best proposals with their class and score
        x, y = coord[pred.mask, :2].mean(0)
        axes[1].annotate(f"{classes[pred.label]} {pred.score:.2f}", (x, y), fontsize=7, ha="center")
    fig.suptitle(title)
    save_figure(fig, path)
