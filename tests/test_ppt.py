"""Point Prompt Training's language head, and released fine-tuned models rebuilt from their checkpoints alone
(``ponderbench evaluate``). The checkpoints are written in the original's key scheme (PPT-v1m1, a Pointcept
``DefaultSegmentor``, PonderV2's ScanNet200 PPT model with its classifier inside the SpUNet); that the logits match
the original code is checked by ``python -m bench.perf.against_original`` (README)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from backbones.registry import create_backbone
from backbones.structures import PointBatch
from bench.cli import main
from bench.finetune.released import released_model
from tasks.errors import DataFormatError
from tasks.heads.instance import InstanceSegmentationModel
from tasks.heads.prompt import PPT_CLASSES, VALID_CLASSES, PromptSegmentationModel, ppt_embeddings
from tasks.spec import get_task


def _cloud(seed: int = 0) -> PointBatch:
    rng = np.random.default_rng(seed)
    grid = np.unique(rng.integers(0, 20, (800, 3)), axis=0)
    return PointBatch.collate([(grid * 0.1, grid, rng.normal(size=(len(grid), 6)))])


def _ppt(seed: int = 0) -> PromptSegmentationModel:
    torch.manual_seed(seed)
    model = PromptSegmentationModel(create_backbone("spunet-v1m3-mini"), 32, ppt_embeddings())
    with torch.no_grad():
        model.logit_scale.fill_(2.0)
    return model.eval()


def test_the_head_scores_the_classes_of_the_batchs_condition() -> None:
    model = _ppt()
    assert not model.logit_scale.requires_grad  # CLIP's scale, which PPT does not train
    with torch.no_grad():
        for condition, classes in (("ScanNet", 20), ("S3DIS", 13), ("Structured3D", 25)):
            model.default_condition = condition
            logits = model(_cloud())
            assert logits.shape[1] == classes == len(VALID_CLASSES[condition])
            assert logits.abs().max() <= np.exp(2.0) + 1e-4  # a cosine times the scale
        model.default_condition = None
        with pytest.raises(ValueError, match="this batch's is None"):
            model(_cloud())
    # a class two datasets share is one target: ScanNet's and S3DIS's "chair" columns score alike
    scannet, s3dis = (model.class_embedding[list(VALID_CLASSES[c])] for c in ("ScanNet", "S3DIS"))
    assert torch.equal(scannet[4], s3dis[2]) and PPT_CLASSES[VALID_CLASSES["S3DIS"][2]] == "chair"


def _save_ppt(model: PromptSegmentationModel, path: Path) -> None:
    """PPT-v1m1's trainer checkpoint: the SpUNet under module.backbone., its condition table and head under module."""
    state = {}
    for key, value in model.state_dict().items():
        if key == "backbone.embedding_table.weight":
            state["module.embedding_table.weight"] = value
        else:
            state[f"module.{key}"] = value
    torch.save({"epoch": 100, "state_dict": state}, path)


def test_a_ppt_checkpoint_is_rebuilt_with_its_head_and_text_embeddings(tmp_path: Path) -> None:
    source = _ppt(seed=1)
    with torch.no_grad():
        source.class_embedding.copy_(torch.nn.functional.normalize(torch.randn(36, 512), dim=-1))  # "CLIP's"
    _save_ppt(source, tmp_path / "model_best.pth")
    spec = get_task("s3dis-area5-semseg")
    released = released_model(tmp_path / "model_best.pth", spec, backbone="spunet-v1m3-mini")
    assert (released.head, released.prefix) == ("ppt", "module.backbone.")
    model = released.model.eval()
    model.default_condition = source.default_condition = "S3DIS"
    with torch.no_grad():
        assert torch.equal(model(_cloud()), source(_cloud()))
    with pytest.raises(DataFormatError, match="PPT model.*scannet200-semseg has 200 classes"):
        released_model(tmp_path / "model_best.pth", get_task("scannet200-semseg"), backbone="spunet-v1m3-mini")


