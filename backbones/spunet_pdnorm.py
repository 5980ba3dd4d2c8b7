"""SpUNet-v1m3: PonderV2's backbone for Point Prompt Training, the SpUNet whose BatchNorm is PDNorm.

PDNorm (prompt-driven normalisation) keeps one BatchNorm per dataset condition (``norm_decouple``) and modulates
its output by a scale and shift predicted from a 256-d context vector (``norm_adaptive``); the context is a row of
a learned table, one row per condition. Mixing datasets with different sensors and label sets then shares the
convolutions while each dataset keeps its own feature statistics.

Module names are the original's (``conv_input.conv``, ``down.<s>.bn.bns.<c>``, ``enc.<s>.block<i>.bn1.modulation``,
...). The condition table, which the original keeps in the model around the backbone (``PPT-v1m1`` and
``PonderIndoor-v2`` both call it ``embedding_table``), is part of this backbone here, so that an export carries
everything a forward needs; :func:`backbones.checkpoint.load_checkpoint` finds it one level above the backbone in
the original's checkpoints (``context_keys``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence

import torch
from timm.layers import trunc_normal_
from torch import nn

from backbones.registry import register_backbone
from backbones.sparse import conv_algo, spconv
from backbones.spunet import MINI_SIZE, block_convs, sparse_input
from backbones.structures import PointBatch

log = logging.getLogger(__name__)

# PonderV2's configs order the conditions one way for the backbone's norms and another for the table of contexts
CONDITIONS = ("ScanNet", "S3DIS", "Structured3D")
CONTEXT_CONDITIONS = ("Structured3D", "ScanNet", "S3DIS")


class PDBatchNorm(nn.Module):
    """BatchNorm chosen by the batch's condition, then ``x * (1 + scale) + shift`` from the context."""

    def __init__(self, channels: int, conditions: int, context_channels: int, decouple: bool, adaptive: bool,
                 affine: bool) -> None:
        super().__init__()
        def norm() -> nn.BatchNorm1d:
            return nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01, affine=affine)

        if decouple:
            self.bns = nn.ModuleList(norm() for _ in range(conditions))
        else:
            self.bn = norm()
        self.modulation = (nn.Sequential(nn.SiLU(), nn.Linear(context_channels, 2 * channels))
                           if adaptive else None)

    def forward(self, feat: torch.Tensor, condition: int, context: torch.Tensor | None) -> torch.Tensor:
        feat = (self.bns[condition] if hasattr(self, "bns") else self.bn)(feat)
        if self.modulation is None:
            return feat
        shift, scale = self.modulation(context).chunk(2, dim=1)
        return feat * (1.0 + scale) + shift


class _Condition:
    """What every PDNorm of one forward reads: the condition's norm index and its context row."""

    def __init__(self, index: int, context: torch.Tensor | None) -> None:
        self.index, self.context = index, context

    def __call__(self, norm: PDBatchNorm, x: spconv.SparseConvTensor, relu: bool = True) -> spconv.SparseConvTensor:
        feat = norm(x.features, self.index, self.context)
        return x.replace_feature(torch.relu(feat) if relu else feat)


class ConvNorm(nn.Module):
    """A sparse conv, PDNorm and ReLU: the original's stem (``SPConvPatchEmbedding``), ``SPConvDown`` and
    ``SPConvUp`` have this one shape."""

    def __init__(self, conv: spconv.SparseModule, norm: PDBatchNorm) -> None:
        super().__init__()
        self.conv, self.bn = conv, norm

    def forward(self, x: spconv.SparseConvTensor, condition: _Condition) -> spconv.SparseConvTensor:
        return condition(self.bn, self.conv(x))


class PDBasicBlock(nn.Module):
    """Two submanifold 3^3 convs with PDNorm; a 1^3 projection (``proj_conv`` + ``proj_norm``, no ReLU) on the
    residual when widths differ."""

    def __init__(self, in_channels: int, channels: int, indice_key: str, norm, algo) -> None:  # noqa: ANN001
        super().__init__()
        if in_channels != channels:
            self.proj_conv = spconv.SubMConv3d(in_channels, channels, 1, bias=False, algo=algo)
            self.proj_norm = norm(channels)
        self.conv1, self.conv2 = block_convs(in_channels, channels, indice_key, algo)
        self.bn1, self.bn2 = norm(channels), norm(channels)

    def forward(self, x: spconv.SparseConvTensor, condition: _Condition) -> spconv.SparseConvTensor:
        residual = (condition(self.proj_norm, self.proj_conv(x), relu=False).features if hasattr(self, "proj_conv")
                    else x.features)
        out = condition(self.bn1, self.conv1(x))
        out = condition(self.bn2, self.conv2(out), relu=False)
        return out.replace_feature(torch.relu(out.features + residual))


