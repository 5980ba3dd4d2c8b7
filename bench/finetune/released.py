"""A released fine-tuned segmentation model, rebuilt from its checkpoint alone: backbone, head and text embeddings.

Three heads of the original code are read, each where its model keeps it (beside the backbone's prefix):
- PPT-v1m1's language-guided head (``proj_head``, ``class_embedding``, ``logit_scale``; ScanNet, S3DIS);
- a Pointcept ``DefaultSegmentor``'s ``seg_head`` (a linear layer);
- the classifier inside the SpUNet (``final``, a 1^3 sparse conv with a bias: a linear layer per voxel), as
  PonderV2's ScanNet200 PPT model has it;
- for instance segmentation, PointGroup's (PG-v1m1) ``seg_head`` and ``bias_head``, around a SpUNet or a PPT in
  backbone mode, as PonderV2's insseg models have them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from backbones.checkpoint import backbone_state, load_checkpoint
from backbones.registry import create_backbone
from tasks.contract import in_channels
from tasks.errors import DataFormatError
from tasks.heads.instance import InstanceSegmentationModel
from tasks.heads.prompt import VALID_CLASSES, PromptSegmentationModel
from tasks.heads.segmentation import SegmentationModel
from tasks.io import load_torch
from tasks.spec import TaskSpec


@dataclass(frozen=True)
class Released:
    model: torch.nn.Module
    backbone: str
    head: str  # "ppt", "seg_head", "final" or "pointgroup"
    sha256: str
    prefix: str  # the backbone's, in the file


def released_model(path: str | Path, spec: TaskSpec, backbone: str | None = None) -> Released:
    """The model of a fine-tuned checkpoint for ``spec``'s classes. ``backbone``: the registered name to build (by
    default ``spunet-v1m3`` when the file holds PDNorm's norms, else ``spunet-v1m1``)."""
    path = Path(path)
    raw = load_torch(path, "a fine-tuned checkpoint")
    state, _ = backbone_state(raw, path)
    name = backbone or ("spunet-v1m3" if any(".bns." in k for k in state) else "spunet-v1m1")
    net = create_backbone(name, in_channels=in_channels(spec.domain))
    net.checkpoint = report = load_checkpoint(net, path, name, raw=raw)  # the file is read once
    # the models around the backbone, innermost first (DefaultSegmentor > PPT > SpUNet): where their heads are
    enclosing = [report.prefix[:i + 1] for i in range(len(report.prefix) - 2, -1, -1) if report.prefix[i] == "."]
    enclosing.append("")
    classes = len(spec.classes)
    width = net.config.out_channels
    ppt = next((level for level in enclosing if f"{level}proj_head.weight" in state), None)
    if spec.task_type == "insseg":
        model, head = _pointgroup(net, state, enclosing, path, spec), "pointgroup"
    elif ppt is not None:
        valid = VALID_CLASSES.get(spec.condition or "", ())
        if len(valid) != classes:
            raise DataFormatError(path, f"is a PPT model, whose class sets are ScanNet's, S3DIS's and Structured3D's; "
                                  f"{spec.id} has {classes} classes")
        model = PromptSegmentationModel(net, width, state[f"{ppt}class_embedding"])
        head_state = {k: state[f"{ppt}{k}"] for k in ("proj_head.weight", "proj_head.bias", "class_embedding")}
        model.load_state_dict({**head_state, "logit_scale": state[f"{ppt}logit_scale"].reshape(())}, strict=False)
        head = "ppt"
    else:
        # a segmentor's head beside the backbone at any level of nesting, from the innermost out; else the classifier
        # inside the SpUNet
        places = [("seg_head", f"{level}seg_head.") for level in enclosing]
        places.append(("final", f"{report.prefix}final."))
        found = next(((kind, state[f"{p}weight"], state[f"{p}bias"]) for kind, p in places
                      if f"{p}weight" in state and f"{p}bias" in state), None)
        if found is None:
            raise DataFormatError(path, "holds no segmentation head (PPT's proj_head, a segmentor's seg_head, or the "
                                  "SpUNet's final layer): there is nothing to score; fine-tune it with --inits")
        head, weight, bias = found
        weight = weight.reshape(weight.shape[0], -1) if head == "seg_head" else weight.reshape(-1, width)
        if weight.shape != (classes, width):
            raise DataFormatError(path, f"{head}: a head of shape {tuple(weight.shape)}, where {spec.id} needs "
                                  f"({classes}, {width})")
        model = SegmentationModel(net, width, classes)
        model.head.load_state_dict({"weight": weight, "bias": bias})
    return Released(model, name, head, report.sha256, report.prefix)


POINTGROUP_NORM_EPS = 1e-3  # PG-v1m1 builds its bias head's BatchNorm with eps=1e-3


def _pointgroup(net: torch.nn.Module, state: dict[str, torch.Tensor], enclosing: list[str], path: Path,
                spec: TaskSpec) -> InstanceSegmentationModel:
    """PointGroup's semantic and offset heads, from the innermost model around the backbone that has both."""
    level = next((lv for lv in enclosing if f"{lv}seg_head.weight" in state and f"{lv}bias_head.0.weight" in state),
                 None)
    if level is None:
        raise DataFormatError(path, "holds no PointGroup heads (seg_head and bias_head beside the backbone): there is "
                              f"nothing to score {spec.id} with; fine-tune it with --inits")
    model = InstanceSegmentationModel(net, net.config.out_channels, len(spec.classes))
    model.bias_head[1].eps = POINTGROUP_NORM_EPS
    for name in ("seg_head", "bias_head"):
        part = {k[len(level) + len(name) + 1:]: v for k, v in state.items() if k.startswith(f"{level}{name}.")}
        try:
            getattr(model, name).load_state_dict(part)
        except RuntimeError as err:  # missing, unexpected or mis-shaped tensors, each named by torch
            raise DataFormatError(path, f"{level}{name} does not fit {spec.id}'s {len(spec.classes)} classes and "
                                  f"{net.config.out_channels} channels: {' '.join(str(err).split())}") from None
    return model
