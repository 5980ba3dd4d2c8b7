"""The input contract: pre-training and fine-tuning feed a backbone the same channels in the same order."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bench.finetune.engine import train_cloud
from bench.pretrain.data import build_sample
from bench.pretrain.model import PonderModel
from bench.recipes import DOMAIN_AUGMENT, get_recipe
from tasks.contract import FEATURES, in_channels, is_heldout, point_features, split_heldout, voxel_size
from tasks.structures import Scene
from tasks.synth.indoor import make_room, room_cloud, room_views
from tasks.transforms import CropSize, parse_transforms


def _scene(domain: str) -> Scene:
    """A scene whose every point has distinct features, so a feature row identifies its point."""
    rng = np.random.default_rng(0)
    if domain == "indoor":
        room = make_room(rng, 3)
        cloud = room_cloud(room, 300.0, rng)
        n = len(cloud.coord)
        color = rng.uniform(0, 255, (n, 3)).astype(np.float32)
        return Scene("room", cloud.coord, color, cloud.normal, views=room_views(room, 2, 64, 48, rng))
    n = 4000
    coord = (rng.normal(size=(n, 3)) * [15.0, 15.0, 1.0]).astype(np.float32)
    return Scene("sweep", coord, strength=rng.uniform(0, 255, (n, 1)).astype(np.float32))


def _rows(features: np.ndarray) -> set[tuple]:
    return {tuple(row) for row in np.round(features, 4)}


@pytest.mark.parametrize("domain", ["indoor", "outdoor"])
def test_pretraining_and_finetuning_feed_the_same_channels(domain: str) -> None:
    scene = _scene(domain)
    recipe = replace(get_recipe(f"{domain}-mini"), mask_ratio=0.0, max_points=None, backbone="spunet-micro")
    expected = _rows(point_features(scene, domain))
    # pre-training: every input row is a row of the contract's features of the scene (no augmentation)
    sample = build_sample(scene, recipe, voxel_size(domain, 0.02), 0, 0, augment=False)
    feat = sample.points.feat.numpy()
    assert feat.shape[1] == in_channels(domain) == len(FEATURES[domain])
    assert _rows(feat) <= expected
    # fine-tuning: the same function on the (augmented) scene, the same width and order
    transforms = parse_transforms(DOMAIN_AUGMENT[domain])
    (_, _, tuned), augmented, index = train_cloud(scene, domain, voxel_size(domain, 0.02), CropSize(), transforms,
                                                  np.random.default_rng(0))
    np.testing.assert_array_equal(tuned, point_features(augmented, domain)[index])
    if domain == "indoor":  # colour and normal columns: augmentation rotates normals, colours stay
        np.testing.assert_allclose(tuned[:, :3], scene.color[index] / 255.0, rtol=1e-6)
    # the export of pre-training and the fine-tuning backbone agree on in_channels
    model = PonderModel(recipe)
    assert model.backbone.config.in_channels == in_channels(domain)


def test_one_held_out_rule() -> None:
    assert [i for i in range(12) if is_heldout(i)] == [4, 9]
    assert split_heldout(list("abcdefghij"), every=5) == (list("abcdfghi"), ["e", "j"])
    assert split_heldout(list("ab"), every=5) == (["a", "b"], [])  # a short list is never all held out


def test_one_nuscenes_version_rule(tmp_path) -> None:  # noqa: ANN001
    from tasks.datasets import nuscenes_version
    from tasks.errors import DataFormatError

    with pytest.raises(DataFormatError, match="no v1.0-"):
        nuscenes_version(tmp_path)
    (tmp_path / "v1.0-mini").mkdir()
    assert nuscenes_version(tmp_path) == "v1.0-mini"
    (tmp_path / "v1.0-trainval").mkdir()
    assert nuscenes_version(tmp_path) == "v1.0-trainval"  # sorted() would pick v1.0-mini
    assert nuscenes_version(tmp_path, "v1.0-mini") == "v1.0-mini"
    with pytest.raises(DataFormatError, match="v1.0-test: nuScenes table folder not found"):
        nuscenes_version(tmp_path, "v1.0-test")


@pytest.mark.parametrize("domain", ["indoor", "outdoor"])
def test_a_cropped_pretraining_input_gets_rays_that_end_inside_the_crop(domain: str) -> None:
    """With a cap on input points, the rendering targets must lie where the input still has features."""
    import torch

    scene = _scene(domain)
    recipe = replace(get_recipe(f"{domain}-mini"), mask_ratio=0.0, max_points=1500, backbone="spunet-micro")
    sample = build_sample(scene, recipe, voxel_size(domain, 0.02), 0, 0, augment=False)
    coord = sample.points.coord
    ends = sample.rays.origins + sample.rays.directions * sample.rays.depth[:, None]
    nearest = torch.cdist(ends, coord).min(dim=1).values
    spacing = torch.cdist(coord, coord).topk(2, largest=False).values[:, 1].median()
    assert len(sample.rays) > 0 and len(coord) <= 1500
    assert (nearest <= 20 * spacing).all(), f"{int((nearest > 20 * spacing).sum())} rays end far from the input"
