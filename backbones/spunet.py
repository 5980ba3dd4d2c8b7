"""SpUNet-v1m1 (Pointcept / PonderV2's 3D backbone) on spconv, plus smaller variants for CPU work.

A sparse residual U-Net: a 5^3 submanifold stem, four encoder stages (strided 2^3 sparse conv down +
residual blocks of submanifold 3^3 convs with BatchNorm), four decoder stages (inverse conv up, skip
concatenation, residual blocks), returning per-point features.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from functools import partial
from itertools import pairwise

import torch
from torch import nn

from backbones.registry import register_backbone
from backbones.sparse import conv_algo, spconv
from backbones.structures import PointBatch

BatchNorm = partial(nn.BatchNorm1d, eps=1e-3, momentum=0.01)


def unique_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(rows, dim=0, return_inverse=True)`` for non-huge integer rows, through one int64 key per row.

    Each row is read as the digits of a mixed-radix number (column ranges as radices), so the keys sort as the
    rows do and the result is identical; ``unique`` over a 1-D key is many times faster on the CPU than over
    rows (it was an eighth of a small SpUNet's training step).
    """
    low = rows.min(0).values
    digits = rows - low
    radix = digits.max(0).values + 1
    key = digits[:, 0]
    for c in range(1, rows.shape[1]):
        key = key * radix[c] + digits[:, c]
    unique, inverse = torch.unique(key, return_inverse=True)
    columns = []
    for c in reversed(range(1, rows.shape[1])):
        columns.append(unique % radix[c])
        unique = unique // radix[c]
    columns.append(unique)
    return torch.stack(columns[::-1], dim=1) + low, inverse


