"""SpUNet-v1m3 (PDNorm): the dataset condition picks the norms and the context row, in the original's two orders,
and PonderV2's checkpoints load with the condition table found where the original keeps it.

The key names and shapes below are the original's (``SpUNetBase`` of PonderV2's ``spconv_unet_v1m3_pdnorm.py``, as
its PPT configs build it); that the computation matches it is checked by ``python -m bench.perf.against_original``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from backbones.registry import create_backbone
from backbones.spunet_pdnorm import CONDITIONS, CONTEXT_CONDITIONS
from backbones.structures import PointBatch

ORIGINAL_V1M3 = {  # state-dict entries and parameters of the original, and some of its keys with their shapes
    "entries": 1062, "params": 43_598_272,
    "shapes": {"conv_input.conv.weight": (32, 5, 5, 5, 6), "conv_input.bn.bns.2.running_var": (32,),
               "down.3.bn.modulation.1.weight": (512, 256), "enc.3.block5.conv2.weight": (256, 3, 3, 3, 256),
               "dec.0.block0.proj_conv.weight": (96, 1, 1, 1, 128), "dec.0.block0.proj_norm.bns.1.bias": (96,),
               "up.3.conv.weight": (256, 2, 2, 2, 256), "dec.3.block1.bn2.modulation.1.bias": (512,)},
}


def test_spunet_v1m3_has_the_originals_names_and_shapes_plus_the_condition_table() -> None:
    with torch.device("meta"):
        model = create_backbone("spunet-v1m3")
    state = model.state_dict()
    backbone = {k: v for k, v in state.items() if not k.startswith("embedding_table.")}
    assert len(backbone) == ORIGINAL_V1M3["entries"]
    assert sum(p.numel() for n, p in model.named_parameters() if not n.startswith("embedding_table.")) == \
        ORIGINAL_V1M3["params"]
    assert {k: tuple(backbone[k].shape) for k in ORIGINAL_V1M3["shapes"]} == ORIGINAL_V1M3["shapes"]
    assert tuple(state["embedding_table.weight"].shape) == (3, 256)


def _room(condition: str | None, seed: int = 0) -> PointBatch:
    rng = np.random.default_rng(seed)
    grid = np.unique(rng.integers(0, 24, (1500, 3)), axis=0)
    grid[: len(grid) // 2, 2] = 0
    grid = np.unique(grid, axis=0)
    feat = rng.normal(size=(len(grid), 6))
    return PointBatch.collate([(grid * 0.1, grid, feat)], condition=condition)


def _trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random norm statistics and modulation, so that conditions differ as they do after training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and ("bns." in name or "modulation." in name or "embedding" in name):
                noise = torch.randn(tensor.shape, generator=generator)
                tensor.copy_(0.5 + noise.abs() if name.endswith("running_var") else 0.1 * noise)
    return model.eval()


def test_the_condition_picks_norms_and_context_in_the_originals_two_orders() -> None:
    model = _trained_like(create_backbone("spunet-v1m3-mini"))
    with torch.no_grad():
        out = {c: model(_room(c)) for c in ("ScanNet", "S3DIS", "Structured3D")}
        assert not torch.allclose(out["ScanNet"], out["S3DIS"])
        # S3DIS reads norm 1 (conditions order) and context row 2 (CONTEXT_CONDITIONS order): changing any other
        # norm or row leaves it unchanged; changing row 2 does not
        model.embedding_table.weight[CONTEXT_CONDITIONS.index("ScanNet")] += 1.0
        for module in model.modules():
            if hasattr(module, "bns"):
                module.bns[0].running_mean += 1.0
        assert torch.equal(model(_room("S3DIS")), out["S3DIS"])
        model.embedding_table.weight[CONTEXT_CONDITIONS.index("S3DIS")] += 1.0
        assert not torch.allclose(model(_room("S3DIS")), out["S3DIS"])
        assert torch.equal(model(_room(None)), model(_room("ScanNet")))  # no condition: the first one's
    with pytest.raises(ValueError, match="'SemanticKITTI' is not one of this backbone's"):
        model(_room("SemanticKITTI"))


def _ppt_checkpoint(model: torch.nn.Module, path: Path, around: str) -> None:
    """A checkpoint in PonderV2's scheme: the SpUNet under ``<around>backbone.``, the condition table and PPT's
    language head under ``<around>``."""
    state = {f"{around}backbone.{k}": v for k, v in model.state_dict().items() if not k.startswith("embedding_")}
    state |= {f"{around}embedding_table.weight": model.embedding_table.weight.detach().clone(),
              f"{around}proj_head.weight": torch.zeros(512, 32), f"{around}proj_head.bias": torch.zeros(512),
              f"{around}class_embedding": torch.zeros(36, 512), f"{around}logit_scale": torch.tensor(4.6)}
    torch.save({"epoch": 100, "state_dict": state}, path)


@pytest.mark.parametrize("around", ["module.", "module.backbone."])  # PPT fine-tune; PPT inside PointGroup
def test_a_ppt_checkpoint_loads_the_backbone_and_its_condition_table(around: str, tmp_path: Path) -> None:
    source = _trained_like(create_backbone("spunet-v1m3-mini"), seed=3)
    _ppt_checkpoint(source, tmp_path / "model_best.pth", around)
    loaded = create_backbone("spunet-v1m3-mini", checkpoint=tmp_path / "model_best.pth").eval()
    report = loaded.checkpoint
    assert (report.prefix, report.missing, report.unexpected) == (f"{around}backbone.", (), ())
    with torch.no_grad():
        assert torch.equal(loaded(_room("S3DIS")), source(_room("S3DIS")))


def test_the_bare_original_backbone_lacks_only_the_condition_table(tmp_path: Path) -> None:
    source = create_backbone("spunet-v1m3-mini")
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("embedding_table.")}
    torch.save(state, tmp_path / "spunet.pth")
    with pytest.raises(ValueError, match=r"missing embedding_table.weight; unexpected none"):
        create_backbone("spunet-v1m3-mini", checkpoint=tmp_path / "spunet.pth")
    loaded = create_backbone("spunet-v1m3-mini", checkpoint=tmp_path / "spunet.pth", strict=False)
    assert loaded.checkpoint.missing == ("embedding_table.weight",)


def _norm_means(state: dict[str, torch.Tensor], condition: int) -> torch.Tensor:
    return torch.cat([v for k, v in state.items() if k.endswith(f".bns.{condition}.running_mean")])


@pytest.mark.slow
def test_fine_tuning_reads_the_condition_of_the_tasks_dataset(tiny_root: Path, tmp_path: Path) -> None:
    from bench.finetune.engine import fit_and_evaluate
    from bench.recipes import get_finetune_recipe
    from tasks.datasets import task_scenes
    from tasks.spec import get_task

    spec = get_task("s3dis-area5-semseg")
    assert spec.condition == "S3DIS" and get_task("scannet-semseg").condition == "ScanNet"
    assert get_task("semantickitti-semseg").condition is None
    train, evaluation = task_scenes(spec, tiny_root, "train"), task_scenes(spec, tiny_root, spec.eval_split)
    result = fit_and_evaluate(spec, "spunet-v1m3-mini", train, evaluation,
                              recipe=get_finetune_recipe("tiny", ["epochs=1", "max_points=1500"]),
                              artifacts=tmp_path / "run")
    assert 0.0 <= result.scores["mIoU"] <= 1.0
    state = {k.removeprefix("backbone."): v for k, v in
             torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"].items()}
    s3dis, scannet = (CONDITIONS.index(c) for c in ("S3DIS", "ScanNet"))
    assert _norm_means(state, s3dis).abs().sum() > 0  # S3DIS's norms saw the batches ...
    assert _norm_means(state, scannet).abs().sum() == 0  # ... ScanNet's never did


@pytest.mark.slow
def test_the_renderer_pre_trains_spunet_v1m3_on_scannet_under_its_condition(tiny_root: Path, tmp_path: Path) -> None:
    from test_pretrain import micro_recipe

    from bench.pretrain.engine import Pretrainer

    recipe = micro_recipe("indoor", "backbone=spunet-v1m3-mini")
    Pretrainer(recipe, tiny_root / "scannet", tmp_path / "run", progress=False).run()
    export = torch.load(tmp_path / "run" / "backbone.pt", weights_only=True)
    assert _norm_means(export, CONDITIONS.index("ScanNet")).abs().sum() > 0
    assert _norm_means(export, CONDITIONS.index("S3DIS")).abs().sum() == 0
    loaded = create_backbone("spunet-v1m3-mini", checkpoint=tmp_path / "run")  # the export, as any checkpoint
    assert loaded.checkpoint.layout == "export" and not loaded.checkpoint.missing


def test_precise_batchnorm_keeps_the_statistics_of_norms_its_inputs_never_reach() -> None:
    from bench.hooks import precise_batchnorm

    model = _trained_like(create_backbone("spunet-v1m3-mini"))
    norms = [m for m in model.modules() if hasattr(m, "bns")]
    before = [{k: v.clone() for k, v in m.bns[1].state_dict().items()} for m in norms]
    scannet_before = norms[0].bns[0].running_mean.clone()
    precise_batchnorm(model, [_room("ScanNet", seed) for seed in range(2)])
    for m, kept in zip(norms, before, strict=True):  # S3DIS's norms: as they were, counts included
        assert all(torch.equal(v, kept[k]) for k, v in m.bns[1].state_dict().items())
    assert not torch.equal(norms[0].bns[0].running_mean, scannet_before)  # ScanNet's: recomputed
    assert int(norms[0].bns[0].num_batches_tracked) == 2


def _average_on(rank: int, folder: str) -> None:
    """Rank ``rank`` of 2: parameter a used by rank 0 only, b by neither, c by both."""
    import torch.distributed as dist

    from bench.distributed import average_gradients

    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    a, b, c = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
    c.grad = torch.full((3,), float(rank + 1))
    if rank == 0:
        a.grad = torch.ones(3)
    average_gradients([a, b, c], 2)
    torch.save({"a": a.grad, "b": b.grad, "c": c.grad}, f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_a_parameter_no_rank_used_keeps_no_gradient_over_processes(tmp_path: Path) -> None:
    """As in one process, where the optimiser skips PDNorm's norms of the conditions absent from a step."""
    torch.multiprocessing.spawn(_average_on, args=(str(tmp_path),), nprocs=2)
    for rank in range(2):
        grads = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert torch.equal(grads["a"], torch.full((3,), 0.5)) and grads["b"] is None
        assert torch.equal(grads["c"], torch.full((3,), 1.5))