def test_a_segmentors_linear_head_and_the_spunets_final_layer_are_rebuilt(tmp_path: Path) -> None:
    micro = create_backbone("spunet-micro")
    state = {f"module.backbone.{k}": v for k, v in micro.state_dict().items()}
    weight, bias = torch.randn(20, 16), torch.randn(20)
    torch.save({"state_dict": {**state, "module.seg_head.weight": weight, "module.seg_head.bias": bias}},
               tmp_path / "segmentor.pth")
    released = released_model(tmp_path / "segmentor.pth", get_task("scannet-semseg"), backbone="spunet-micro")
    assert released.head == "seg_head" and torch.equal(released.model.head.weight, weight)
    # PonderV2's ScanNet200 PPT model: DefaultSegmentor > PPT (backbone mode) > SpUNet-v1m3 with its classifier
    net = create_backbone("spunet-v1m3-mini")
    nested = {f"module.backbone.backbone.{k}": v for k, v in net.state_dict().items() if "embedding_table" not in k}
    nested["module.backbone.embedding_table.weight"] = net.embedding_table.weight
    final = torch.randn(200, 1, 1, 1, 32)  # a 1^3 sparse conv (out, k, k, k, in)
    nested |= {"module.backbone.backbone.final.weight": final, "module.backbone.backbone.final.bias": torch.randn(200)}
    torch.save({"state_dict": nested}, tmp_path / "scannet200.pth")
    released = released_model(tmp_path / "scannet200.pth", get_task("scannet200-semseg"), backbone="spunet-v1m3-mini")
    assert released.head == "final" and torch.equal(released.model.head.weight, final.reshape(200, 32))
    with pytest.raises(DataFormatError, match=r"final: a head of shape \(200, 32\), where scannet-semseg needs"):
        released_model(tmp_path / "scannet200.pth", get_task("scannet-semseg"), backbone="spunet-v1m3-mini")
    torch.save({"state_dict": state}, tmp_path / "backbone_only.pth")
    with pytest.raises(DataFormatError, match="holds no segmentation head"):
        released_model(tmp_path / "backbone_only.pth", get_task("scannet-semseg"), backbone="spunet-micro")


def _save_pointgroup(path: Path, classes: int = 20, seed: int = 0) -> InstanceSegmentationModel:
    """PonderV2's insseg model: PG-v1m1 > PPT-v1m1 in backbone mode > SpUNet-v1m3, PointGroup's heads under module."""
    torch.manual_seed(seed)
    source = InstanceSegmentationModel(create_backbone("spunet-v1m3-mini"), 32, classes)
    source.bias_head[1].eps = 1e-3  # PointGroup's norm
    with torch.no_grad():
        source.bias_head[1].running_mean.normal_()
        source.bias_head[1].running_var.uniform_(0.5, 2.0)
    state = {}
    for key, value in source.state_dict().items():
        if key == "backbone.embedding_table.weight":
            state["module.backbone.embedding_table.weight"] = value
        elif key.startswith("backbone."):
            state[f"module.backbone.{key}"] = value
        else:
            state[f"module.{key}"] = value
    torch.save({"epoch": 800, "state_dict": state}, path)
    return source.eval()


def test_a_pointgroup_checkpoint_is_rebuilt_with_its_semantic_and_offset_heads(tmp_path: Path) -> None:
    source = _save_pointgroup(tmp_path / "insseg.pth")
    released = released_model(tmp_path / "insseg.pth", get_task("scannet-insseg"), backbone="spunet-v1m3-mini")
    assert (released.head, released.prefix) == ("pointgroup", "module.backbone.backbone.")
    model = released.model.eval()
    model.default_condition = source.default_condition = "ScanNet"
    with torch.no_grad():
        for ours, theirs in zip(model(_cloud()), source(_cloud()), strict=True):
            assert torch.equal(ours, theirs)
    with pytest.raises(DataFormatError, match=r"module\.seg_head does not fit scannet200-insseg's 200 classes.*"
                                              r"size mismatch for weight"):
        released_model(tmp_path / "insseg.pth", get_task("scannet200-insseg"), backbone="spunet-v1m3-mini")
    _save_ppt(_ppt(), tmp_path / "semseg.pth")  # a semantic model has no offsets to find instances with
    with pytest.raises(DataFormatError, match="holds no PointGroup heads"):
        released_model(tmp_path / "semseg.pth", get_task("scannet-insseg"), backbone="spunet-v1m3-mini")


