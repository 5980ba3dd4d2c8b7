"""Semantic-segmentation metrics from one confusion matrix: mIoU, mAcc, allAcc and per-class IoU.

Per-class IoU follows nuscenes-devkit: a class absent from both the ground truth and the predictions has no IoU
(NaN), one only predicted has 0. mIoU and mAcc average over the classes present in the ground truth: on a full
benchmark split every class is present and this is the official mean; on a small split (the mini suite's few
scenes) a class no scene contains does not count as a failure. Ignored points (label -1) count nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ConfusionMatrix:
    num_classes: int
    ignore_index: int = -1
    matrix: np.ndarray = field(init=False)  # rows: ground truth, columns: prediction

    def __post_init__(self) -> None:
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, target: np.ndarray, prediction: np.ndarray) -> ConfusionMatrix:
        target, prediction = np.asarray(target).reshape(-1), np.asarray(prediction).reshape(-1)
        if target.shape != prediction.shape:
            raise ValueError(f"target {target.shape} and prediction {prediction.shape} differ in length")
        keep = target != self.ignore_index
        target, prediction = target[keep], prediction[keep]
        if len(target) and (target.min() < 0 or target.max() >= self.num_classes):
            raise ValueError(f"target labels outside [0, {self.num_classes}) other than {self.ignore_index}")
        if len(prediction) and (prediction.min() < 0 or prediction.max() >= self.num_classes):
            raise ValueError(f"predicted labels outside [0, {self.num_classes})")
        self.matrix += np.bincount(target * self.num_classes + prediction,
                                   minlength=self.num_classes**2).reshape(self.num_classes, self.num_classes)
        return self

    def iou(self) -> np.ndarray:
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def accuracy(self) -> np.ndarray:
        tp = np.diag(self.matrix).astype(np.float64)
        support = self.matrix.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(support > 0, tp / support, np.nan)

    def scores(self, class_names: tuple[str, ...] | None = None) -> dict[str, object]:
        iou, acc = self.iou(), self.accuracy()
        present = self.matrix.sum(1) > 0
        total = self.matrix.sum()
        names = class_names or tuple(str(i) for i in range(self.num_classes))
        return {
            "mIoU": float(np.nanmean(iou[present])) if present.any() else float("nan"),
            "mAcc": float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan"),
            "allAcc": float(np.diag(self.matrix).sum() / total) if total else float("nan"),
            "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou, strict=True)},
        }
