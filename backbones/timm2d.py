"""Any timm image model as a 2D backbone (``"timm:<model_name>"``), multi-view in, feature maps out.

Weights are never downloaded at run time: pass ``weights=<local file>`` (a timm/torch checkpoint of the
full classification model) and timm filters it for the feature extractor.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import timm
import torch
from torch import nn

from backbones.registry import BackboneConfig, _Entry, register_backbone


@dataclass
class FeatureMaps:
    """Per-level features of V views of B samples: ``maps[i]`` is (B, V, C_i, H/stride_i, W/stride_i)."""

    maps: list[torch.Tensor]
    strides: list[int]
    channels: list[int]


class TimmBackbone(nn.Module):
    """Wraps ``timm.create_model(name, features_only=True)``; images are (B, V, 3, H, W)."""

    def __init__(self, model_name: str, in_channels: int = 3, out_indices: tuple[int, ...] | None = None,
                 weights: str | Path | None = None, **kwargs: object) -> None:
        super().__init__()
        extra: dict[str, object] = {"out_indices": out_indices} if out_indices is not None else {}
        if weights is not None:
            if not Path(weights).is_file():
                raise FileNotFoundError(f"{weights}: weights file for timm model {model_name!r} does not exist")
            extra.update(pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
        self.model = timm.create_model(model_name, features_only=True, in_chans=in_channels, **extra, **kwargs)
        self.strides = list(self.model.feature_info.reduction())
        self.channels = list(self.model.feature_info.channels())
        self.in_channels, self.out_channels = in_channels, self.channels[-1]

    def forward(self, images: torch.Tensor) -> FeatureMaps:
        if images.ndim != 5:
            raise ValueError(f"expected images of shape (B, V, C, H, W), got {tuple(images.shape)}")
        b, v = images.shape[:2]
        feats = self.model(images.flatten(0, 1))
        return FeatureMaps([f.unflatten(0, (b, v)) for f in feats], self.strides, self.channels)


@cache
def timm_entry(model_name: str, description: str | None = None) -> _Entry:
    """Registry entry for any timm model (channels from its feature_info, built on the meta device)."""
    if model_name not in timm.list_models(model_name):
        raise KeyError(f"unknown timm model {model_name!r} (see timm.list_models())")
    with torch.device("meta"):
        model = timm.create_model(model_name, features_only=True)
    strides = list(model.feature_info.reduction())
    config = BackboneConfig(f"timm:{model_name}", "2d", 3, model.feature_info.channels()[-1],
                            description or f"timm {model_name} (features_only), strides {strides}")
    return _Entry(config, lambda **kw: TimmBackbone(model_name, **kw))


def _register_timm_example(model_name: str, description: str) -> None:
    entry = timm_entry(model_name, description)
    config = entry.config
    register_backbone(config.name, modality="2d", in_channels=3, out_channels=config.out_channels,
                      description=description)(entry.factory)


# Examples listed by `ponderbench list backbones`; any other timm name works through "timm:<name>".
_register_timm_example("resnet18", "timm ResNet-18 feature pyramid (strides 2-32)")
_register_timm_example("resnet50", "timm ResNet-50 feature pyramid (UniPAD's camera backbone family)")
_register_timm_example("convnext_atto", "timm ConvNeXt-atto, a small (3.4M-parameter) pyramid for CPU runs")
