"""Pictures of a fine-tuned model's predictions, written beside the leaderboard's tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bench.pretrain.plots import save_figure  # noqa: E402
from tasks.formats.nuscenes import SensorSample  # noqa: E402
from tasks.metrics.detection import LidarBoxes  # noqa: E402
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


def _draw_bev_boxes(ax: plt.Axes, boxes: LidarBoxes, colour: str, label: str) -> None:
    for i, corners in enumerate(boxes.corners()):
        ring = corners[[0, 1, 2, 3, 0], :2]
        ax.plot(ring[:, 0], ring[:, 1], color=colour, linewidth=1.0, label=label if i == 0 else None)
        front = corners[[0, 3], :2].mean(0)  # a tick from the centre to the front face shows the heading
        ax.plot([boxes.centers[i, 0], front[0]], [boxes.centers[i, 1], front[1]], color=colour, linewidth=1.0)


def plot_detections(sample: SensorSample, predicted: LidarBoxes, path: Path, title: str, extent: float = 51.2,
                    min_score: float = 0.2) -> None:
    """Top-down view of one sample in its LiDAR frame: points by height, ground-truth boxes (green) and predicted
    boxes scoring at least ``min_score`` (red), each with a tick towards its front."""
    from bench.finetune.detection import sample_boxes

    points = sample.points
    near = (np.abs(points[:, :2]) < extent).all(1)
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.scatter(points[near, 0], points[near, 1], c=points[near, 2], cmap="viridis", s=0.3, linewidths=0,
               vmin=-2.5, vmax=2.0)
    truth = sample_boxes(sample, training=False)
    _draw_bev_boxes(ax, truth, "limegreen", f"ground truth ({len(truth)})")
    shown = predicted.select(predicted.scores >= min_score)
    _draw_bev_boxes(ax, shown, "red", f"predicted, score >= {min_score} ({len(shown)})")
    ax.plot([0, 4], [0, 0], color="black", linewidth=2)  # the LiDAR frame's axes
    ax.plot([0, 0], [0, 4], color="black", linewidth=2)
    ax.annotate("x", (4.5, 0), fontsize=9)
    ax.annotate("y", (0, 4.5), fontsize=9)
    ax.set(xlim=(-extent, extent), ylim=(-extent, extent), aspect="equal", xlabel="x (m)", ylabel="y (m)",
           title=title)
    ax.legend(loc="upper right", fontsize=8)
    save_figure(fig, path)


def plot_boxes_on_camera(sample: SensorSample, view: int, boxes: Sequence[tuple[LidarBoxes, str]], path: Path,
                         title: str) -> None:
    """Boxes (each set with its colour) projected into one camera image, edges clipped to the visible part."""
    image = sample.images[view]
    h, w = image.shape[:2]
    fig, ax = plt.subplots(figsize=(12, 12 * h / w))
    ax.imshow(image)
    edges = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]
    to_cam = sample.lidar_to_cam[view]
    for group, colour in boxes:
        for corners in group.corners():
            cam = corners @ to_cam[:3, :3].T + to_cam[:3, 3]
            if (cam[:, 2] < 0.5).any():
                continue  # behind the camera or cut by its plane
            uv = cam @ sample.intrinsics[view].T
            uv = uv[:, :2] / uv[:, 2:3]
            if not ((uv[:, 0] > 0) & (uv[:, 0] < w) & (uv[:, 1] > 0) & (uv[:, 1] < h)).any():
                continue
            for a, b in edges:
                ax.plot(uv[[a, b], 0], uv[[a, b], 1], color=colour, linewidth=1.2)
    ax.set(xlim=(0, w), ylim=(h, 0), title=title)
    ax.axis("off")
    save_figure(fig, path)


def plot_heldout_strip(frames: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], path: Path,
                       title: str) -> None:
    """One row per held-out frame: real and rendered colour, real and rendered depth (one scale, metres), and the
    colour error (mean absolute, per pixel)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig, axes = plt.subplots(len(frames), 5, figsize=(16, 2.4 * len(frames)), squeeze=False,
                             layout="constrained")
    top = max(float(np.max(f[2])) for f in frames) or 1.0
    depth_style, error_style = {"cmap": "viridis", "vmin": 0, "vmax": top}, {"cmap": "magma", "vmin": 0, "vmax": 0.5}
    for row, (real, rendered, real_depth, depth) in zip(axes, frames, strict=True):
        panels = ((real, "real", {}), (rendered, "rendered", {}), (real_depth, "real depth", depth_style),
                  (depth, "rendered depth", depth_style),
                  (np.abs(rendered - real).mean(-1), "|colour error|", error_style))
        for ax, (image, name, style) in zip(row, panels, strict=True):
            ax.imshow(image, **style)
            ax.set_title(name, fontsize=9)
            ax.axis("off")
    for style, columns, label in ((depth_style, slice(2, 4), "depth (m)"), (error_style, 4, "|colour error|")):
        scale = ScalarMappable(Normalize(style["vmin"], style["vmax"]), plt.get_cmap(style["cmap"]))
        fig.colorbar(scale, ax=axes[:, columns], fraction=0.03, label=label)
    fig.suptitle(title)
    save_figure(fig, path)


def plot_mesh(vertices: np.ndarray, faces: np.ndarray, path: Path, title: str, error: np.ndarray,
              up: Sequence[float] = (0.0, 0.0, 1.0), error_max: float = 0.1) -> None:
    """The mesh seen from above and from an oblique corner (``up`` is the scene's up direction: 7-Scenes' world
    frame is the first camera's), each face coloured by its ``error`` (metres, e.g. its distance to the reference
    surface; clipped at ``error_max``) and Lambert-shaded by its normal."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection
    from scipy.spatial.transform import Rotation

    upright = Rotation.align_vectors([[0.0, 0.0, 1.0]], [up])[0]
    triangles = upright.apply(vertices)[faces]
    normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    light = np.array([0.4, 0.3, 0.87])
    shade = 0.45 + 0.55 * np.abs(normals @ (light / np.linalg.norm(light)))
    scale = ScalarMappable(Normalize(0, 100 * error_max), plt.get_cmap("viridis"))
    colours = scale.to_rgba(100 * error)
    colours[:, :3] *= shade[:, None]
    lo, hi = triangles.reshape(-1, 3).min(0), triangles.reshape(-1, 3).max(0)
    fig = plt.figure(figsize=(14, 6.5))
    for i, (elev, azim, name) in enumerate(((89, -90, "from above"), (35, -60, "oblique"))):
        ax = fig.add_subplot(1, 2, i + 1, projection="3d")
        # faces edged in their own colour: no seams between them
        ax.add_collection3d(Poly3DCollection(triangles, facecolors=colours, edgecolors=colours, linewidths=0.3))
        ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), zlim=(lo[2], hi[2]), title=name)
        ax.set_proj_type("ortho")
        ax.set_box_aspect(hi - lo, zoom=1.4)
        ax.view_init(elev=elev, azim=azim)
        ax.set_axis_off()
    fig.colorbar(scale, ax=fig.axes, fraction=0.02, label="distance to the reference (cm)")
    fig.suptitle(title)
    save_figure(fig, path)
