"""spconv on the CPU (Native algorithm) computes what dense convolutions compute, values and gradients."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from backbones.sparse import conv_algo, spconv

GRID = (6, 8, 4)  # even, so a stride-2 conv and its inverse tile it exactly


def _sparse_input(channels: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    active = torch.rand(GRID, generator=g) < 0.35
    idx = active.nonzero().int()
    feats = torch.randn(len(idx), channels, generator=g, dtype=torch.float64, requires_grad=True)
    indices = torch.cat([torch.zeros(len(idx), 1, dtype=torch.int32), idx], dim=1)
    return indices, feats, active


def _scatter(indices: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    dense = feats.new_zeros(1, *GRID, feats.shape[1])
    dense = dense.index_put((indices[:, 0].long(), indices[:, 1].long(), indices[:, 2].long(),
                             indices[:, 3].long()), feats)
    return dense.permute(0, 4, 1, 2, 3)


def _dense_weight(conv: torch.nn.Module) -> torch.Tensor:
    return conv.weight.permute(0, 4, 1, 2, 3)  # spconv stores [Cout, k, k, k, Cin]


@pytest.mark.parametrize("kernel", [3, 5])
def test_submanifold_conv_matches_dense_conv(kernel: int) -> None:
    torch.manual_seed(0)
    conv = spconv.SubMConv3d(4, 3, kernel, padding=kernel // 2, bias=True, algo=conv_algo("native")).double()
    indices, feats, active = _sparse_input(4)
    out = conv(spconv.SparseConvTensor(feats, indices, list(GRID), 1))
    dense_in = _scatter(indices, feats)
    ref = F.conv3d(dense_in, _dense_weight(conv), conv.bias, padding=kernel // 2)
    ref_at_sites = ref[0].permute(1, 2, 3, 0)[indices[:, 1].long(), indices[:, 2].long(), indices[:, 3].long()]
    torch.testing.assert_close(out.indices, indices)
    torch.testing.assert_close(out.features, ref_at_sites, rtol=1e-12, atol=1e-12)
    # gradients w.r.t. input features and weights agree for the same upstream gradient
    upstream = torch.randn_like(out.features)
    grads = torch.autograd.grad((out.features * upstream).sum(), (feats, conv.weight))
    ref_grads = torch.autograd.grad((ref_at_sites * upstream).sum(), (feats, conv.weight))
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_strided_and_inverse_conv_match_dense() -> None:
    torch.manual_seed(0)
    algo = conv_algo("native")
    down = spconv.SparseConv3d(4, 5, 2, stride=2, bias=False, indice_key="d", algo=algo).double()
    up = spconv.SparseInverseConv3d(5, 3, 2, bias=False, indice_key="d", algo=algo).double()
    indices, feats, _ = _sparse_input(4, seed=1)
    x = spconv.SparseConvTensor(feats, indices, list(GRID), 1)
    y = down(x)
    z = up(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # spconv's .dense() warns about a deprecated API
        y_dense, z_dense = y.dense(), z.dense()
    ref_y = F.conv3d(_scatter(indices, feats), _dense_weight(down), stride=2)
    torch.testing.assert_close(y_dense[..., : ref_y.shape[2], : ref_y.shape[3], : ref_y.shape[4]], ref_y,
                               rtol=1e-12, atol=1e-12)
    ref_z = F.conv_transpose3d(ref_y, up.weight.permute(4, 0, 1, 2, 3), stride=2)
    ref_z = ref_z[..., : GRID[0], : GRID[1], : GRID[2]]
    # the inverse conv writes only at the sites of the original input
    mask = _scatter(indices, torch.ones(len(indices), 1, dtype=torch.float64)) > 0
    torch.testing.assert_close(z_dense[..., : GRID[0], : GRID[1], : GRID[2]], ref_z * mask, rtol=1e-12, atol=1e-12)
    g_sparse = torch.autograd.grad(z.features.square().sum(), feats)[0]
    g_dense = torch.autograd.grad((ref_z * mask).square().sum(), feats)[0]
    torch.testing.assert_close(g_sparse, g_dense, rtol=1e-10, atol=1e-10)


def test_algorithm_choice() -> None:
    from spconv.pytorch import ConvAlgo

    assert conv_algo("native") == ConvAlgo.Native
    assert conv_algo("default") is None
    assert conv_algo("auto") == (None if torch.cuda.is_available() else ConvAlgo.Native)
    with pytest.raises(ValueError, match="algo must be"):
        conv_algo("fast")
