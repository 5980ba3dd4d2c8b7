"""Scores of the low-level tasks, as the papers compute them.

* Image synthesis: PSNR and SSIM (scikit-image; SSIM with Wang et al.'s Gaussian window, sigma 1.5, as NeRF
  papers report it) on colour in [0, 1].
* Depth: AbsRel = mean |d - d*| / d*, RMSE, and delta < 1.25 = the share of pixels with max(d/d*, d*/d) < 1.25,
  over the pixels with a valid real depth d*.
* Reconstruction (NeuralRecon, ManhattanSDF): points sampled on the predicted mesh against the reference cloud:
  accuracy = mean distance predicted -> reference, completeness = mean distance reference -> predicted,
  Chamfer-L1 = their mean, precision / recall = the share of predicted / reference points within 5 cm of the
  other cloud, F-score = their harmonic mean. Both clouds are thinned to one point per 1 cm voxel first, and
  both are cut to what the scene's frames observed (``seen_by_views``): the papers render the predicted mesh from
  the frames and fuse those depths again, so surface no frame saw (the closed back of a fitted SDF, an unscanned
  corner of the reference mesh) is scored neither as wrong nor as missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from tasks.io import atomic_write
from tasks.structures import PosedViews

# how the leaderboard shows each metric: (factor, unit, decimals)
DISPLAY = {"PSNR": (1.0, "dB", 2), "SSIM": (1.0, "", 3), "AbsRel": (1.0, "", 3), "RMSE": (100.0, "cm", 1),
           "delta1": (100.0, "%", 1), "fscore": (100.0, "%", 1), "precision": (100.0, "%", 1),
           "recall": (100.0, "%", 1), "accuracy": (100.0, "cm", 1), "completeness": (100.0, "cm", 1),
           "chamfer_l1": (100.0, "cm", 1)}
F_THRESHOLD = 0.05  # metres
EVAL_VOXEL = 0.01  # metres: both clouds are thinned to this before scoring
NEAR = 0.05  # metres: nearer to a camera than this is not seen by it


def psnr(predicted: np.ndarray, target: np.ndarray) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(target.astype(np.float64), predicted.astype(np.float64), data_range=1.0))


def ssim(predicted: np.ndarray, target: np.ndarray) -> float:
    """SSIM of two (H, W, 3) images in [0, 1]."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(target.astype(np.float64), predicted.astype(np.float64), channel_axis=-1,
                                       data_range=1.0, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))


def depth_errors(predicted: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """AbsRel, RMSE (metres) and delta < 1.25 over the pixels where ``target`` > 0."""
    valid = target > 0
    if not valid.any():
        raise ValueError("no pixel with a valid reference depth")
    d, ref = np.maximum(predicted[valid].astype(np.float64), 1e-6), target[valid].astype(np.float64)
    return {"AbsRel": float(np.mean(np.abs(d - ref) / ref)), "RMSE": float(np.sqrt(np.mean((d - ref) ** 2))),
            "delta1": float(np.mean(np.maximum(d / ref, ref / d) < 1.25))}


def thin(points: np.ndarray, voxel: float = EVAL_VOXEL) -> np.ndarray:
    """One point (the first) per ``voxel``-sized cell."""
    cell = np.floor(points / voxel).astype(np.int64)
    cell -= cell.min(0)
    key = (cell[:, 0] * (cell[:, 1].max() + 1) + cell[:, 1]) * (cell[:, 2].max() + 1) + cell[:, 2]
    _, first = np.unique(key, return_index=True)
    return points[np.sort(first)]


def reconstruction_scores(predicted: np.ndarray, reference: np.ndarray, threshold: float = F_THRESHOLD
                          ) -> dict[str, float]:
    """Accuracy, completeness, Chamfer-L1 (metres), precision, recall and F-score at ``threshold``."""
    if len(predicted) == 0 or len(reference) == 0:
        raise ValueError(f"cannot score a reconstruction: {len(predicted)} predicted, {len(reference)} reference "
                         "points")
    predicted, reference = thin(predicted), thin(reference)
    to_reference = cKDTree(reference).query(predicted, workers=-1)[0]
    to_predicted = cKDTree(predicted).query(reference, workers=-1)[0]
    precision, recall = float(np.mean(to_reference < threshold)), float(np.mean(to_predicted < threshold))
    accuracy, completeness = float(to_reference.mean()), float(to_predicted.mean())
    return {"accuracy": accuracy, "completeness": completeness, "chamfer_l1": (accuracy + completeness) / 2,
            "precision": precision, "recall": recall,
            "fscore": 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)}


