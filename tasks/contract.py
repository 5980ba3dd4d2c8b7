"""The input contract shared by pre-training and fine-tuning: one module, so the two cannot drift apart.

A pre-trained backbone is only useful if fine-tuning feeds it what pre-training fed it: the same feature
channels in the same order, the same voxel size, the same volume extents. Evaluation uses the same
test-time fragments everywhere, and every dataset that has no official split holds out the same frames.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from backbones.structures import GridSpec
from tasks.structures import Scene

Domain = Literal["indoor", "outdoor"]
DOMAINS: tuple[Domain, ...] = ("indoor", "outdoor")

# feature channels per domain, in the order the backbone receives them
FEATURES: dict[Domain, tuple[str, ...]] = {
    "indoor": ("red", "green", "blue", "normal_x", "normal_y", "normal_z"),  # colour in [0, 1], unit normal
    "outdoor": ("x", "y", "z", "intensity"),  # sensor frame, metres; intensity as stored
}

OUTDOOR_VOXEL = 0.1  # metres, pre-training and the mini fine-tunes; indoor uses the backbone's own voxel
DEFAULT_INDOOR_VOXEL = 0.02  # for a backbone that declares none (SpUNet's, Pointcept's ScanNet voxel)

# the volume the renderer reads: indoor scenes are normalised to the unit cube first
INDOOR_EXTENT = ((-0.5, -0.5, -0.5), (0.5, 0.5, 0.5))
OUTDOOR_EXTENT = ((-54.0, -54.0, -5.0), (54.0, 54.0, 3.0))
UNIT_BOX = ((-0.55, -0.55, -0.55), (0.55, 0.55, 0.55))  # where indoor rays live: the unit cube with a margin

MAX_TEST_FRAGMENTS = 8  # test-mode grid-sampling fragments voted per voxel (see tasks.transforms.grid_sample_test)
HOLDOUT_EVERY = 5  # datasets without an official split: frame i is held out when i % 5 == 4


def in_channels(domain: Domain) -> int:
    return len(FEATURES[domain])


def point_features(scene: Scene, domain: Domain) -> np.ndarray:
    """(N, in_channels(domain)) float32 features of every point of ``scene``, in ``FEATURES[domain]`` order.

    Missing attributes (no colour, no normals, no intensity) are zeros, as in Pointcept.
    """
    n = len(scene)
    if domain == "outdoor":
        strength = scene.strength if scene.strength is not None else np.zeros((n, 1), np.float32)
        return np.concatenate([scene.coord, strength], 1).astype(np.float32)
    color = scene.color / 255.0 if scene.color is not None else np.zeros((n, 3), np.float32)
    normal = scene.normal if scene.normal is not None else np.zeros((n, 3), np.float32)
    return np.concatenate([color, normal], 1).astype(np.float32)


def voxel_size(domain: Domain, backbone_voxel: float | None) -> float:
    """Metres per voxel: the backbone's own indoors, ``OUTDOOR_VOXEL`` outdoors."""
    return OUTDOOR_VOXEL if domain == "outdoor" else (backbone_voxel or DEFAULT_INDOOR_VOXEL)


def grid_spec(domain: Domain, shape: tuple[int, int, int]) -> GridSpec:
    """The renderer's volume for ``domain`` with ``shape`` (X, Y, Z) cells."""
    lo, hi = OUTDOOR_EXTENT if domain == "outdoor" else INDOOR_EXTENT
    return GridSpec(lo, hi, tuple(shape))


INDOOR_GRID = grid_spec("indoor", (128, 128, 32))  # PonderV2's indoor reference volume
OUTDOOR_GRID = grid_spec("outdoor", (180, 180, 5))  # 0.6 x 0.6 x 1.6 m cells


def is_heldout(index: int, every: int = HOLDOUT_EVERY) -> bool:
    """The one held-out rule: the last of every ``every`` frames (never the first frame of a short list)."""
    return every > 0 and index % every == every - 1


def split_heldout(items: list, every: int = HOLDOUT_EVERY) -> tuple[list, list]:
    """(training, held-out) items of an ordered list under :func:`is_heldout`."""
    return ([x for i, x in enumerate(items) if not is_heldout(i, every)],
            [x for i, x in enumerate(items) if is_heldout(i, every)])
