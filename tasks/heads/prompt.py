"""Point Prompt Training's language-guided head (PPT-v1m1): points scored against class text embeddings.

Features are projected to the text width, normalised, and compared by cosine similarity with the unit text
embeddings of the batch's dataset's classes, times ``exp(logit_scale)``. All datasets share one table of 36 class
names, so a class two datasets share ("chair") is one target. ``VALID_CLASSES`` are the original's per-dataset
rows of that table, as PonderV2's configs give them: their order is the order of the logits, which the labels
index. For ScanNet and Structured3D that is each dataset's label order; for S3DIS it is not (the rows are sorted,
S3DIS's labels start ceiling, floor, wall), so S3DIS label 0, ceiling, is scored against the text of "wall". The
suite keeps the original's rows, so PonderV2's S3DIS checkpoints score as they were trained.

``logit_scale`` is CLIP's, which PPT takes from the CLIP model after freezing it: a parameter that is not trained
(ln 100 for CLIP ViT-B/16).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from backbones.structures import PointBatch
from renderer.semantic import class_embeddings
from tasks.heads.segmentation import OnBackbone

# PonderV2's PPT class table (``class_name`` of its configs, spellings as there)
PPT_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "bookcase",
    "picture", "counter", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "ceiling", "refrigerator",
    "television", "shower curtain", "nightstand", "toilet", "sink", "lamp", "bathtub", "garbagebin", "board", "beam",
    "column", "clutter", "other structure", "other furniture", "other property",
)  # the fine-tuning configs spell "other structure " with a trailing space; a file of embeddings is keyed without
VALID_CLASSES = {  # rows of PPT_CLASSES per dataset condition, the logits' order (PonderV2's ``valid_index``)
    "Structured3D": (0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 23, 25, 26, 33, 34, 35),
    "ScanNet": (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 15, 20, 22, 24, 25, 27, 34),
    "S3DIS": (0, 1, 4, 5, 6, 7, 8, 10, 19, 29, 30, 31, 32),
}
CLIP_LOGIT_SCALE = math.log(100.0)
TEXT_CHANNELS = 512  # CLIP ViT-B/16's text width


class PromptSegmentationModel(OnBackbone):
    """A backbone and PPT's head: (N, C) features -> (N, K) logits over the classes of the batch's condition.

    Parameter names are PPT-v1m1's (``proj_head``, ``class_embedding``, ``logit_scale``), so its checkpoints' head
    loads as it is. ``freeze_backbone`` gives a linear probe of the projection.
    """

    def __init__(self, backbone: nn.Module, feature_channels: int, embeddings: torch.Tensor,
                 freeze_backbone: bool = False) -> None:
        if embeddings.shape[0] != len(PPT_CLASSES):
            raise ValueError(f"PPT needs one text embedding per class of its table ({len(PPT_CLASSES)}), "
                             f"got {embeddings.shape[0]}")
        super().__init__(backbone, freeze_backbone)
        self.proj_head = nn.Linear(feature_channels, embeddings.shape[1])
        self.register_buffer("class_embedding", F.normalize(embeddings.float(), dim=-1))
        self.logit_scale = nn.Parameter(torch.tensor(CLIP_LOGIT_SCALE), requires_grad=False)
        self.default_condition: str | None = None

    def forward(self, batch: PointBatch) -> torch.Tensor:
        condition = batch.condition or self.default_condition
        if condition not in VALID_CLASSES:
            raise ValueError(f"PPT scores the classes of a dataset condition ({', '.join(VALID_CLASSES)}); this "
                             f"batch's is {condition!r}")
        feats = F.normalize(self.proj_head(self.features(batch)), dim=-1)
        texts = self.class_embedding[list(VALID_CLASSES[condition])]
        return self.logit_scale.exp() * (feats @ texts.t())  # the original's order of operations


def ppt_embeddings(path: str | Path | None = None) -> torch.Tensor:
    """(36, D) text embeddings of :data:`PPT_CLASSES`: from a user's file (``.json`` / ``.npz``, one vector per
    class name; the README shows how to make one with CLIP), else the suite's deterministic unit vectors."""
    return class_embeddings(list(PPT_CLASSES), path, dim=TEXT_CHANNELS)
