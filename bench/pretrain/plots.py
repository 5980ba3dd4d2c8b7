"""Pictures of a pre-training run: the loss curves, and rendered-vs-real colour and depth."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tasks.io import atomic_write  # noqa: E402


def save_figure(fig: plt.Figure, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png"))
    plt.close(fig)


def plot_losses(steps: pd.DataFrame, path: Path) -> None:
    """One line per loss term (log scale) over the steps of the run log (``metrics.jsonl``)."""
    terms = [c for c in steps.columns if c not in ("step", "epoch", "lr", "seconds")]
    fig, ax = plt.subplots(figsize=(7, 4))
    for term in terms:
        ax.plot(steps["step"], steps[term].clip(lower=1e-8), label=term, lw=1.5 if term == "total" else 1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("weighted loss")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_render(real_rgb: np.ndarray | None, rendered_rgb: np.ndarray | None, real_depth: np.ndarray,
                rendered_depth: np.ndarray, path: Path, title: str) -> None:
    """Real vs rendered colour (when there is colour) and depth, side by side; unknown real depth is blank."""
    rows = [("depth", real_depth, rendered_depth)]
    if real_rgb is not None and rendered_rgb is not None:
        rows.insert(0, ("colour", real_rgb, rendered_rgb))
    fig, axes = plt.subplots(len(rows), 2, figsize=(8, 3 * len(rows)), squeeze=False)
    known = real_depth[real_depth > 0]
    vmax = float(np.percentile(known, 98)) if known.size else float(rendered_depth.max() or 1.0)
    for r, (name, real, rendered) in enumerate(rows):
        for c, (label, image) in enumerate((("real", real), ("rendered", rendered))):
            ax = axes[r, c]
            if name == "depth":
                shown = np.where(image > 0, image, np.nan) if label == "real" else image
                ax.imshow(shown, cmap="turbo", vmin=0.0, vmax=vmax)
            else:
                ax.imshow(np.clip(image, 0, 1))
            ax.set_title(f"{label} {name}", fontsize=9)
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def plot_heldout_depth(rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], path: Path, title: str) -> None:
    """One row per held-out view or sweep: real depth, depth rendered by the initial weights and by the trained
    ones (metres, one scale per row; unknown real depth blank), each rendering's median |error| in its title."""
    fig, axes = plt.subplots(len(rows), 3, figsize=(11, 2.6 * len(rows)), squeeze=False, layout="constrained")
    for ax_row, (name, real, before, after) in zip(axes, rows, strict=True):
        known = real > 0
        top = float(np.percentile(real[known], 98)) if known.any() else float(max(before.max(), after.max()) or 1)
        panels = ((np.where(known, real, np.nan), f"{name}: real depth"),
                  (before, f"before: median |error| {np.median(np.abs(before - real)[known]):.2f} m"),
                  (after, f"after: median |error| {np.median(np.abs(after - real)[known]):.2f} m"))
        for ax, (image, label) in zip(ax_row, panels, strict=True):
            shown = ax.imshow(image, cmap="turbo", vmin=0.0, vmax=top)
            ax.set_title(label, fontsize=9)
            ax.axis("off")
        fig.colorbar(shown, ax=ax_row, fraction=0.02, label="depth (m)")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)