@pytest.mark.slow
def test_evaluate_writes_a_record_like_any_run(tiny_root: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    _save_ppt(_ppt(seed=2), tmp_path / "model_best.pth")
    code = main(["evaluate", str(tmp_path / "model_best.pth"), "--task", "scannet-semseg", "--backbone",
                 "spunet-v1m3-mini", "--data", str(tiny_root), "--results", str(tmp_path / "results")])
    assert code == 0 and "scannet-semseg mIoU" in capsys.readouterr().out
    [path] = (tmp_path / "results" / "runs" / "records").rglob("seed0.json")
    record = json.loads(path.read_text())
    assert (record["protocol"], record["status"], record["init"]) == ("evaluate", "ok", "checkpoint:model_best.pth")
    assert 0.0 <= record["main_value"] <= 1.0 and record["facts"]["head"] == "ppt" and record["init_sha256"]
    _save_pointgroup(tmp_path / "insseg.pth")
    assert main(["evaluate", str(tmp_path / "insseg.pth"), "--task", "scannet-insseg", "--backbone",
                 "spunet-v1m3-mini", "--data", str(tiny_root), "--results", str(tmp_path / "results")]) == 0
    [path] = (tmp_path / "results" / "runs" / "records").glob("scannet-insseg*/**/seed0.json")
    record = json.loads(path.read_text())
    assert record["facts"]["head"] == "pointgroup" and 0.0 <= record["main_value"] <= 1.0
    assert main(["evaluate", str(tmp_path / "model_best.pth"), "--task", "nuscenes-det-lidar", "--data",
                 str(tiny_root)]) == 2  # not a segmentation task: refused before any work


@pytest.mark.slow
def test_semseg_trains_with_the_ppt_head(tiny_root: Path) -> None:
    from bench.finetune.engine import fit_and_evaluate
    from bench.recipes import get_finetune_recipe
    from tasks.datasets import task_scenes

    spec = get_task("scannet-semseg")
    recipe = get_finetune_recipe("tiny", ["epochs=1", "max_points=1500", "semseg.ppt=True"])
    result = fit_and_evaluate(spec, "spunet-v1m3-mini", task_scenes(spec, tiny_root, "train"),
                              task_scenes(spec, tiny_root, "val"), recipe=recipe)
    assert 0.0 <= result.scores["mIoU"] <= 1.0 and np.isfinite(result.facts.final_train_loss)
    with pytest.raises(ValueError, match="semseg.ppt: PPT's class sets.*scannet200-semseg has 200 classes"):
        spec200 = get_task("scannet200-semseg")
        fit_and_evaluate(spec200, "spunet-v1m3-mini", task_scenes(spec200, tiny_root, "train"),
                         task_scenes(spec200, tiny_root, "val"), recipe=recipe)


def test_interleaved_batches_follow_the_loop_ratios() -> None:
    from bench.finetune.draws import Interleaved

    mix = Interleaved(sizes=(5, 3, 2), ratios=(2, 4, 1))
    located = [mix.locate(step) for step in range(14)]
    assert [g for g, _ in located] == [0, 0, 1, 1, 1, 1, 2] * 2
    assert [k for g, k in located if g == 1] == list(range(8)) and mix.starts == (0, 5, 8)


def test_mixed_datasets_are_named_clearly(tiny_root: Path) -> None:
    from bench.finetune.multidataset import mixed_training_scenes, parse_datasets

    assert parse_datasets("structured3d:4, scannet:2,s3dis") == [("structured3d", 4), ("scannet", 2), ("s3dis", 1)]
    with pytest.raises(ValueError, match="'semantickitti' is not a dataset with a condition"):
        parse_datasets("semantickitti:1")
    with pytest.raises(ValueError, match="loop ratio of s3dis must be a positive integer"):
        parse_datasets("s3dis:0")
    spec = get_task("scannet-semseg")
    with pytest.raises(DataFormatError, match="names structured3d, whose folder is not in the task's data root"):
        mixed_training_scenes(spec, tiny_root / "nowhere", [], "structured3d:1")
    mixed = mixed_training_scenes(spec, tiny_root, ["a", "b"], "structured3d:4,scannet:2,s3dis:1")
    assert mixed.ratios == (2, 4, 1) and [c for c, _ in mixed.parts] == ["ScanNet", "Structured3D", "S3DIS"]
    assert mixed.condition(1) == "ScanNet" and mixed.condition(2) == "Structured3D" and mixed[0] == "a"
    assert mixed.steps_per_epoch(3) == 2 * 7  # 3 own batches: two whole cycles


@pytest.mark.slow
def test_ppt_trains_over_three_datasets_each_batch_under_its_condition(tiny_root: Path, tmp_path: Path) -> None:
    from bench.finetune.engine import fit_and_evaluate
    from bench.recipes import get_finetune_recipe
    from tasks.datasets import task_scenes

    spec = get_task("scannet-semseg")
    recipe = get_finetune_recipe("tiny", ["epochs=1", "batch_size=2", "max_points=1500", "semseg.ppt=True",
                                          "semseg.datasets=structured3d:2,scannet:1,s3dis:1"])
    from bench.finetune.engine import prepare_run

    kind, ctx = prepare_run(spec, "spunet-v1m3-mini", 0, recipe, False, "cpu", tmp_path / "run")
    train = kind.training_data(ctx, tiny_root)
    assert len(train) == 2 + 2 + 2  # ScanNet's, Structured3D's and S3DIS's training rooms of the tiny suite
    result = fit_and_evaluate(spec, "spunet-v1m3-mini", train, task_scenes(spec, tiny_root, "val"), recipe=recipe,
                              artifacts=tmp_path / "run", steps_per_epoch=kind.steps_per_epoch(spec, tiny_root, train,
                                                                                                recipe))
    assert result.facts.steps == 4 and 0.0 <= result.scores["mIoU"] <= 1.0  # 1 ScanNet, 2 Structured3D, 1 S3DIS
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    for condition in ("ScanNet", "S3DIS", "Structured3D"):  # every dataset's norms saw its batches
        index = ("ScanNet", "S3DIS", "Structured3D").index(condition)
        means = torch.cat([v for k, v in state.items() if k.endswith(f".bns.{index}.running_mean")])
        assert means.abs().sum() > 0, condition
