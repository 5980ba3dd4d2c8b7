"""Semantic segmentation: a backbone with a per-point linear head, the backbone optionally frozen."""

from __future__ import annotations

import torch
from torch import nn

from backbones.levels import all_levels, has_levels, level_width, one_level
from backbones.structures import PointBatch


class OnBackbone(nn.Module):
    """A task's heads on a backbone (``.backbone``). ``freeze_backbone`` gives a linear probe: the backbone is not
    trained, and keeps its BatchNorm statistics (it stays in eval mode). ``levels``: the heads read every level
    of the backbone, upcast to the points and concatenated (:func:`backbones.levels.all_levels`); ``level``: that
    one level only (:func:`backbones.levels.one_level`)."""

    def __init__(self, backbone: nn.Module, freeze_backbone: bool = False, levels: bool = False,
                 level: int | None = None) -> None:
        super().__init__()
        if (levels or level is not None) and not has_levels(backbone):
            raise ValueError(f"{type(backbone).__name__} has no levels(): per-level features need a multi-level "
                             "backbone (spunet-v1m1, ptv3-*, sonata-*)")
        if levels and level is not None:
            raise ValueError("levels (every level) and level (one of them) exclude each other")
        if level is not None:
            level_width(backbone, level)  # a level the backbone lacks is named here, not at the first batch
        self.backbone, self.freeze_backbone, self.levels, self.level = backbone, freeze_backbone, levels, level
        if freeze_backbone:
            self.backbone.requires_grad_(False)

    def train(self, mode: bool = True) -> OnBackbone:
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def features(self, batch: PointBatch) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            if self.level is not None:
                return one_level(self.backbone, batch, self.level)
            return all_levels(self.backbone, batch) if self.levels else self.backbone(batch)


class SegmentationModel(OnBackbone):
    """Backbone features (N, C) -> class logits (N, K). ``freeze_backbone`` gives a linear probe."""

    def __init__(self, backbone: nn.Module, feature_channels: int, num_classes: int, freeze_backbone: bool = False,
                 levels: bool = False, level: int | None = None) -> None:
        super().__init__(backbone, freeze_backbone, levels, level)
        self.head = nn.Linear(feature_channels, num_classes)

    def forward(self, batch: PointBatch) -> torch.Tensor:
        return self.head(self.features(batch))


def _lovasz_grad(sorted_truth: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss for errors sorted in decreasing order."""
    total = sorted_truth.sum()
    intersection = total - sorted_truth.cumsum(0)
    union = total + (1.0 - sorted_truth).cumsum(0)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def lovasz_softmax(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -1) -> torch.Tensor:
    """Lovász-softmax loss (Berman et al. 2018), averaged over the classes present in ``labels``."""
    valid = labels != ignore_index
    probs, labels = logits[valid].softmax(-1), labels[valid]
    losses = []
    for c in labels.unique():
        truth = (labels == c).to(probs.dtype)
        errors, order = (truth - probs[:, c]).abs().sort(descending=True)
        losses.append(errors @ _lovasz_grad(truth[order]))
    return torch.stack(losses).mean() if losses else logits.sum() * 0.0