def seen_by_views(points: np.ndarray, views: PosedViews, tolerance: float = F_THRESHOLD) -> np.ndarray:
    """Which points (N, 3) some frame observes: in front of it, projecting onto a pixel of valid depth, and at most
    ``tolerance`` behind that depth (nearer is space the frame saw to be empty). What lies behind every observed
    surface, or where the sensor had no depth, is neither right nor wrong: the papers cut it by rendering the
    mesh from the frames; the frames' own depth does it here without a rasterizer."""
    seen = np.zeros(len(points), dtype=bool)
    height, width = views.depth.shape[1:]
    for k in range(len(views)):
        world_to_camera = np.linalg.inv(views.cam_to_world[k])
        camera = points @ world_to_camera[:3, :3].T + world_to_camera[:3, 3]
        intrinsics = views.intrinsics[k]
        z = np.maximum(camera[:, 2], NEAR)
        u = np.floor(intrinsics[0, 0] * camera[:, 0] / z + intrinsics[0, 2])
        v = np.floor(intrinsics[1, 1] * camera[:, 1] / z + intrinsics[1, 2])
        index = np.flatnonzero((camera[:, 2] > NEAR) & (u >= 0) & (u < width) & (v >= 0) & (v < height))
        observed = views.depth[k][v[index].astype(np.int64), u[index].astype(np.int64)]
        seen[index] |= (observed > 0) & (camera[index, 2] <= observed + tolerance)
    return seen


def mesh_from_sdf(sdf: np.ndarray, lo: np.ndarray, spacing: float, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The zero level set of an SDF sampled on a grid (X, Y, Z) whose first sample sits at ``lo``: vertices (V, 3)
    in the grid's frame and triangles (F, 3), marched every ``step`` samples (a coarser mesh to draw). Raises when
    the SDF does not change sign."""
    from skimage.measure import marching_cubes

    if not (sdf.min() < 0 < sdf.max()):
        raise ValueError(f"the SDF has no zero crossing (range {sdf.min():.3g} .. {sdf.max():.3g})")
    vertices, faces, _, _ = marching_cubes(sdf.astype(np.float32), level=0.0, spacing=(spacing,) * 3,
                                         step_size=step)
    return vertices + np.asarray(lo, dtype=np.float64), faces.astype(np.int64)


def sample_surface(vertices: np.ndarray, faces: np.ndarray, density: float, rng: np.random.Generator
                   ) -> np.ndarray:
    """Points drawn uniformly on a triangle mesh, ``density`` per square metre (at least one per mesh)."""
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    area = np.linalg.norm(np.cross(b - a, c - a), axis=1) / 2
    count = max(1, int(round(area.sum() * density)))
    tri = rng.choice(len(faces), size=count, p=area / area.sum())
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    return a[tri] + u[:, None] * (b[tri] - a[tri]) + v[:, None] * (c[tri] - a[tri])


def write_mesh(path: Path, vertices: np.ndarray, faces: np.ndarray) -> Path:
    """A binary little-endian PLY mesh (float32 vertices, int32 triangle indices; no triangles: a point cloud)."""
    from plyfile import PlyData, PlyElement

    vertex = np.empty(len(vertices), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    vertex["x"], vertex["y"], vertex["z"] = vertices.T
    face = np.empty(len(faces), dtype=[("vertex_indices", "i4", (3,))])
    face["vertex_indices"] = faces
    data = PlyData([PlyElement.describe(vertex, "vertex"), PlyElement.describe(face, "face")])
    atomic_write(path, lambda tmp: data.write(str(tmp)))
    return path


def read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) and triangles (F, 3) of a PLY file; F is 0 for a point cloud (no ``face`` element)."""
    from plyfile import PlyData

    from tasks.errors import DataFormatError

    try:
        data = PlyData.read(str(path))
        vertex = data["vertex"]
        vertices = np.stack([vertex["x"], vertex["y"], vertex["z"]], 1).astype(np.float64)
        names = [e.name for e in data.elements]
        faces = (np.stack(data["face"]["vertex_indices"]).astype(np.int64).reshape(-1, 3)
                 if "face" in names and data["face"].count else np.zeros((0, 3), dtype=np.int64))
    except (OSError, KeyError, ValueError) as exc:
        raise DataFormatError(path, f"not a PLY mesh or point cloud ({exc})") from exc
    return vertices, faces
