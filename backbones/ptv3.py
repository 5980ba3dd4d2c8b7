"""Point Transformer V3 (Pointcept's ``PT-v3m1``) and the Sonata encoder (``PT-v3m2``), on the CPU as on CUDA.

PTv3 sorts the voxels of each cloud along space-filling curves (:mod:`backbones.serialization`) and attends within
patches of consecutive voxels, one curve per block. Here the attention is PyTorch's
``scaled_dot_product_attention``: flash or memory-efficient kernels on CUDA, the math kernel on the CPU, no
flash-attn package. Segment reductions are ``scatter_reduce`` (no torch_scatter), and the positional encoding's
sparse conv adds its bias after the convolution (spconv's CPU kernels refuse a bias in eval mode), so the whole net
runs on the CPU.

Module names are the original's (``embedding.stem.conv``, ``enc.enc1.down.proj``, ``enc.enc0.block0.cpe.0``,
``dec.dec0.up.proj_skip.0``, ...), so Pointcept checkpoints and Sonata's ``{"config", "state_dict"}`` files load
through :func:`backbones.checkpoint.load_checkpoint` without a mapping table.

Where this departs from the original, and why:
- the input points are averaged into voxels first, and every point gets its voxel's feature (as SpUNet here), so
  the output does not depend on the order or duplication of the points; the original expects one point per voxel;
- the shuffle of the curve orders is drawn in training only: the original also shuffles at evaluation, so that its
  forward is not deterministic;
- patches follow flash-attn's rule whatever the device (a cloud shorter than the patch size is one patch of its
  own length); the original without flash-attn shrinks every patch to the smallest cloud of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import torch
from timm.layers import DropPath
from torch import nn
from torch.nn import functional as F

from backbones.levels import upcast
from backbones.registry import register_backbone
from backbones.serialization import ORDERS, Order, depth_for, encode
from backbones.sparse import conv_algo, spconv
from backbones.spunet import sparse_tensor, unique_rows, voxelize
from backbones.structures import PointBatch

BatchNorm = partial(nn.BatchNorm1d, eps=1e-3, momentum=0.01)
Variant = Literal["v3m1", "v3m2"]  # PTv3 (conv stem, serialized pooling, BatchNorm) or Sonata (linear, grid, LN)


class BiasedSubMConv3d(spconv.SubMConv3d):
    """A submanifold conv with its bias (named ``bias``, as the original's) added after the convolution."""

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        out = self._conv_forward(self.training, x, self.weight, None, name=self.name,
                                 sparse_unique_name=self._sparse_unique_name)
        return out.replace_feature(out.features + self.bias)


@dataclass
class Level:
    """The voxels of one resolution: features, coordinates, and their orders along the curves.

    ``order[k]`` lists the voxels along curve k (clouds one after another); ``inverse[k]`` is each voxel's position
    in it. ``sparse`` carries the rulebooks of the level's positional-encoding convs, shared by its blocks."""

    feat: torch.Tensor  # (N, C)
    grid: torch.Tensor  # (N, 3) int64 voxel coordinates at this resolution
    batch: torch.Tensor  # (N,) cloud index
    depth: int  # bits per axis of the serialization codes
    code: torch.Tensor  # (K, N)
    order: torch.Tensor  # (K, N)
    inverse: torch.Tensor  # (K, N)
    sparse: spconv.SparseConvTensor
    _patches: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)

    def patches(self, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Groups of equal-length patches as (positions (P, L) along a curve, kept (P, L)).

        A cloud of n > size voxels is cut into runs of ``size``; a remainder r forms a last patch of the cloud's last
        ``size`` voxels, of which only the last r keep its output (flash-attn's padding in the original). A cloud
        of n <= size voxels is one patch of length n."""
        if size not in self._patches:
            counts = torch.bincount(self.batch, minlength=int(self.batch.max()) + 1).tolist()
            groups: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
            start = 0
            for n in counts:
                length = min(n, size)
                runs, rest = divmod(n, length) if n else (0, 0)
                positions = start + torch.arange(runs * length).view(runs, length)
                kept = torch.ones(runs, length, dtype=torch.bool)
                if rest:
                    positions = torch.cat([positions, start + n - length + torch.arange(length)[None]])
                    kept = torch.cat([kept, torch.arange(length)[None] >= length - rest])
                groups.setdefault(length, []).append((positions, kept))
                start += n
            self._patches[size] = [(torch.cat([p for p, _ in g]).to(self.feat.device),
                                    torch.cat([k for _, k in g]).to(self.feat.device))
                                   for length, g in groups.items() if length]
        return self._patches[size]


def serialize(grid: torch.Tensor, batch: torch.Tensor, orders: Sequence[Order], depth: int, shuffle: bool
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes, orders and inverse orders (each (K, N)) of the voxels along each curve, the curves in a random order
    (drawn from torch's global generator, as the original) when ``shuffle``."""
    code = torch.stack([encode(grid, batch, depth, o) for o in orders])
    return _orders(code, shuffle)


def _orders(code: torch.Tensor, shuffle: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    order = torch.argsort(code)
    inverse = torch.empty_like(order).scatter_(1, order, torch.arange(code.shape[1], device=code.device)
                                               .expand_as(order))
    if shuffle:
        perm = torch.randperm(len(code))
        code, order, inverse = code[perm], order[perm], inverse[perm]
    return code, order, inverse


def segment_max(feat: torch.Tensor, cluster: torch.Tensor, clusters: int) -> torch.Tensor:
    """Per-cluster maximum of ``feat`` rows, per channel (torch_scatter's ``segment_csr(..., reduce="max")``): the
    gradient goes to one member per cluster and channel, the first of tied maxima, as torch_scatter's does (a plain
    ``scatter_reduce("amax")`` would split it among ties, which half precision makes common)."""
    index = cluster[:, None].expand_as(feat)
    with torch.no_grad():
        peak = feat.new_zeros(clusters, feat.shape[1]).scatter_reduce(0, index, feat, "amax", include_self=False)
        rows = torch.arange(len(feat), device=feat.device)[:, None].expand_as(feat)
        first = torch.full_like(peak, len(feat), dtype=torch.long).scatter_reduce(
            0, index, torch.where(feat == peak[cluster], rows, len(feat)), "amin", include_self=True)
    return feat.gather(0, first)


class SerializedAttention(nn.Module):
    """Multi-head self-attention within patches of consecutive voxels along one curve (``order_index``)."""

    def __init__(self, channels: int, num_heads: int, patch_size: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, order_index: int = 0) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"{channels} channels do not split into {num_heads} heads")
        self.channels, self.num_heads, self.patch_size = channels, num_heads, patch_size
        self.order_index, self.attn_drop = order_index, attn_drop
        self.qkv = nn.Linear(channels, channels * 3, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, feat: torch.Tensor, level: Level) -> torch.Tensor:
        heads, width = self.num_heads, self.channels // self.num_heads
        qkv = self.qkv(feat)[level.order[self.order_index]]  # along the curve
        out = qkv.new_empty(len(qkv), self.channels)
        for positions, kept in level.patches(self.patch_size):
            patches, length = positions.shape
            q, k, v = qkv[positions].view(patches, length, 3, heads, width).permute(2, 0, 3, 1, 4)
            attended = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
            attended = attended.transpose(1, 2).reshape(patches * length, self.channels)
            kept = kept.flatten()
            out[positions.flatten()[kept]] = attended[kept]
        return self.proj_drop(self.proj(out[level.inverse[self.order_index]]))


class MLP(nn.Module):
    def __init__(self, channels: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class LayerScale(nn.Module):
    def __init__(self, channels: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels,), init_values))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Conditional positional encoding (a 3^3 submanifold conv, linear, LayerNorm) added to the features, then
    pre-norm attention and MLP residuals with drop path."""

    def __init__(self, channels: int, num_heads: int, patch_size: int, mlp_ratio: float, qkv_bias: bool,
                 attn_drop: float, proj_drop: float, drop_path: float, layer_scale: float | None, order_index: int,
                 cpe_key: str, algo) -> None:  # noqa: ANN001
        super().__init__()
        self.cpe = nn.ModuleList([BiasedSubMConv3d(channels, channels, 3, bias=True, indice_key=cpe_key, algo=algo),
                                  nn.Linear(channels, channels), nn.LayerNorm(channels)])
        self.norm1 = nn.Sequential(nn.LayerNorm(channels))
        self.ls1 = nn.Sequential(LayerScale(channels, layer_scale) if layer_scale is not None else nn.Identity())
        self.attn = SerializedAttention(channels, num_heads, patch_size, qkv_bias, attn_drop, proj_drop, order_index)
        self.norm2 = nn.Sequential(nn.LayerNorm(channels))
        self.ls2 = nn.Sequential(LayerScale(channels, layer_scale) if layer_scale is not None else nn.Identity())
        self.mlp = nn.Sequential(MLP(channels, int(channels * mlp_ratio), proj_drop))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, level: Level, cpe_input: torch.Tensor | None = None) -> torch.Tensor:
        """The level's new features; ``cpe_input``: what the positional encoding's conv reads, when not the
        features (the first block after PTv3's unpooling, see :class:`Unpooling`)."""
        conv, linear, norm = self.cpe
        encoded = conv(level.sparse.replace_feature(level.feat if cpe_input is None else cpe_input)).features
        feat = level.feat + norm(linear(encoded))
        feat = feat + self.drop_path(self.ls1(self.attn(self.norm1(feat), level)))
        return feat + self.drop_path(self.ls2(self.mlp(self.norm2(feat))))


class Stem(nn.Module):
    """The embedding: PTv3's 5^3 submanifold conv + BatchNorm, or Sonata's linear layer + LayerNorm; then GELU."""

    def __init__(self, in_channels: int, channels: int, variant: Variant, algo) -> None:  # noqa: ANN001
        super().__init__()
        if variant == "v3m1":
            self.conv = spconv.SubMConv3d(in_channels, channels, 5, padding=1, bias=False, indice_key="stem",
                                          algo=algo)
            self.norm = BatchNorm(channels)
        else:
            self.linear = nn.Linear(in_channels, channels)
            self.norm = nn.LayerNorm(channels)
        self.act = nn.GELU()

    def forward(self, level: Level) -> torch.Tensor:
        feat = self.conv(level.sparse).features if hasattr(self, "conv") else self.linear(level.feat)
        return self.act(self.norm(feat))


class Embedding(nn.Module):
    def __init__(self, in_channels: int, channels: int, variant: Variant, algo) -> None:  # noqa: ANN001
        super().__init__()
        self.stem = Stem(in_channels, channels, variant, algo)


class Pooling(nn.Module):
    """Voxels merged into cells ``stride`` times larger, features projected and max-pooled, normed, GELU.

    PTv3 (``SerializedPooling``) merges by the curve codes' prefix and keeps the pooled codes (BatchNorm); Sonata
    (``GridPooling``) merges by the divided grid and serializes the cells again (LayerNorm)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, variant: Variant,
                 orders: Sequence[Order]) -> None:
        super().__init__()
        if stride < 1 or (variant == "v3m1" and stride & (stride - 1)):
            raise ValueError(f"pooling stride must be a positive integer (PTv3's serialized pooling: a power of two), "
                             f"got {stride}")
        self.stride, self.variant, self.orders = stride, variant, tuple(orders)
        self.proj = nn.Linear(in_channels, out_channels)
        self.norm = nn.Sequential(BatchNorm(out_channels) if variant == "v3m1" else nn.LayerNorm(out_channels))
        self.act = nn.Sequential(nn.GELU())

    def forward(self, level: Level, shuffle: bool) -> tuple[Level, torch.Tensor]:
        """The coarser level and each voxel's cell in it."""
        if self.variant == "v3m1":
            bits = (self.stride - 1).bit_length()
            bits = 0 if bits > level.depth else bits
            _, cluster = torch.unique(level.code[0] >> (3 * bits), sorted=True, return_inverse=True)
            cells = int(cluster.max()) + 1
            head = torch.full((cells,), len(cluster), device=cluster.device).scatter_reduce(
                0, cluster, torch.arange(len(cluster), device=cluster.device), reduce="amin")
            code, order, inverse = _orders(level.code[:, head] >> (3 * bits), shuffle)
            grid, batch, depth = level.grid[head] >> bits, level.batch[head], level.depth - bits
            rows = torch.cat([batch[:, None], grid], dim=1)
        else:
            rows, cluster = unique_rows(torch.cat([level.batch[:, None], level.grid // self.stride], dim=1))
            cells = len(rows)
            batch, grid = rows[:, 0], rows[:, 1:]
            depth = depth_for(grid)
            code, order, inverse = serialize(grid, batch, self.orders, depth, shuffle)
        feat = self.act(self.norm(segment_max(self.proj(level.feat), cluster, cells)))
        sparse = sparse_tensor(rows, feat, level.sparse.batch_size)
        return Level(feat, grid, batch, depth, code, order, inverse, sparse), cluster


class Unpooling(nn.Module):
    """The coarse features projected and added to the projected features of the finer level they were pooled from.

    PTv3's first block after it reads, in its positional-encoding conv, the projected skip alone: the original
    updates the level's sparse tensor in ``proj_skip`` and not after the sum (Sonata's ``GridUnpooling`` does).
    Reproduced, so that PTv3 checkpoints compute what they were trained to."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, variant: Variant) -> None:
        super().__init__()
        def norm() -> nn.Module:
            return BatchNorm(out_channels) if variant == "v3m1" else nn.LayerNorm(out_channels)

        self.variant = variant
        self.proj = nn.Sequential(nn.Linear(in_channels, out_channels), norm(), nn.GELU())
        self.proj_skip = nn.Sequential(nn.Linear(skip_channels, out_channels), norm(), nn.GELU())

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor, cluster: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The finer level's features, and what its next positional encoding reads (None: those features)."""
        projected_skip = self.proj_skip(skip)
        feat = projected_skip + self.proj(coarse)[cluster]
        return feat, projected_skip if self.variant == "v3m1" else None


class Stage(nn.Module):
    """An encoder stage (``down`` then ``block<i>``) or a decoder stage (``up`` then ``block<i>``)."""

    def __init__(self, blocks: Sequence[Block], down: Pooling | None = None, up: Unpooling | None = None) -> None:
        super().__init__()
        if down is not None:
            self.down = down
        if up is not None:
            self.up = up
        for i, block in enumerate(blocks):
            self.add_module(f"block{i}", block)
        self.depth = len(blocks)

    def blocks(self) -> list[Block]:
        return [getattr(self, f"block{i}") for i in range(self.depth)]


class PointTransformerV3(nn.Module):
    """PTv3 over a :class:`PointBatch`: (N, dec_channels[0]) features per point, or with ``enc_mode`` (Sonata's
    encoder) the features of every encoder level upcast to the points and concatenated (``sum(enc_channels)``),
    as Sonata's linear probe reads them."""

    def __init__(self, in_channels: int = 6, order: Sequence[Order] = ORDERS, stride: Sequence[int] = (2, 2, 2, 2),
                 enc_depths: Sequence[int] = (2, 2, 2, 6, 2), enc_channels: Sequence[int] = (32, 64, 128, 256, 512),
                 enc_num_head: Sequence[int] = (2, 4, 8, 16, 32), enc_patch_size: Sequence[int] = (1024,) * 5,
                 dec_depths: Sequence[int] = (2, 2, 2, 2), dec_channels: Sequence[int] = (64, 64, 128, 256),
                 dec_num_head: Sequence[int] = (4, 4, 8, 16), dec_patch_size: Sequence[int] = (1024,) * 4,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 drop_path: float = 0.3, layer_scale: float | None = None, shuffle_orders: bool = True,
                 enc_mode: bool = False, variant: Variant = "v3m1", algo: str = "auto") -> None:
        super().__init__()
        stages = len(enc_depths)
        lengths = [len(stride) + 1, len(enc_channels), len(enc_num_head), len(enc_patch_size)]
        if not enc_mode:
            lengths += [len(dec_depths) + 1, len(dec_channels) + 1, len(dec_num_head) + 1, len(dec_patch_size) + 1]
        if any(n != stages for n in lengths):
            raise ValueError("stride, the encoder's and the decoder's settings must describe the same stages")
        self.orders, self.variant = tuple(order), variant
        self.shuffle_orders, self.enc_mode = shuffle_orders, enc_mode
        self.in_channels = in_channels
        self.out_channels = sum(enc_channels) if enc_mode else dec_channels[0]
        self.level_channels = tuple(enc_channels) if enc_mode else (*dec_channels, enc_channels[-1])
        a = conv_algo(algo)
        block = partial(Block, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop,
                        layer_scale=layer_scale, algo=a)
        self.embedding = Embedding(in_channels, enc_channels[0], variant, a)
        rates = torch.linspace(0, drop_path, sum(enc_depths), device="cpu").tolist()
        self.enc = nn.Module()
        for s in range(stages):
            drops = rates[sum(enc_depths[:s]): sum(enc_depths[: s + 1])]
            down = Pooling(enc_channels[s - 1], enc_channels[s], stride[s - 1], variant, order) if s else None
            self.enc.add_module(f"enc{s}", Stage(
                [block(enc_channels[s], enc_num_head[s], enc_patch_size[s], drop_path=drops[i],
                       order_index=i % len(order), cpe_key=f"stage{s}") for i in range(enc_depths[s])], down=down))
        if not enc_mode:
            rates = torch.linspace(0, drop_path, sum(dec_depths), device="cpu").tolist()
            widths = [*dec_channels, enc_channels[-1]]
            self.dec = nn.Module()
            for s in reversed(range(stages - 1)):
                drops = rates[sum(dec_depths[:s]): sum(dec_depths[: s + 1])][::-1]
                up = Unpooling(widths[s + 1], enc_channels[s], widths[s], variant)
                self.dec.add_module(f"dec{s}", Stage(
                    [block(widths[s], dec_num_head[s], dec_patch_size[s], drop_path=drops[i],
                           order_index=i % len(order), cpe_key=f"stage{s}") for i in range(dec_depths[s])], up=up))
        if variant == "v3m2":
            self.apply(_sonata_init)

    def levels(self, batch: PointBatch) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
        """Per-level features, finest first: the decoder's output at each resolution and the deepest encoder
        stage's (``enc_mode``: each encoder stage's); each voxel's cell in the next level; each point's voxel."""
        voxels, feat, point_voxel = voxelize(batch)
        voxel_batch, grid = voxels[:, 0].long(), voxels[:, 1:].long()
        depth = depth_for(grid)
        shuffle = self.shuffle_orders and self.training
        code, order, inverse = serialize(grid, voxel_batch, self.orders, depth, shuffle)
        sparse = sparse_tensor(voxels, feat, batch.batch_size)
        level = Level(feat, grid, voxel_batch, depth, code, order, inverse, sparse)
        level.feat = self.embedding.stem(level)
        level.sparse = level.sparse.replace_feature(level.feat)
        encoder, clusters = [], []
        for s in range(len(self.enc._modules)):
            stage: Stage = getattr(self.enc, f"enc{s}")
            if s:
                level, cluster = stage.down(level, shuffle)
                clusters.append(cluster)
            for blk in stage.blocks():
                level.feat = blk(level)
            encoder.append(level)
        if self.enc_mode:
            return [lv.feat for lv in encoder], point_voxel, clusters
        outputs = [level.feat]
        for s in reversed(range(len(encoder) - 1)):
            stage = getattr(self.dec, f"dec{s}")
            finer = encoder[s]
            finer.feat, cpe_input = stage.up(level.feat, finer.feat, clusters[s])
            level = finer
            for blk in stage.blocks():
                level.feat = blk(level, cpe_input)
                cpe_input = None
            outputs.insert(0, level.feat)
        return outputs, point_voxel, clusters

    def forward(self, batch: PointBatch) -> torch.Tensor:
        outputs, point_voxel, clusters = self.levels(batch)
        if not self.enc_mode:
            return outputs[0][point_voxel]
        return upcast(outputs, clusters)[point_voxel]


def _sonata_init(module: nn.Module) -> None:
    """Sonata's initialisation: truncated normal (std 0.02) weights for linear layers and sparse convs, zero
    biases."""
    if isinstance(module, nn.Linear | spconv.SubMConv3d):
        nn.init.trunc_normal_(module.weight, std=0.02)  # torch's, as the original (timm's draws otherwise)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


@register_backbone("ptv3-v1m1", modality="3d", in_channels=6, out_channels=64, voxel_size=0.02,
                   description="Point Transformer V3 (Pointcept's PT-v3m1 base): serialized patch attention, "
                               "patch 1024, 5 stages, 64-d output")
def ptv3_v1m1(**overrides: object) -> PointTransformerV3:
    return PointTransformerV3(**overrides)  # type: ignore[arg-type]


# ptv3-mini: about spunet-mini's size and cost, for 2 cores
PTV3_MINI = {"enc_depths": (1, 1, 1, 2, 1), "enc_channels": (16, 32, 64, 64, 64), "enc_num_head": (1, 2, 4, 4, 4),
             "enc_patch_size": (128,) * 5, "dec_depths": (1, 1, 1, 1), "dec_channels": (32, 32, 64, 64),
             "dec_num_head": (2, 2, 4, 4), "dec_patch_size": (128,) * 4, "drop_path": 0.1}


@register_backbone("ptv3-mini", modality="3d", in_channels=6, out_channels=32, voxel_size=0.1,
                   description="PTv3 with about spunet-mini's widths, one block per stage, patch 128 and 10 cm "
                               "voxels, for CPU runs")
def ptv3_mini(**overrides: object) -> PointTransformerV3:
    return PointTransformerV3(**{**PTV3_MINI, **overrides})  # type: ignore[arg-type]


SONATA = {"in_channels": 9, "enc_depths": (3, 3, 3, 12, 3), "enc_channels": (48, 96, 192, 384, 512),
          "enc_num_head": (3, 6, 12, 24, 32), "enc_mode": True, "variant": "v3m2"}


@register_backbone("sonata-v1m1", modality="3d", in_channels=9, out_channels=1232, voxel_size=0.02,
                   description="the Sonata encoder (Pointcept's PT-v3m2): linear stem over coord, colour, normal; "
                               "grid pooling; every level upcast and concatenated, 1,232-d")
def sonata_v1m1(**overrides: object) -> PointTransformerV3:
    return PointTransformerV3(**{**SONATA, **overrides})  # type: ignore[arg-type]