def voxelize(batch: PointBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch's occupied voxels as (V, 4) int32 rows (cloud, x, y, z), sorted; their features, the mean of the
    points in each; and each point's voxel row. Sparse backbones run on voxels, so that their output does not depend
    on the order (or duplication) of the input points."""
    keys = torch.cat([batch.batch_index[:, None], batch.grid_coord], dim=1).long()
    voxels, inverse = unique_rows(keys)
    counts = torch.bincount(inverse, minlength=len(voxels)).to(batch.feat.dtype)
    feat = batch.feat.new_zeros(len(voxels), batch.feat.shape[1]).index_add(0, inverse, batch.feat)
    return voxels.to(torch.int32), feat / counts[:, None], inverse


def sparse_tensor(voxels: torch.Tensor, feat: torch.Tensor, batch_size: int) -> spconv.SparseConvTensor:
    """Voxel rows (cloud, x, y, z) and their features as spconv's tensor; the spatial shape leaves the original's
    margin of 96 voxels past the largest coordinate."""
    shape = (voxels[:, 1:].max(0).values + 96).tolist()
    return spconv.SparseConvTensor(feat, voxels.to(torch.int32).contiguous(), shape, batch_size)


def sparse_input(batch: PointBatch) -> tuple[spconv.SparseConvTensor, torch.Tensor]:
    """The batch as one sparse tensor of voxels (:func:`voxelize`), and each point's voxel row."""
    voxels, feat, inverse = voxelize(batch)
    return sparse_tensor(voxels, feat, batch.batch_size), inverse


def parent_rows(fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
    """For each voxel of ``fine`` (rows cloud, x, y, z), the row of ``coarse`` holding its cell after a stride-2
    convolution (coordinates halved, rounded down)."""
    halved = torch.cat([fine[:, :1], fine[:, 1:] // 2], dim=1)
    cells, cell = unique_rows(torch.cat([coarse, halved]).long())  # coarse rows are unique: one cell each
    if len(cells) != len(coarse):
        raise ValueError("a voxel's cell is missing from the coarser level")
    row_of_cell = torch.empty_like(cell[: len(coarse)]).scatter_(
        0, cell[: len(coarse)], torch.arange(len(coarse), device=cell.device))
    return row_of_cell[cell[len(coarse):]]


def block_convs(in_channels: int, channels: int, indice_key: str, algo  # noqa: ANN001
                ) -> tuple[spconv.SubMConv3d, spconv.SubMConv3d]:
    """The two submanifold 3^3 convs of a residual block (sharing one indice key: the same sites)."""
    return (spconv.SubMConv3d(in_channels, channels, 3, padding=1, bias=False, indice_key=indice_key, algo=algo),
            spconv.SubMConv3d(channels, channels, 3, padding=1, bias=False, indice_key=indice_key, algo=algo))


class BasicBlock(spconv.SparseModule):
    """Two submanifold 3^3 convs with BN, and a 1^3 projection on the residual when widths differ."""

    def __init__(self, in_channels: int, channels: int, indice_key: str, algo) -> None:  # noqa: ANN001
        super().__init__()
        self.proj = (nn.Identity() if in_channels == channels else spconv.SparseSequential(
            spconv.SubMConv3d(in_channels, channels, 1, bias=False, algo=algo), BatchNorm(channels)))
        conv1, conv2 = block_convs(in_channels, channels, indice_key, algo)
        # registered conv1, bn1, conv2, bn2 (the order before 8de86b1): the parameters' order is the summation order
        # of the gradient-norm clip, and a 60-step pre-training ends elsewhere when it changes
        self.conv1, self.bn1 = conv1, BatchNorm(channels)
        self.conv2, self.bn2 = conv2, BatchNorm(channels)

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        residual = x.features if isinstance(self.proj, nn.Identity) else self.proj(x).features
        out = self.conv1(x)
        out = out.replace_feature(torch.relu(self.bn1(out.features)))
        out = self.conv2(out)
        return out.replace_feature(torch.relu(self.bn2(out.features) + residual))


def _stage(in_channels: int, channels: int, blocks: int, key: str, algo) -> spconv.SparseSequential:  # noqa: ANN001
    return spconv.SparseSequential(OrderedDict(
        (f"block{i}", BasicBlock(in_channels if i == 0 else channels, channels, key, algo)) for i in range(blocks)))


# the suite's module names before they followed the original's (exports and checkpoints written then still load)
_LEGACY_KEYS = ((re.compile(r"^stem\."), "conv_input."), (re.compile(r"^(enc|dec)\.(\d+)\.(\d+)\."), r"\1.\2.block\3."))


class SpUNet(nn.Module):
    """Sparse U-Net over a :class:`PointBatch`; returns (N, channels[-1]) features, one row per input point.

    Points sharing a voxel are averaged into it and each receives its voxel's output, so the output does
    not depend on the order (or duplication) of the input points. Module names are the original's
    (``conv_input``, ``down``, ``enc.<s>.block<i>``, ``up``, ``dec``), so Pointcept and PonderV2 state dicts load
    as they are (:func:`backbones.checkpoint.load_checkpoint` strips their ``module.backbone.`` prefix).
    """

    def __init__(self, in_channels: int = 6, base_channels: int = 32,
                 channels: Sequence[int] = (32, 64, 128, 256, 256, 128, 96, 96),
                 layers: Sequence[int] = (2, 3, 4, 6, 2, 2, 2, 2), algo: str = "auto") -> None:
        super().__init__()
        if len(channels) != len(layers) or len(layers) % 2:
            raise ValueError("channels and layers must have the same even length (encoder + decoder stages)")
        self.in_channels, self.out_channels = in_channels, channels[-1]
        self.level_channels = tuple(reversed(channels[len(channels) // 2 - 1:]))  # of :meth:`levels`
        a = conv_algo(algo)
        n = len(layers) // 2
        self.conv_input = spconv.SparseSequential(
            spconv.SubMConv3d(in_channels, base_channels, 5, padding=1, bias=False, indice_key="stem", algo=a),
            BatchNorm(base_channels), nn.ReLU())
        self.down, self.enc, self.up, self.dec = nn.ModuleList(), nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        enc_in = base_channels
        skip_channels = [base_channels, *channels[: n - 1]]
        for s in range(n):
            self.down.append(spconv.SparseSequential(
                spconv.SparseConv3d(enc_in, channels[s], 2, stride=2, bias=False, indice_key=f"spconv{s + 1}", algo=a),
                BatchNorm(channels[s]), nn.ReLU()))
            self.enc.append(_stage(channels[s], channels[s], layers[s], f"subm{s + 1}", a))
            enc_in = channels[s]
        # decoder stage s upsamples to the resolution of encoder stage s-1 (s = 0: the stem)
        for s in range(n):
            below = channels[len(channels) - s - 2]  # for s = n-1 this is the deepest encoder's width
            width = channels[len(channels) - s - 1]
            self.up.append(spconv.SparseSequential(
                spconv.SparseInverseConv3d(below, width, 2, bias=False, indice_key=f"spconv{s + 1}", algo=a),
                BatchNorm(width), nn.ReLU()))
            self.dec.append(_stage(width + skip_channels[s], width, layers[len(channels) - s - 1], f"subm{s}", a))

    head_keys = ("final.",)  # the original's classifier, inside its backbone in a segmentor: the suite's is apart

    def _run(self, batch: PointBatch) -> tuple[list[spconv.SparseConvTensor], torch.Tensor]:
        """The decoder's output at each resolution and the deepest encoder stage's, finest first; each point's
        voxel."""
        x, inverse = sparse_input(batch)
        x = self.conv_input(x)
        skips = [x]
        for down, enc in zip(self.down, self.enc, strict=True):
            x = enc(down(x))
            skips.append(x)
        x = skips.pop()
        outputs = [x]
        for s in reversed(range(len(self.up))):
            x = self.up[s](x)
            x = x.replace_feature(torch.cat([x.features, skips.pop().features], dim=1))
            x = self.dec[s](x)
            outputs.insert(0, x)
        return outputs, inverse

    def forward(self, batch: PointBatch) -> torch.Tensor:
        outputs, inverse = self._run(batch)
        return outputs[0].features[inverse]

    def levels(self, batch: PointBatch) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
        """Per-level features, finest first (:meth:`_run`); each voxel's cell in the next level; each point's voxel
        (the interface of :func:`backbones.levels.all_levels`)."""
        outputs, inverse = self._run(batch)
        return ([x.features for x in outputs], inverse,
                [parent_rows(fine.indices, coarse.indices) for fine, coarse in pairwise(outputs)])

    @staticmethod
    def legacy_names(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
        """``state`` with the suite's former names of this net's modules (under ``prefix``) renamed."""
        renamed = {}
        for key, value in state.items():
            if key.startswith(prefix):
                name = key[len(prefix):]
                for old, new in _LEGACY_KEYS:
                    name = old.sub(new, name)
                key = prefix + name
            renamed[key] = value
        return renamed

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object) -> None:
        renamed = self.legacy_names(state_dict, prefix)  # load_state_dict's own copy for this module
        state_dict.clear()
        state_dict.update(renamed)
        super()._load_from_state_dict(state_dict, prefix, *args)  # type: ignore[arg-type]


@register_backbone("spunet-v1m1", modality="3d", in_channels=6, out_channels=96, voxel_size=0.02,
                   description="PonderV2's SpUNet-v1m1 (Pointcept): 4-stage sparse residual U-Net, 96-d output")
def spunet_v1m1(**overrides: object) -> SpUNet:
    return SpUNet(**overrides)  # type: ignore[arg-type]


# spunet-mini's size: a quarter of the widths, one block per stage
MINI_SIZE = {"base_channels": 16, "channels": (16, 32, 64, 64, 64, 32, 32, 32), "layers": (1,) * 8}


@register_backbone("spunet-mini", modality="3d", in_channels=6, out_channels=32, voxel_size=0.1,
                   description="SpUNet with 1/4 of the widths, one block per stage and 10 cm voxels, for CPU runs")
def spunet_mini(**overrides: object) -> SpUNet:
    return SpUNet(**{**MINI_SIZE, **overrides})  # type: ignore[arg-type]


@register_backbone("spunet-micro", modality="3d", in_channels=6, out_channels=16, voxel_size=0.02,
                   description="a two-stage SpUNet for unit tests and smoke runs")
def spunet_micro(**overrides: object) -> SpUNet:
    defaults = {"base_channels": 8, "channels": (16, 32, 16, 16), "layers": (1, 1, 1, 1)}
    return SpUNet(**{**defaults, **overrides})  # type: ignore[arg-type]
