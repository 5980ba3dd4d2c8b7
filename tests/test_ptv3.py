"""Point Transformer V3 and the Sonata encoder: the curves, the patches, the attention against a plain reference,
the original's module names and parameter counts, and a Ponder pre-training through them.

The registry tests (forward and backward, determinism, point-order independence) and the trainer-checkpoint test
cover these backbones as registered ones. That they compute what Pointcept's code computes (max |difference|
2.2e-5 on features of scale 34) is checked by ``python -m bench.perf.against_original --checkout <Pointcept>``
(README; ``results/perf/against_original_ptv3.json``).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

from backbones.levels import all_levels, level_width, one_level
from backbones.ptv3 import BiasedSubMConv3d, Level, SerializedAttention, segment_max, serialize
from backbones.registry import create_backbone, get_backbone_config
from backbones.serialization import encode, hilbert, z_order
from backbones.sparse import conv_algo
from backbones.spunet import sparse_tensor
from backbones.structures import PointBatch
from bench.finetune.engine import finetune
from bench.pretrain.engine import Pretrainer
from bench.recipes import get_finetune_recipe
from tasks.heads.segmentation import SegmentationModel
from tasks.spec import get_task
from tests.test_pretrain import micro_recipe


def _cube(depth: int) -> torch.Tensor:
    side = range(1 << depth)
    return torch.tensor(list(itertools.product(side, side, side)))


def test_z_order_interleaves_x_y_z_bits_from_x() -> None:
    grid = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [2, 0, 0], [3, 5, 6]])
    assert z_order(grid, 3).tolist() == [4, 2, 1, 7, 32, 0b011_101_110]


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_the_hilbert_curve_visits_every_voxel_once_stepping_to_a_face_neighbour(depth: int) -> None:
    grid = _cube(depth)
    code = hilbert(grid, depth)
    assert sorted(code.tolist()) == list(range(len(grid)))
    path = grid[torch.argsort(code)]
    assert (path[1:] - path[:-1]).abs().sum(1).eq(1).all()
    assert path[0].tolist() == [0, 0, 0]
    # coarser cells are runs of the curve: the code's top bits are the parent cell's index
    parent = hilbert(grid >> 1, depth - 1) if depth > 1 else torch.zeros_like(code)
    assert torch.equal(code >> 3, parent)


def test_codes_keep_clouds_apart_and_trans_orders_swap_x_and_y() -> None:
    grid = torch.tensor([[3, 1, 2], [0, 0, 0]])
    batch = torch.tensor([1, 0])
    for order in ("z", "hilbert"):
        code = encode(grid, batch, 2, order)
        assert code[0] >> 6 == 1 and code[1] >> 6 == 0
        assert torch.equal(encode(grid, batch, 2, f"{order}-trans"), encode(grid[:, [1, 0, 2]], batch, 2, order))
    with pytest.raises(ValueError, match="unknown serialization order 'morton'"):
        encode(grid, batch, 2, "morton")  # type: ignore[arg-type]


def _level(counts: list[int], channels: int = 8, seed: int = 0) -> Level:
    g = torch.Generator().manual_seed(seed)
    grids, batches = [], []
    for b, n in enumerate(counts):
        cells = torch.randperm(20**3, generator=g)[:n]
        grids.append(torch.stack([cells // 400, cells // 20 % 20, cells % 20], 1))
        batches.append(torch.full((n,), b))
    grid, batch = torch.cat(grids), torch.cat(batches)
    code, order, inverse = serialize(grid, batch, ("hilbert",), 5, shuffle=False)
    feat = torch.randn(len(grid), channels, generator=g)
    return Level(feat, grid, batch, 5, code, order, inverse, sparse_tensor(torch.cat([batch[:, None], grid], 1), feat,
                                                                           len(counts)))


@pytest.mark.parametrize("counts", [[5], [40], [37, 9], [16, 16, 3]])
def test_patches_cover_every_voxel_once_within_its_cloud(counts: list[int]) -> None:
    level, size = _level(counts), 16
    written = torch.zeros(sum(counts), dtype=torch.long)
    for positions, kept in level.patches(size):
        cloud = level.batch[level.order[0][positions]]
        assert (cloud == cloud[:, :1]).all(), "a patch never mixes clouds"
        assert positions.shape[1] == min(size, counts[int(cloud[0, 0])])
        written.index_add_(0, positions[kept], torch.ones_like(positions[kept]))
    assert written.eq(1).all()


def _reference_attention(attn: SerializedAttention, level: Level) -> torch.Tensor:
    """Each voxel attends to the ``patch_size`` voxels of its run along the curve, or, in a cloud's last partial
    run, to the cloud's last ``patch_size`` voxels: an explicit softmax per voxel."""
    heads, width = attn.num_heads, attn.channels // attn.num_heads
    qkv = attn.qkv(level.feat).view(-1, 3, heads, width)
    out = torch.empty(len(qkv), attn.channels)
    seq, size = level.order[0], attn.patch_size
    start = 0
    for n in torch.bincount(level.batch).tolist():
        for i in range(n):
            lo = min((i // size) * size, max(n - size, 0))
            members = seq[start + lo: start + min(lo + size, n)]
            q, k, v = qkv[seq[start + i], 0], qkv[members, 1], qkv[members, 2]
            weights = torch.softmax(torch.einsum("hd,nhd->hn", q, k) / math.sqrt(width), dim=1)
            out[seq[start + i]] = torch.einsum("hn,nhd->hd", weights, v).reshape(-1)
        start += n
    return attn.proj(out)


@pytest.mark.parametrize("counts", [[12], [40], [37, 9]])
def test_patch_attention_equals_a_per_voxel_softmax(counts: list[int]) -> None:
    torch.manual_seed(0)
    level = _level(counts)
    attn = SerializedAttention(8, 2, patch_size=16).eval()
    with torch.no_grad():
        torch.testing.assert_close(attn(level.feat, level), _reference_attention(attn, level), rtol=1e-5, atol=1e-6)


def test_a_biased_sparse_conv_runs_in_eval_on_the_cpu_and_adds_its_bias_as_spconv_does_in_training() -> None:
    level = _level([30])
    torch.manual_seed(0)
    conv = BiasedSubMConv3d(8, 8, 3, bias=True, indice_key="k", algo=conv_algo())
    torch.nn.init.normal_(conv.bias)
    with torch.no_grad():
        evaluated = conv.eval()(level.sparse).features
        trained = super(BiasedSubMConv3d, conv.train()).forward(level.sparse).features  # spconv adds it after
    torch.testing.assert_close(evaluated, trained)


# names in the original's state dicts (Pointcept's PT-v3m1 and PT-v3m2 classes, built from its code)
PTV3_KEYS = ["embedding.stem.conv.weight", "embedding.stem.norm.running_var", "enc.enc0.block0.cpe.0.weight",
             "enc.enc0.block0.cpe.0.bias", "enc.enc0.block0.cpe.1.weight", "enc.enc0.block0.cpe.2.bias",
             "enc.enc0.block0.norm1.0.weight", "enc.enc0.block0.attn.qkv.weight", "enc.enc0.block0.attn.proj.bias",
             "enc.enc0.block0.norm2.0.weight", "enc.enc0.block0.mlp.0.fc1.weight", "enc.enc0.block0.mlp.0.fc2.bias",
             "enc.enc1.down.proj.weight", "enc.enc1.down.norm.0.running_mean", "enc.enc4.block1.attn.qkv.bias",
             "dec.dec3.up.proj.0.weight", "dec.dec3.up.proj.1.running_var", "dec.dec3.up.proj_skip.0.weight",
             "dec.dec0.block1.mlp.0.fc2.weight"]
SONATA_KEYS = ["embedding.stem.linear.weight", "embedding.stem.norm.weight", "enc.enc1.down.proj.weight",
               "enc.enc1.down.norm.0.weight", "enc.enc3.block11.attn.qkv.weight", "enc.enc4.block2.mlp.0.fc2.bias"]


@pytest.mark.parametrize(("name", "keys", "params"), [("ptv3-v1m1", PTV3_KEYS, 46_166_272),
                                                      ("sonata-v1m1", SONATA_KEYS, 108_461_328)])
def test_module_names_and_sizes_are_the_originals(name: str, keys: list[str], params: int) -> None:
    """Parameter counts of the original classes built from Pointcept's code with the configs' settings
    (``results/perf/against_original_ptv3.json``)."""
    config = get_backbone_config(name)
    with torch.device("meta"):
        names = set(create_backbone(name).state_dict())
    assert set(keys) <= names and config.params == params
    assert not any(".dec" in k for k in names) if name.startswith("sonata") else True


def test_a_sonata_file_with_config_and_state_dict_loads(tmp_path: Path) -> None:
    """Sonata's release format: ``{"config": ..., "state_dict": {...}}`` with the backbone's own names."""
    torch.manual_seed(0)
    source = create_backbone("sonata-v1m1", enc_depths=(1, 1, 1, 1, 1))
    torch.save({"config": {"in_channels": 9, "enc_mode": True}, "state_dict": source.state_dict()},
               tmp_path / "sonata.pth")
    loaded = create_backbone("sonata-v1m1", enc_depths=(1, 1, 1, 1, 1), checkpoint=tmp_path / "sonata.pth")
    assert (loaded.checkpoint.prefix, loaded.checkpoint.missing, loaded.checkpoint.unexpected) == ("", (), ())
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values(),
                                                 strict=True))


