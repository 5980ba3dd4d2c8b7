"""Instance segmentation, PointGroup-style (as Pointcept fine-tunes PonderV2 for it): a semantic head and a
per-point offset to the instance centre; instances are clusters of same-class points after the shift.

Clustering builds the radius graph with scipy's cKDTree and takes its connected components, on CPU or GPU
tensors alike (no custom CUDA op). Pointcept's ball query also caps each point at 300 neighbours; the
components here use every neighbour within the radius.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from torch import nn

from backbones.structures import PointBatch
from tasks.heads.segmentation import OnBackbone
from tasks.metrics.instance import InstancePrediction

RADIUS_VOXELS = 1.5  # Pointcept's cluster_thresh, in voxels
MIN_CLUSTER = 50  # points a cluster needs (cluster_min_points)
MIN_PROPOSAL = 100  # points a proposal needs (cluster_propose_points)


class InstanceSegmentationModel(OnBackbone):
    """Backbone features (N, C) -> class logits (N, K) and offsets to the instance centre (N, 3). The heads carry
    PointGroup's module names (``seg_head``, ``bias_head``), so a PG-v1m1 checkpoint's heads load as they are."""

    def __init__(self, backbone: nn.Module, feature_channels: int, num_classes: int, freeze_backbone: bool = False
                 ) -> None:
        super().__init__(backbone, freeze_backbone)
        self.seg_head = nn.Linear(feature_channels, num_classes)
        self.bias_head = nn.Sequential(nn.Linear(feature_channels, feature_channels), nn.BatchNorm1d(feature_channels),
                                    nn.ReLU(), nn.Linear(feature_channels, 3))

    def forward(self, batch: PointBatch) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(batch)
        return self.seg_head(feats), self.bias_head(feats)


def centre_offsets(coord: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """(N, 3) offset from each point to its instance's centroid (zeros where ``instance`` is -1)."""
    offsets = np.zeros_like(coord, dtype=np.float32)
    ids, inverse = np.unique(instance, return_inverse=True)
    sums = np.zeros((len(ids), 3))
    np.add.at(sums, inverse, coord)
    centroids = sums / np.bincount(inverse)[:, None]
    inside = instance >= 0
    offsets[inside] = (centroids[inverse] - coord)[inside]
    return offsets


def pointgroup_loss(logits: torch.Tensor, offsets: torch.Tensor, segment: torch.Tensor, target_offsets: torch.Tensor,
                    instance: torch.Tensor, ignore_index: int = -1) -> dict[str, torch.Tensor]:
    """Cross-entropy + L1 of the offsets + negative cosine of their directions (both over instance points)."""
    ce = F.cross_entropy(logits, segment, ignore_index=ignore_index)
    inside = instance >= 0
    if not inside.any():
        zero = offsets.sum() * 0.0
        return {"semantic": ce, "offset_l1": zero, "offset_cosine": zero, "total": ce}
    pred, target = offsets[inside], target_offsets[inside]
    l1 = (pred - target).abs().sum(-1).mean()
    cosine = -(F.normalize(pred, dim=-1) * F.normalize(target, dim=-1)).sum(-1).mean()
    return {"semantic": ce, "offset_l1": l1, "offset_cosine": cosine, "total": ce + l1 + cosine}


def cluster_instances(coord: np.ndarray, offsets: np.ndarray, probabilities: np.ndarray, stuff: Sequence[int],
                      voxel_size: float, radius: float = RADIUS_VOXELS, min_cluster: int = MIN_CLUSTER,
                      min_proposal: int = MIN_PROPOSAL) -> list[InstancePrediction]:
    """Proposals: connected components of same-class points within ``radius`` voxels after the shift, stuff
    classes left out, scored by the mean probability of their class."""
    shifted = (coord + offsets) / voxel_size
    labels = probabilities.argmax(1)
    found = []
    for label in np.unique(labels):
        if label in stuff:
            continue
        members = np.flatnonzero(labels == label)
        pairs = cKDTree(shifted[members]).query_pairs(radius, output_type="ndarray")
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(members),) * 2)
        _, component = connected_components(graph, directed=False)
        sizes = np.bincount(component)
        for c in np.flatnonzero(sizes >= max(min_cluster, min_proposal)):
            points = members[component == c]
            mask = np.zeros(len(coord), bool)
            mask[points] = True
            found.append(InstancePrediction(mask, int(label), float(probabilities[points, label].mean())))
    return found
