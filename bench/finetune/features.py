"""What a backbone's frozen features encode: linear probes for colour, normal, height, intensity and class.

A diagnostic for "why does (or doesn't) pre-training help": ridge regressions from the per-point features of a
frozen backbone (its BatchNorm statistics recomputed on the task's training scenes, whole, as the probe
protocol does on its crops) to quantities of the scene, fitted on training scenes and scored on evaluation
scenes. Colour and normals are indoor inputs, so a net that keeps them scores high; height above the floor is
not an input, and neither is the class. Scores: R^2 for the regressions, accuracy of the least-squares
classifier for the class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from backbones.registry import create_backbone, get_backbone_config
from backbones.structures import use_condition
from bench.finetune.engine import batchnorm_clouds, cloud_inputs
from bench.finetune.exports import load_export
from bench.finetune.semseg import point_outputs
from bench.hooks import precise_batchnorm
from bench.recipes import DOMAIN_AUGMENT
from tasks.contract import Domain, in_channels, voxel_size
from tasks.datasets import task_scenes
from tasks.spec import TaskSpec
from tasks.structures import Scene
from tasks.transforms import CropSize, parse_transforms

POINTS_PER_SCENE = 20_000  # points drawn per scene for the regressions
RIDGE = 1e-3  # ridge strength on standardised features


def scene_targets(scene: Scene, domain: Domain) -> dict[str, np.ndarray]:
    """The per-point quantities probed: (N, D) arrays; the class as int (N, 1), -1 ignored."""
    out = {"height": (scene.coord[:, 2:3] - np.percentile(scene.coord[:, 2], 1)).astype(np.float64)}
    if domain == "indoor":
        if scene.color is not None:
            out["colour"] = scene.color.astype(np.float64) / 255.0
        if scene.normal is not None:
            out["normal"] = scene.normal.astype(np.float64)
    elif scene.strength is not None:
        out["intensity"] = scene.strength.astype(np.float64)
    if scene.segment is not None:
        out["class"] = scene.segment[:, None].astype(np.int64)
    return out


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float = RIDGE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge regression on standardised features: (weights (C+1, D), feature mean, feature scale)."""
    mean, scale = x.mean(0), x.std(0) + 1e-8
    z = _design(x, mean, scale)
    gram = z.T @ z + alpha * len(x) * np.eye(z.shape[1])
    return np.linalg.solve(gram, z.T @ y), mean, scale


def ridge_predict(fit: tuple[np.ndarray, np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    weights, mean, scale = fit
    return _design(x, mean, scale) @ weights


def _design(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Standardised features with a bias column."""
    return np.concatenate([(x - mean) / scale, np.ones((len(x), 1))], 1)


def r2_score(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Coefficient of determination over all output columns together (1: perfect, 0: the mean's error)."""
    residual = ((truth - predicted) ** 2).sum()
    total = ((truth - truth.mean(0)) ** 2).sum()
    return float(1.0 - residual / total) if total > 0 else float("nan")


def _draw(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(len(scene), size=min(POINTS_PER_SCENE, len(scene)), replace=False))


def feature_probe(spec: TaskSpec, backbone_name: str, data_root: str | Path, *, init: str | Path | None = None,
                  seed: int = 0, scenes: int = 8, device: str = "cpu") -> dict[str, float]:
    """Scores of linear probes of the frozen features of ``backbone_name`` (random, or loaded from ``init``):
    fitted on up to ``scenes`` training scenes of ``spec``, scored on up to ``scenes`` evaluation scenes."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    channels = in_channels(spec.domain)
    backbone = create_backbone(backbone_name, in_channels=channels)
    use_condition(backbone, spec.condition)
    if init:
        load_export(backbone, init, backbone_name, channels)
    voxel = voxel_size(spec.domain, get_backbone_config(backbone_name).voxel_size)
    dev = torch.device(device)
    backbone.to(dev)
    train, evaluation = task_scenes(spec, data_root, "train"), task_scenes(spec, data_root, spec.eval_split)
    picked = sorted(rng.permutation(len(train))[:max(scenes, 1)].tolist())
    clouds = batchnorm_clouds(train, spec.domain, voxel, CropSize(), parse_transforms(DOMAIN_AUGMENT[spec.domain]),
                              seed)
    precise_batchnorm(backbone, cloud_inputs(clouds, dev))
    parts: dict[str, list[tuple[np.ndarray, dict[str, np.ndarray]]]] = {"train": [], "eval": []}
    for split, data, indices in (("train", train, picked), ("eval", evaluation, range(min(scenes, len(evaluation))))):
        for i in indices:
            scene = data[i]
            keep = _draw(scene, rng)
            feats = point_outputs(backbone, scene, voxel, spec.domain, dev, lambda f: f, max_fragments=1)[keep]
            parts[split].append((feats, {k: v[keep] for k, v in scene_targets(scene, spec.domain).items()}))
    x = {s: np.concatenate([f for f, _ in parts[s]]).astype(np.float64) for s in parts}
    scores = {}
    probed = set.intersection(*(set(t) for split in parts.values() for _, t in split))  # what every scene has
    for name in sorted(probed):
        y = {s: np.concatenate([t[name] for _, t in parts[s]]) for s in parts}
        if name == "class":
            scores["class_accuracy"] = _class_accuracy(x["train"], y["train"][:, 0], x["eval"], y["eval"][:, 0],
                                                       len(spec.classes))
        else:
            scores[f"{name}_r2"] = r2_score(y["eval"], ridge_predict(ridge_fit(x["train"], y["train"]), x["eval"]))
    return scores


def _class_accuracy(x: np.ndarray, labels: np.ndarray, x_eval: np.ndarray, labels_eval: np.ndarray,
                    classes: int) -> float:
    """Accuracy of the least-squares (one-hot ridge) classifier over the labelled evaluation points."""
    known, known_eval = labels >= 0, labels_eval >= 0
    if not known.any() or not known_eval.any():
        return float("nan")
    fit = ridge_fit(x[known], np.eye(classes)[labels[known]])
    return float((ridge_predict(fit, x_eval[known_eval]).argmax(1) == labels_eval[known_eval]).mean())