def _batch(channels: int) -> PointBatch:
    g = torch.Generator().manual_seed(0)
    cells = torch.randperm(30**3, generator=g)[:900]
    grid = torch.stack([cells // 900, cells // 30 % 30, cells % 30], 1).int()
    return PointBatch(grid.float() * 0.1, grid, torch.randn(900, channels, generator=g), torch.tensor([500, 900]))


def test_sonata_concatenates_every_encoder_level_upcast_to_the_points() -> None:
    torch.manual_seed(0)
    net = create_backbone("sonata-v1m1", enc_depths=(1, 1, 1, 1, 1), in_channels=6).eval()
    batch = _batch(6)
    with torch.no_grad():
        out = net(batch)
        levels, point_voxel, clusters = net.levels(batch)
    assert out.shape == (900, 1232) and [lv.shape[1] for lv in levels] == [48, 96, 192, 384, 512]
    torch.testing.assert_close(out[:, :48], levels[0][point_voxel])
    torch.testing.assert_close(out[:, 48:144], levels[1][clusters[0]][point_voxel])


def test_curve_orders_are_shuffled_in_training_only() -> None:
    net = create_backbone("ptv3-mini", drop_path=0.0)
    batch = _batch(6)
    outs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        with torch.no_grad():
            outs.append(net.train()(batch))
    assert not torch.allclose(outs[0], outs[1]), "a different draw of curve orders per block"
    with torch.no_grad():
        torch.manual_seed(0)
        first = net.eval()(batch)
        torch.manual_seed(1)
        torch.testing.assert_close(net(batch), first, rtol=0, atol=0)


def test_ponder_pretraining_drives_ptv3(tiny_root: Path, tmp_path: Path) -> None:
    recipe = micro_recipe("indoor", "backbone=ptv3-mini")
    result = Pretrainer(recipe, tiny_root / "scannet", tmp_path / "run", progress=False).run()
    assert result.steps == 4 and all(math.isfinite(v) for v in result.last_losses.values())
    assert result.heldout_depth_error_after > 0


@pytest.mark.parametrize("name", ["spunet-mini", "ptv3-mini"])
def test_all_level_features_start_with_the_backbones_own_output(name: str) -> None:
    torch.manual_seed(0)
    net = create_backbone(name).eval()
    batch = _batch(6)
    with torch.no_grad():
        features = all_levels(net, batch)
        torch.testing.assert_close(features[:, :net.out_channels], net(batch))
    assert features.shape == (900, sum(net.level_channels))
    model = SegmentationModel(net, features.shape[1], 5, freeze_backbone=True, levels=True)
    assert model(batch).shape == (900, 5)


@pytest.mark.parametrize("name", ["spunet-mini", "ptv3-mini"])
def test_one_level_is_its_slice_of_every_level(name: str) -> None:
    torch.manual_seed(0)
    net = create_backbone(name).eval()
    batch = _batch(6)
    with torch.no_grad():
        every = all_levels(net, batch)
        start = 0
        for k, width in enumerate(net.level_channels):
            torch.testing.assert_close(one_level(net, batch, k), every[:, start:start + width])
            start += width
        torch.testing.assert_close(one_level(net, batch, -1), every[:, -net.level_channels[-1]:])
    model = SegmentationModel(net, level_width(net, 2), 5, freeze_backbone=True, level=2)
    assert model(batch).shape == (900, 5)
    count = len(net.level_channels)
    with pytest.raises(ValueError, match=f"level {count}: .* has levels 0 to {count - 1}"):
        SegmentationModel(net, 8, 5, level=count)


def test_all_level_features_need_a_backbone_with_levels() -> None:
    with pytest.raises(ValueError, match="has no levels"):
        SegmentationModel(create_backbone("spunet-v1m3-mini"), 32, 5, levels=True)
    with pytest.raises(ValueError, match="has no levels"):
        SegmentationModel(create_backbone("spunet-v1m3-mini"), 32, 5, level=0)
    with pytest.raises(ValueError, match="exclude each other"):
        SegmentationModel(create_backbone("spunet-mini"), 32, 5, levels=True, level=0)


@pytest.mark.parametrize("setting", ["semseg.levels=True", "semseg.level=1"])
def test_a_probe_on_the_levels_runs_in_the_engine(tiny_root: Path, setting: str) -> None:
    recipe = get_finetune_recipe("tiny", ["epochs=1", "max_points=1500", setting])
    result = finetune(get_task("scannet-semseg"), "ptv3-mini", tiny_root, recipe=recipe, linear_probe=True)
    assert 0.0 <= result.scores["mIoU"] <= 1.0


def test_max_pooling_sends_the_gradient_to_one_of_tied_maxima() -> None:
    feat = torch.tensor([[1.0, 2.0], [1.0, 5.0], [0.0, 5.0], [3.0, 0.0]], requires_grad=True)
    pooled = segment_max(feat, torch.tensor([0, 0, 0, 1]), 2)
    assert pooled.tolist() == [[1.0, 5.0], [3.0, 0.0]]
    pooled.sum().backward()
    assert feat.grad.tolist() == [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0]]
