"""``create_backbone(name, checkpoint=PATH)`` reads the files people have: the suite's exports, Pointcept / PonderV2
trainer checkpoints (the backbone under ``module.backbone.``, beside heads or a renderer), plain state dicts.

The trainer checkpoints here are written in the original's key scheme, so no checkout is needed; that the names
and the computation match the original code is checked by ``python -m bench.perf.against_original`` (README).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from backbones.registry import create_backbone, get_backbone_config, list_backbones
from bench.cli import main
from bench.matrix.records import RunRecord, record_files
from tasks.errors import DataFormatError

SMALL = [n for n in list_backbones(modality="3d") if get_backbone_config(n).params <= 5_000_000]


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize("name", SMALL)
def test_a_trainer_checkpoint_in_the_original_key_scheme_loads(name: str, tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = create_backbone(name)
    path = tmp_path / "model_last.pth"
    state = {f"module.backbone.{k}": v for k, v in source.state_dict().items()}
    state["module.seg_head.weight"] = torch.zeros(20, 8)  # a segmentor's head: outside the backbone
    torch.save({"epoch": 3, "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}, path)
    torch.manual_seed(2)
    loaded = create_backbone(name, checkpoint=path)
    assert _same(source, loaded)
    report = loaded.checkpoint
    assert (report.layout, report.prefix, report.missing, report.unexpected, report.outside) == \
        ("trainer", "module.backbone.", (), (), 1)
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_spunet_names_are_the_originals_and_the_suites_older_names_still_load(tmp_path: Path) -> None:
    source = create_backbone("spunet-micro")
    names = list(source.state_dict())
    assert names[0] == "conv_input.0.weight" and "enc.0.block0.conv1.weight" in names
    old = {k.replace("conv_input.", "stem.").replace(".block", "."): v for k, v in source.state_dict().items()}
    assert "stem.0.weight" in old and "enc.0.0.conv1.weight" in old
    torch.save(old, tmp_path / "old.pt")
    assert _same(source, create_backbone("spunet-micro", checkpoint=tmp_path / "old.pt"))
    fresh = create_backbone("spunet-micro")
    fresh.load_state_dict(old)  # the export and checkpoint loaders go through load_state_dict too
    assert _same(source, fresh)


def test_the_backbone_inside_a_suite_pretraining_checkpoint_and_an_export(tmp_path: Path) -> None:
    source = create_backbone("spunet-micro")
    ponder = {**{f"backbone.{k}": v for k, v in source.state_dict().items()}, "volume.weight": torch.ones(3)}
    torch.save({"model": ponder, "step": 10}, tmp_path / "checkpoint.pt")
    loaded = create_backbone("spunet-micro", checkpoint=tmp_path / "checkpoint.pt")
    assert _same(source, loaded) and loaded.checkpoint.prefix == "backbone." and loaded.checkpoint.outside == 1
    export = tmp_path / "export"
    export.mkdir()
    torch.save(source.state_dict(), export / "backbone.pt")
    (export / "backbone.json").write_text(json.dumps({"backbone": "spunet-micro"}))
    loaded = create_backbone("spunet-micro", checkpoint=export)
    assert _same(source, loaded) and loaded.checkpoint.layout == "export"


def test_shape_mismatches_and_missing_or_unexpected_keys_are_named(tmp_path: Path) -> None:
    state = create_backbone("spunet-micro").state_dict()
    wrong = {**state, "conv_input.0.weight": torch.zeros(8, 5, 5, 5, 4)}  # pre-trained on 4 input channels
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(DataFormatError, match=r"wrong.pt: conv_input.0.weight: shape \(8, 5, 5, 5, 4\) in the file, "
                                              r"\(8, 5, 5, 5, 6\) in spunet-micro"):
        create_backbone("spunet-micro", checkpoint=tmp_path / "wrong.pt")
    partial = {k: v for k, v in state.items() if not k.startswith("up.")} | {"extra.weight": torch.ones(1)}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(DataFormatError, match=r"missing up\.0\.0\.weight.*; unexpected extra\.weight"):
        create_backbone("spunet-micro", checkpoint=tmp_path / "partial.pt")
    loaded = create_backbone("spunet-micro", checkpoint=tmp_path / "partial.pt", strict=False)
    assert loaded.checkpoint.unexpected == ("extra.weight",) and all(k.startswith("up.")
                                                                     for k in loaded.checkpoint.missing)


def test_inits_take_a_trainer_checkpoint(tiny_root: Path, tmp_path: Path) -> None:
    source = create_backbone("spunet-micro", in_channels=4)  # the outdoor input contract
    path = tmp_path / "model_best.pth"
    torch.save({"state_dict": {f"module.backbone.{k}": v for k, v in source.state_dict().items()}}, path)
    results = tmp_path / "results"
    assert main(["run", "--data", str(tiny_root), "--tasks", "semantickitti-semseg", "--inits", str(path),
                 "--preset", "tiny", "--backbones", "spunet-micro", "--protocols", "finetune", "--results",
                 str(results), "--no-progress", "--workers", "1", "epochs=1"]) == 0
    (record,) = [RunRecord.from_json(f) for f in record_files(results)]
    assert record.status == "ok", record.error
    assert record.init_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_segmentors_classifier_inside_the_backbone_is_outside_it(tmp_path: Path) -> None:
    source = create_backbone("spunet-micro")
    state = {f"module.backbone.{k}": v for k, v in source.state_dict().items()}
    state |= {"module.backbone.final.weight": torch.zeros(20, 1, 1, 1, 16),
              "module.backbone.final.bias": torch.zeros(20)}
    torch.save({"state_dict": state}, tmp_path / "segmentor.pth")
    loaded = create_backbone("spunet-micro", checkpoint=tmp_path / "segmentor.pth")  # strict: final is not unexpected
    assert _same(source, loaded) and loaded.checkpoint.outside == 2


def test_another_architecture_is_refused_even_when_not_strict(tmp_path: Path) -> None:
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "linear.pt")
    with pytest.raises(DataFormatError, match=r"is not a spunet-micro: 0 of its \d+ tensors.*unexpected weight, bias"):
        create_backbone("spunet-micro", checkpoint=tmp_path / "linear.pt", strict=False)
    pdnorm = {f"module.backbone.conv_input.0.bn.bns.{i}.weight": torch.ones(8) for i in range(3)}
    torch.save({"state_dict": pdnorm}, tmp_path / "ppt.pth")
    with pytest.raises(DataFormatError, match="PDNorm's: a SpUNet-v1m3 / PPT model"):
        create_backbone("spunet-micro", checkpoint=tmp_path / "ppt.pth")


def test_a_pickled_scheduler_of_an_old_trainer_checkpoint_is_refused_with_a_way_out(tmp_path: Path) -> None:
    source = create_backbone("spunet-micro")
    optimizer = torch.optim.SGD(source.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    torch.save({"state_dict": source.state_dict(), "scheduler": scheduler}, tmp_path / "old.pth")
    with pytest.raises(DataFormatError, match=r"would import .*OneCycleLR.*torch < 2.4 pickles its learning-rate"):
        create_backbone("spunet-micro", checkpoint=tmp_path / "old.pth")