class SpUNetPDNorm(nn.Module):
    """SpUNet-v1m3 over a :class:`PointBatch`; returns (N, channels[-1]) features, one row per input point.

    The batch's ``condition`` picks the norms (in the order of ``conditions``) and the context row (in the order of
    ``context_conditions``). A batch without one reads ``default_condition``, which the engines set to the
    condition of the run's dataset (:func:`backbones.structures.use_condition`); when that is None too (a dataset
    outside the conditions, or a bare batch) the first condition is used, and the log says so once.
    """

    head_keys = ("final.",)
    context_keys = ("embedding_table.",)  # the original keeps these in the model around the backbone

    def __init__(self, in_channels: int = 6, base_channels: int = 32,
                 channels: Sequence[int] = (32, 64, 128, 256, 256, 128, 96, 96),
                 layers: Sequence[int] = (2, 3, 4, 6, 2, 2, 2, 2), conditions: Sequence[str] = CONDITIONS,
                 context_conditions: Sequence[str] = CONTEXT_CONDITIONS, context_channels: int = 256,
                 zero_init: bool = False, norm_decouple: bool = True, norm_adaptive: bool = True,
                 norm_affine: bool = True, algo: str = "auto") -> None:
        super().__init__()
        if len(channels) != len(layers) or len(layers) % 2:
            raise ValueError("channels and layers must have the same even length (encoder + decoder stages)")
        self.in_channels, self.out_channels = in_channels, channels[-1]
        if sorted(conditions) != sorted(context_conditions):
            raise ValueError(f"conditions {tuple(conditions)} and context_conditions {tuple(context_conditions)} "
                             "must name the same datasets")
        self.conditions, self.context_conditions = tuple(conditions), tuple(context_conditions)
        a = conv_algo(algo)

        def norm(width: int) -> PDBatchNorm:
            return PDBatchNorm(width, len(self.conditions), context_channels, norm_decouple, norm_adaptive,
                               norm_affine)

        n = len(layers) // 2
        self.conv_input = ConvNorm(spconv.SubMConv3d(in_channels, base_channels, 5, padding=1, bias=False,
                                                     indice_key="stem", algo=a), norm(base_channels))
        self.down, self.enc, self.up, self.dec = nn.ModuleList(), nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        skip_channels = [base_channels, *channels[: n - 1]]
        for s in range(n):
            self.down.append(ConvNorm(spconv.SparseConv3d(skip_channels[s], channels[s], 2, stride=2, bias=False,
                                                          indice_key=f"spconv{s + 1}", algo=a), norm(channels[s])))
            self.enc.append(nn.Sequential(OrderedDict(
                (f"block{i}", PDBasicBlock(channels[s], channels[s], f"subm{s + 1}", norm, a))
                for i in range(layers[s]))))
        for s in range(n):
            below, width = channels[len(channels) - s - 2], channels[len(channels) - s - 1]
            self.up.append(ConvNorm(spconv.SparseInverseConv3d(below, width, 2, bias=False,
                                                               indice_key=f"spconv{s + 1}", algo=a), norm(width)))
            self.dec.append(nn.Sequential(OrderedDict(
                (f"block{i}", PDBasicBlock(width + skip_channels[s] if i == 0 else width, width, f"subm{s}", norm, a))
                for i in range(layers[len(channels) - s - 1]))))
        self.embedding_table = nn.Embedding(len(self.conditions), context_channels) if norm_adaptive else None
        self.apply(self._init_weights)
        if zero_init and norm_adaptive:  # the modulation starts as the identity
            for module in self.modules():
                if isinstance(module, PDBatchNorm):
                    nn.init.zeros_(module.modulation[-1].weight)
                    nn.init.zeros_(module.modulation[-1].bias)
        self.default_condition: str | None = None
        self._warned = False

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """The original's: truncated normal (std 0.02) for linear layers and submanifold convs."""
        if isinstance(module, nn.Linear | spconv.SubMConv3d):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def resolve(self, name: str | None) -> _Condition:
        """The norms and context of the dataset condition ``name`` (else the default; else the first, logged)."""
        name = name or self.default_condition
        if name is None:
            if not self._warned:
                log.warning("a batch without a dataset condition: spunet-v1m3 uses the norms of %s",
                            self.conditions[0])
                self._warned = True
            name = self.conditions[0]
        if name not in self.conditions:
            raise ValueError(f"condition {name!r} is not one of this backbone's {self.conditions}")
        row = self.context_conditions.index(name)
        context = None if self.embedding_table is None else self.embedding_table.weight[row:row + 1]
        return _Condition(self.conditions.index(name), context)

    def forward(self, batch: PointBatch) -> torch.Tensor:
        condition = self.resolve(batch.condition)
        x, inverse = sparse_input(batch)
        x = self.conv_input(x, condition)
        skips = [x]
        for down, enc in zip(self.down, self.enc, strict=True):
            x = down(x, condition)
            for block in enc:
                x = block(x, condition)
            skips.append(x)
        x = skips.pop()
        for s in reversed(range(len(self.up))):
            x = self.up[s](x, condition)
            x = x.replace_feature(torch.cat([x.features, skips.pop().features], dim=1))
            for block in self.dec[s]:
                x = block(x, condition)
        return x.features[inverse]


@register_backbone("spunet-v1m3", modality="3d", in_channels=6, out_channels=96, voxel_size=0.02,
                   description="PonderV2's SpUNet-v1m3: SpUNet-v1m1 with PDNorm (a BatchNorm per dataset condition, "
                   "modulated by a learned 256-d context), as in its PPT configs")
def spunet_v1m3(**overrides: object) -> SpUNetPDNorm:
    return SpUNetPDNorm(**overrides)  # type: ignore[arg-type]


@register_backbone("spunet-v1m3-mini", modality="3d", in_channels=6, out_channels=32, voxel_size=0.1,
                   description="spunet-v1m3 at spunet-mini's size (1/4 widths, one block per stage, 10 cm voxels)")
def spunet_v1m3_mini(**overrides: object) -> SpUNetPDNorm:
    return SpUNetPDNorm(**{**MINI_SIZE, **overrides})  # type: ignore[arg-type]
