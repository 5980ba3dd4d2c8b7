"""ScanNet's instance-segmentation AP, with the logic of the benchmark's ``evaluate_semantic_instance.py``.

Per class and IoU threshold, over all scenes: ground-truth instances smaller than ``min_region_size`` points
are left out; predictions smaller than that are dropped. Each ground truth takes the first prediction of its
class whose IoU exceeds the threshold and that no other ground truth has taken (greedy); a second one above
the threshold for the same ground truth is a false positive with the lower score. A ground truth without a
match is a false negative. A prediction that matches nothing is a false positive, unless more than the
threshold's share of its points lie on void (points of no instance class) or on left-out small ground
truths. AP integrates the precision-recall curve as the benchmark does (a step per unique score); mAP
averages it over IoU 0.50:0.05:0.90 and the classes, AP50 and AP25 use one threshold.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

OVERLAPS = np.append(np.arange(0.5, 0.95, 0.05), 0.25)  # the benchmark's thresholds, 0.25 last
MIN_REGION_SIZE = 100  # points
STUFF = ("wall", "floor")


@dataclass(frozen=True)
class InstancePrediction:
    mask: np.ndarray  # (N,) bool over the scene's points
    label: int  # class index
    score: float


@dataclass(frozen=True)
class _GroundTruth:
    label: int
    points: np.ndarray  # (N,) bool


def instance_classes(classes: Sequence[str]) -> tuple[int, ...]:
    """The evaluated classes: every class but the stuff (wall, floor); ScanNet's 20 give its 18."""
    return tuple(i for i, name in enumerate(classes) if name not in STUFF)


def _ground_truth(segment: np.ndarray, instance: np.ndarray, evaluated: set[int]) -> list[_GroundTruth]:
    found = []
    for inst in np.unique(instance[instance >= 0]):
        points = instance == inst
        labels = segment[points]
        label = int(np.bincount(labels[labels >= 0]).argmax()) if (labels >= 0).any() else -1
        if label in evaluated:
            found.append(_GroundTruth(label, points))
    return found


def _ap(y_true: np.ndarray, y_score: np.ndarray, hard_false_negatives: int) -> float:
    """The benchmark's average precision of one class at one threshold."""
    order = np.argsort(y_score, kind="stable")
    scores, true = y_score[order], y_true[order]
    cumsum = np.append(np.cumsum(true), 0)  # index -1 reads the 0: "nothing below the first threshold"
    _, unique = np.unique(scores, return_index=True)
    precision, recall = np.zeros(len(unique) + 1), np.zeros(len(unique) + 1)
    total_true = cumsum[-2] if len(true) else 0  # every prediction ignored: AP 0, as after ScanNet/ScanNet#26
    for k, start in enumerate(unique):
        below = cumsum[start - 1]
        tp = total_true - below
        fp = len(scores) - start - tp
        fn = below + hard_false_negatives
        precision[k], recall[k] = tp / (tp + fp), tp / (tp + fn)
    precision[-1], recall[-1] = 1.0, 0.0
    padded = np.concatenate([recall[:1], recall, [0.0]])
    return float(precision @ np.convolve(padded, [-0.5, 0.0, 0.5], "valid"))


def scannet_instance_ap(scenes: Iterable[tuple[np.ndarray, np.ndarray, list[InstancePrediction]]],
                        classes: Sequence[str], min_region_size: int = MIN_REGION_SIZE) -> dict[str, object]:
    """mAP, AP50, AP25 and per-class AP over ``scenes`` of (segment, instance, predictions).

    ``segment`` holds class indices (-1: unlabelled), ``instance`` instance ids (-1: none). Returns fractions;
    a class with no ground truth has no AP (None) and is left out of the means.
    """
    evaluated = instance_classes(classes)
    aps = np.full((len(evaluated), len(OVERLAPS)), np.nan)
    scenes = [(seg, inst, [p for p in preds if p.mask.sum() >= min_region_size]) for seg, inst, preds in scenes]
    truths = [_ground_truth(seg, inst, set(evaluated)) for seg, inst, _ in scenes]
    for ci, label in enumerate(evaluated):
        for oi, threshold in enumerate(OVERLAPS):
            y_true, y_score, hard_fn, has_gt, has_pred = [], [], 0, False, False
            for (segment, _, preds), gts in zip(scenes, truths, strict=True):
                void = ~np.isin(segment, evaluated)
                gts = [g for g in gts if g.label == label]
                preds = [p for p in preds if p.label == label]
                large = [g for g in gts if g.points.sum() >= min_region_size]
                has_gt, has_pred = has_gt or bool(large), has_pred or bool(preds)
                taken = [False] * len(preds)
                for gt in large:
                    matched, best = False, -np.inf
                    for pi, pred in enumerate(preds):
                        if taken[pi] or _iou(gt.points, pred.mask) <= threshold:
                            continue
                        if matched:  # a second prediction for this ground truth: the lower score is a false positive
                            y_true.append(0)
                            y_score.append(min(best, pred.score))
                            best = max(best, pred.score)
                        else:
                            matched, best, taken[pi] = True, pred.score, True
                    if matched:
                        y_true.append(1)
                        y_score.append(best)
                    else:
                        hard_fn += 1
                for pred in preds:
                    if any(_iou(gt.points, pred.mask) > threshold for gt in gts):
                        continue
                    ignored = (pred.mask & void).sum() + sum((pred.mask & g.points).sum() for g in gts
                                                             if g.points.sum() < min_region_size)
                    if ignored / pred.mask.sum() <= threshold:
                        y_true.append(0)
                        y_score.append(pred.score)
            if has_gt and has_pred:
                aps[ci, oi] = _ap(np.array(y_true, float), np.array(y_score, float), hard_fn)
            elif has_gt:
                aps[ci, oi] = 0.0
    o25, o50 = np.isclose(OVERLAPS, 0.25), np.isclose(OVERLAPS, 0.5)

    def mean(values: np.ndarray) -> float:
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    per_class = {classes[label]: (None if np.isnan(aps[ci]).all() else
                                  {"AP": mean(aps[ci, ~o25]), "AP50": mean(aps[ci, o50]), "AP25": mean(aps[ci, o25])})
                 for ci, label in enumerate(evaluated)}
    return {"mAP": mean(aps[:, ~o25]), "AP50": mean(aps[:, o50]), "AP25": mean(aps[:, o25]), "per_class": per_class}


def _iou(gt: np.ndarray, pred: np.ndarray) -> float:
    inter = int((gt & pred).sum())
    return inter / (int(gt.sum()) + int(pred.sum()) - inter)
