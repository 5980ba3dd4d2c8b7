"""PointGroup-style instance head: offsets, loss terms by hand, clustering, and the evaluator on its output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backbones.registry import create_backbone
from backbones.structures import PointBatch
from tasks.heads.instance import InstanceSegmentationModel, centre_offsets, cluster_instances, pointgroup_loss
from tasks.metrics.instance import scannet_instance_ap

CLASSES = ("wall", "floor", "chair", "table")


def _objects(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two chairs and a table (300 points each in blobs of 15 cm sigma, 1 m apart) and 200 wall points."""
    centres = np.array([[0.0, 0.0, 0.5], [1.0, 0.0, 0.5], [0.0, 1.0, 0.5]])
    coord = np.concatenate([c + rng.normal(0, 0.15, (300, 3)) for c in centres] + [rng.uniform(-1, 2, (200, 3))])
    segment = np.concatenate([np.full(300, 2), np.full(300, 2), np.full(300, 3), np.full(200, 0)])
    instance = np.concatenate([np.full(300, 0), np.full(300, 1), np.full(300, 2), np.full(200, -1)])
    return coord.astype(np.float32), segment, instance


def test_centre_offsets_point_at_the_centroids() -> None:
    coord = np.array([[0, 0, 0], [2, 0, 0], [5, 5, 5]], np.float32)
    np.testing.assert_allclose(centre_offsets(coord, np.array([0, 0, -1])), [[1, 0, 0], [-1, 0, 0], [0, 0, 0]])


def test_loss_terms_by_hand() -> None:
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    offsets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], requires_grad=True)
    target = torch.tensor([[1.0, 1.0, 0.0], [0.0, -2.0, 0.0]])
    terms = pointgroup_loss(logits, offsets, torch.tensor([0, 1]), target, torch.tensor([0, -1]))
    assert terms["semantic"].item() == pytest.approx(np.log(2))
    assert terms["offset_l1"].item() == pytest.approx(1.0)  # only the first point is in an instance
    assert terms["offset_cosine"].item() == pytest.approx(-1 / np.sqrt(2))
    terms["total"].backward()
    assert offsets.grad[1].abs().sum() == 0


def test_clustering_finds_the_objects_and_scores_them() -> None:
    coord, segment, instance = _objects(np.random.default_rng(0))
    probabilities = np.eye(4)[segment] * 0.8 + 0.05
    offsets = centre_offsets(coord, instance)  # a perfect offset head: each object collapses to a point
    found = cluster_instances(coord, offsets, probabilities, stuff=(0, 1), voxel_size=0.02)
    assert sorted((p.label, int(p.mask.sum())) for p in found) == [(2, 300), (2, 300), (3, 300)]
    assert all(p.score == pytest.approx(0.85) for p in found)
    result = scannet_instance_ap([(segment, instance, found)], CLASSES)
    assert result["AP50"] == pytest.approx(1.0)
    # without the shift the sparse blobs do not hold together at 3 cm: they fall apart below the minimum size
    assert cluster_instances(coord, np.zeros_like(coord), probabilities, stuff=(0, 1), voxel_size=0.02) == []


def test_model_outputs_logits_and_offsets_per_point() -> None:
    model = InstanceSegmentationModel(create_backbone("spunet-micro"), 16, 4)
    rng = np.random.default_rng(0)
    coord = rng.random((200, 3)).astype(np.float32)
    feat = rng.random((200, 6)).astype(np.float32)
    batch = PointBatch.collate([(coord, np.floor(coord / 0.05).astype(np.int64), feat)])
    logits, offsets = model(batch)
    assert logits.shape == (200, 4) and offsets.shape == (200, 3)
