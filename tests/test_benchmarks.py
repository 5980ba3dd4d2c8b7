"""Task registry, metrics (against nuscenes-devkit), data-efficient subsets, fine-tuning, the matrix runner
and the leaderboard."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.finetune import NotApplicable, finetune, load_export
from bench.matrix.leaderboard import LeaderboardError, leaderboard
from bench.matrix.records import RunRecord, read_records, write_record
from bench.matrix.runner import execute, expand, run_matrix
from bench.recipes import get_finetune_recipe
from tasks.datasets import limit_annotations, limited_scenes, task_scenes
from tasks.heads.segmentation import lovasz_softmax
from tasks.metrics import ConfusionMatrix
from tasks.spec import get_task, list_tasks
from tasks.structures import Scene


def test_registry_declares_the_eleven_benchmarks() -> None:
    expected = {"scannet-semseg": 77.0, "scannet200-semseg": 32.3, "s3dis-area5-semseg": 73.2,
                "scannet-insseg": 62.6, "scannet200-insseg": 30.5, "scannet-de-lr1": 34.6, "scannet-de-lr20": 68.2,
                "scannet-de-la20": 67.0, "scannet-de-la200": 74.8, "semantickitti-semseg": 71.5,
                "nuscenes-lidarseg": 79.4, "nuscenes-det-lidar": 70.6, "nuscenes-det-camera": 47.4,
                "nuscenes-det-fusion": 73.2}
    for task, reference in expected.items():
        assert get_task(task).reference == reference, task
    assert list_tasks(runnable=False) == []  # every benchmark column has a pipeline
    assert list_tasks("scannet-de-l*") == sorted(f"scannet-de-{p}" for p in
                                                 ("la20", "la50", "la100", "la200", "lr1", "lr5", "lr10", "lr20"))
    with pytest.raises(KeyError, match="unknown task"):
        get_task("kitti-detection")
    spec = get_task("scannet-semseg")
    with pytest.raises(AttributeError):
        spec.version = 2  # frozen


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_miou_matches_nuscenes_devkit_on_random_predictions(seed: int) -> None:
    """The oracle: nuscenes-devkit's lidarseg ConfusionMatrix (class 0 = ignored, so labels are shifted by 1)."""
    from nuscenes.eval.lidarseg.utils import ConfusionMatrix as DevkitMatrix

    rng = np.random.default_rng(seed)
    ours, theirs = ConfusionMatrix(16), DevkitMatrix(17, ignore_idx=0)
    for _ in range(3):
        target = rng.integers(-1, 16, 5000)
        target[target == 7] = 3  # a class absent from the ground truth
        prediction = rng.integers(0, 16, 5000)
        ours.update(target, prediction)
        theirs.update(target + 1, prediction + 1)
    devkit_iou = np.array(theirs.get_per_class_iou())[1:]
    np.testing.assert_allclose(ours.iou(), devkit_iou, rtol=1e-12)
    # the devkit's mean counts class 7 (predicted, never true) as 0; ours averages the classes present
    assert devkit_iou[7] == 0.0
    assert ours.scores()["mIoU"] == pytest.approx(np.delete(devkit_iou, 7).mean(), rel=1e-12)
    ours.update(np.full(100, 7), np.full(100, 7))
    theirs.update(np.full(100, 8), np.full(100, 8))
    assert ours.scores()["mIoU"] == pytest.approx(theirs.get_mean_iou(), rel=1e-12)  # all present: the same


def test_metrics_by_hand() -> None:
    matrix = ConfusionMatrix(4).update(np.array([0, 0, 1, 1, -1, 2]), np.array([0, 1, 1, 1, 2, 0]))
    scores = matrix.scores(("a", "b", "c", "d"))
    assert scores["per_class_iou"] == {"a": 1 / 3, "b": 2 / 3, "c": 0.0, "d": None}
    assert scores["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert scores["allAcc"] == pytest.approx(3 / 5) and scores["mAcc"] == pytest.approx((0.5 + 1 + 0) / 3)
    only_predicted = ConfusionMatrix(3).update(np.array([0, 0, 1]), np.array([0, 2, 1])).scores()
    assert only_predicted["per_class_iou"]["2"] == 0.0  # predicted, never true: IoU 0, as the devkit has it
    assert only_predicted["mIoU"] == pytest.approx((1 / 2 + 1) / 2)  # the mean is over the classes present
    with pytest.raises(ValueError, match="outside"):
        ConfusionMatrix(3).update(np.array([0, 5]), np.array([0, 1]))


def test_lovasz_softmax_is_zero_for_a_perfect_prediction_and_differentiable() -> None:
    labels = torch.tensor([0, 1, 2, 2, -1])
    perfect = torch.nn.functional.one_hot(labels.clamp(min=0), 3).float() * 50
    assert float(lovasz_softmax(perfect, labels)) == pytest.approx(0.0, abs=1e-6)
    logits = torch.randn(5, 3, requires_grad=True)
    loss = lovasz_softmax(logits, labels)
    loss.backward()
    assert 0 < float(loss.detach()) <= 1 and logits.grad.abs().sum() > 0


def test_data_efficient_subsets_are_deterministic(tmp_path: Path) -> None:
    names = [f"scene{i:04d}_00" for i in range(100)]
    picked = limited_scenes(names, 0.05, tmp_path)
    assert len(picked) == 5 and picked == limited_scenes(list(reversed(names)), 0.05, tmp_path)
    (tmp_path / "tasks" / "scenes").mkdir(parents=True)
    (tmp_path / "tasks" / "scenes" / "5.txt").write_text("scene0003_00\nscene0042_00\n")
    assert limited_scenes(names, 0.05, tmp_path) == ["scene0003_00", "scene0042_00"]
    scene = Scene("scene0000_00", np.zeros((500, 3), np.float32), segment=np.arange(500) % 4)
    a, b = limit_annotations(scene, 20), limit_annotations(scene, 20)
    assert (a.segment >= 0).sum() == 20 and np.array_equal(a.segment, b.segment)
    kept = a.segment >= 0
    assert np.array_equal(a.segment[kept], scene.segment[kept])


def test_the_mini_suite_makes_the_lr_tasks_different(tmp_path: Path) -> None:
    """LR1/5/10/20 are four tasks on the mini suite, not one: its training split is large enough."""
    from tasks.synth.suite import suite_size

    names = [f"scene{i:04d}_00" for i in range(suite_size("mini").scannet_scenes[0])]
    sizes = [len(limited_scenes(names, get_task(f"scannet-de-lr{pct}").protocol_value, tmp_path))
             for pct in (1, 5, 10, 20)]
    assert sizes == sorted(set(sizes)), sizes


def test_task_scenes_apply_the_protocol(tiny_root: Path) -> None:
    full = task_scenes(get_task("scannet-semseg"), tiny_root, "train")
    lr = task_scenes(get_task("scannet-de-lr1"), tiny_root, "train")
    la = task_scenes(get_task("scannet-de-la20"), tiny_root, "train")
    assert len(full) == 2 and len(lr) == 1 and len(la) == 2
    assert (la[0].segment >= 0).sum() == 20
    assert len(task_scenes(get_task("scannet-semseg"), tiny_root, "val")) == 1
    with pytest.raises(FileNotFoundError, match="data for task"):
        task_scenes(get_task("scannet-semseg"), tiny_root / "nowhere", "train")


def test_limited_reconstruction_trains_as_many_steps_as_the_full_split(tiny_root: Path) -> None:
    recipe = replace(get_finetune_recipe("tiny"), batch_size=1, epochs=1)
    full = finetune(get_task("scannet-semseg"), "spunet-micro", tiny_root, recipe=recipe)
    lr1 = finetune(get_task("scannet-de-lr1"), "spunet-micro", tiny_root, recipe=recipe)
    assert (full.facts.train_scenes, lr1.facts.train_scenes) == (2, 1)
    assert full.facts.steps == lr1.facts.steps == 2


def test_every_finetune_preset_names_its_pretraining() -> None:
    from bench.recipes import FINETUNE_PRESETS, PRETRAIN_FOR_FINETUNE, pretrain_recipe_for

    assert set(PRETRAIN_FOR_FINETUNE) == set(FINETUNE_PRESETS)
    for domain in ("indoor", "outdoor"):
        mini, small = (pretrain_recipe_for(p, domain, "spunet-mini") for p in ("mini", "small"))
        assert small.epochs > mini.epochs and small.grid == mini.grid and small.backbone == "spunet-mini"
        assert pretrain_recipe_for("reference", domain, "spunet-v1m1").grid != mini.grid


def test_the_probe_normalises_frozen_features_on_the_task_data(tiny_root: Path) -> None:
    """Before the head is fitted, the frozen backbone's BatchNorm statistics are recomputed on the training scenes
    (labels unused); its weights stay as they were."""
    from backbones.registry import create_backbone
    from bench.finetune import engine

    seen: list[torch.nn.Module] = []
    original = engine.precise_batchnorm

    def spy(module: torch.nn.Module, inputs: object, keep: torch.nn.Module | None = None) -> None:
        seen.append(module)
        before = {k: v.clone() for k, v in module.state_dict().items() if "running" not in k and "num_batches" not in k}
        original(module, inputs, keep)
        assert all(torch.equal(v, module.state_dict()[k]) for k, v in before.items())

    engine.precise_batchnorm = spy
    try:
        result = finetune(get_task("scannet-semseg"), "spunet-micro", tiny_root, recipe=get_finetune_recipe("tiny"),
                          linear_probe=True)
    finally:
        engine.precise_batchnorm = original
    assert 0.0 <= result.scores["mIoU"] <= 1.0
    assert type(seen[0]) is type(create_backbone("spunet-micro"))  # the backbone alone, first
    norms = [m for m in seen[0].modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert norms and all(float(m.running_var.mean()) != 1.0 for m in norms)  # not the initial statistics


def test_protocols_expand_to_finetune_and_probe_runs(tmp_path: Path) -> None:
    runs = expand(backbones=["spunet-micro"], inits=["scratch", "ponder"], tasks="scannet-semseg", seeds=[0],
                  data_roots=("data",), results=str(tmp_path), protocols=["finetune", "probe"])
    assert [(r.init, r.protocol) for r in runs] == [
        ("scratch", "full"), ("ponder", "full"), ("random", "full+linear-probe"), ("ponder", "full+linear-probe")]
    same = expand(backbones=["spunet-micro"], inits=["random", "scratch"], tasks="scannet-semseg", seeds=[0],
                  data_roots=("data",), results=str(tmp_path), protocols=["probe"])
    assert [r.init for r in same] == ["random"]  # scratch and random name one init
    with pytest.raises(ValueError, match="unknown protocol 'prob'.*did you mean probe"):
        expand(backbones=["spunet-micro"], inits=["scratch"], tasks="scannet-semseg", seeds=[0],
               data_roots=("data",), results=str(tmp_path), protocols=["prob"])


def test_finetune_learns_and_refuses_what_does_not_apply(tiny_root: Path, tmp_path: Path) -> None:
    spec = get_task("semantickitti-semseg")
    result = finetune(spec, "spunet-micro", tiny_root, seed=0, recipe=get_finetune_recipe("tiny"))
    assert 0.0 <= result.scores["mIoU"] <= 1.0 and result.scores["eval_points"] > 0 and len(result.per_class) == 19
    with pytest.raises(NotApplicable, match="2D backbone"):
        finetune(spec, "timm:resnet18", tiny_root)
    with pytest.raises(NotApplicable, match="no fine-tuning pipeline"):
        finetune(replace(get_task("semantickitti-semseg"), runnable=False), "spunet-micro", tiny_root)


def test_load_export_checks_name_hash_and_channels(tmp_path: Path) -> None:
    from backbones.registry import create_backbone

    backbone = create_backbone("spunet-micro")
    torch.save(backbone.state_dict(), tmp_path / "backbone.pt")
    import hashlib

    digest = hashlib.sha256((tmp_path / "backbone.pt").read_bytes()).hexdigest()
    meta = {"backbone": "spunet-micro", "sha256": digest, "config": {"in_channels": 6}}
    (tmp_path / "backbone.json").write_text(json.dumps(meta))
    assert load_export(create_backbone("spunet-micro"), tmp_path, "spunet-micro", 6) == digest
    with pytest.raises(NotApplicable, match="4"):
        load_export(create_backbone("spunet-micro", in_channels=4), tmp_path, "spunet-micro", 4)
    with pytest.raises(NotApplicable, match="not 'spunet-mini'"):
        load_export(create_backbone("spunet-mini"), tmp_path, "spunet-mini", 6)
    (tmp_path / "backbone.json").write_text(json.dumps({**meta, "sha256": "0" * 64}))
    with pytest.raises(ValueError, match="does not match"):
        load_export(create_backbone("spunet-micro"), tmp_path, "spunet-micro", 6)


def test_matrix_records_skips_and_resumes(tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "results"
    from tasks import spec as registry

    # a task without a pipeline yet (every benchmark has one now): its records say not-runnable, never a score
    monkeypatch.setitem(registry._REGISTRY, "scannet-semseg", replace(get_task("scannet-semseg"), runnable=False))
    runs = expand(backbones=["spunet-micro"], inits=["scratch"],
                  tasks="semantickitti-semseg,scannet-semseg,nuscenes-lidarseg-samples", seeds=[0, 1],
                  data_roots=(str(tiny_root),), results=str(results), preset="tiny")
    assert len(runs) == 6
    records = run_matrix(runs, progress=False)
    by_task = {}
    for r in records:
        by_task.setdefault(r.task, set()).add(r.status)
    assert by_task == {"semantickitti-semseg": {"ok"}, "scannet-semseg": {"not-runnable"},
                       "nuscenes-lidarseg-samples": {"skipped"}}
    missing = next(r for r in records if r.task == "nuscenes-lidarseg-samples")
    assert missing.expected_path == str(tiny_root / "nuscenes-lidarseg-samples")
    ok = next(r for r in records if r.status == "ok")
    assert ok.main_value == ok.metrics["mIoU"] and ok.wall_s > 0 and ok.peak_rss_bytes > 0
    assert ok.git_sha and ok.packages["torch"] and ok.data_fingerprint and ok.data_source == "generated"
    from bench.finetune.engine import check_task_settings

    assert ok.finetune_recipe == asdict(check_task_settings(get_finetune_recipe("tiny")))  # task settings canonical
    from bench.matrix.runner import finished

    done = next(r for r in runs if r.task == "semantickitti-semseg")
    assert finished(done) is not None and finished(replace(done, overrides=("epochs=3",))) is None
    tiny, small = asdict(get_finetune_recipe("tiny")), asdict(get_finetune_recipe("small"))
    same_recipe = replace(done, preset="small", overrides=tuple(f"{k}={v!r}" for k, v in tiny.items() if v != small[k]))
    assert finished(same_recipe) is not None  # scratch: the preset changes nothing else
    ponder = _record("semantickitti-semseg", "ponder", 0, 0.5, version=get_task("semantickitti-semseg").version)
    ponder.backbone, ponder.finetune_preset = "spunet-micro", "tiny"
    ponder.finetune_recipe = asdict(check_task_settings(get_finetune_recipe("tiny")))
    write_record(results, ponder)
    assert finished(replace(done, init="ponder")) is not None
    assert finished(replace(same_recipe, init="ponder")) is None  # its init was pre-trained under another preset

    # finished runs are not run again; a failing run is recorded and the matrix goes on
    import bench.matrix.runner as runner

    def boom(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("simulated crash")

    monkeypatch.setattr("bench.finetune.finetune", boom)
    again = run_matrix(runs, progress=False)
    assert [r.status for r in again] == [r.status for r in records]
    redo = run_matrix([r for r in runs if r.task == "semantickitti-semseg"][:1], overwrite=True, progress=False)
    assert redo[0].status == "failed" and "simulated crash" in redo[0].error
    assert runner.execute is execute


def test_debug_executor_runs_through_submitit(tiny_root: Path, tmp_path: Path) -> None:
    runs = expand(backbones=["spunet-micro"], inits=["scratch"], tasks="scannet-insseg", seeds=[0],
                  data_roots=(str(tiny_root),), results=str(tmp_path), preset="tiny")
    records = run_matrix(runs, executor="debug", progress=False)
    assert records[0].status == "ok", records[0].error
    assert records[0].main_score == "AP50" and records[0].main_value == records[0].metrics["AP50"]
    assert {"mAP", "AP25", "semantic_mIoU"} <= set(records[0].metrics) and "chair" in records[0].per_class
    assert runs[0].picture_path().is_file()  # the instance picture, beside the tables
    assert (tmp_path / "slurm").is_dir()


def _record(task: str, init: str, seed: int, value: float, version: int = 1, probe: bool = False) -> RunRecord:
    spec = get_task(task)
    protocol = spec.protocol + ("+linear-probe" if probe else "")
    return RunRecord(task=task, task_version=version, backbone="spunet-mini", init=init, protocol=protocol,
                     seed=seed, status="ok", main_score="mIoU", main_value=value, metrics={"mIoU": value})


def test_leaderboard_is_deterministic_and_refuses_ambiguity(tmp_path: Path) -> None:
    results = tmp_path / "results"
    for seed, (a, b) in enumerate([(0.40, 0.50), (0.42, 0.52), (0.44, 0.48)]):
        write_record(results, _record("scannet-semseg", "scratch", seed, a))
        write_record(results, _record("scannet-semseg", "ponder", seed, b))
        write_record(results, _record("scannet-semseg", "random", seed, 0.1 + seed / 100, probe=True))
        write_record(results, _record("scannet-semseg", "ponder", seed, 0.15 + seed / 100, probe=True))
    write_record(results, _record("scannet-semseg", "export:mine", 0, 0.0))
    write_record(results, _record("semantickitti-semseg", "scratch", 0, 0.3))
    tables = leaderboard(results, tmp_path / "t1")
    leaderboard(results, tmp_path / "t2")
    for path in sorted((tmp_path / "t1").iterdir()):
        assert path.read_bytes() == (tmp_path / "t2" / path.name).read_bytes(), path.name
    task = tables["task_scannet-semseg"]
    assert list(task["mIoU"]) == ["0.0", "50.0 ± 2.0", "16.0 ± 1.0", "11.0 ± 1.0", "42.0 ± 2.0"]
    assert tables["paper"].set_index("task").loc["scannet-semseg", "shown as"] == "footnote (generated data)"
    gain = tables["gain"].set_index(["init", "against"])
    assert gain.loc[("ponder", "scratch"), "scannet-semseg"] == "+8.0 ± 3.5"  # diffs +10, +10, +4: noise (n=3)
    assert gain.loc[("ponder", "random"), "scannet-semseg"] == "+5.0 ± 0.0 *"  # probe: ponder vs frozen random
    assert gain.loc[("ponder", "random"), "protocol"] == "full+linear-probe"
    assert gain.loc[("export:mine", "scratch"), "scannet-semseg"] == "-40.0"  # any pre-trained export, one seed
    overall = tables["overall"].set_index("backbone / init")
    assert overall.loc["spunet-mini / scratch", "semantickitti-semseg"] == "30.0"
    assert overall.loc["spunet-mini / ponder", "semantickitti-semseg"] == "–"

    write_record(results, _record("scannet-semseg", "scratch", 5, 0.4, version=2))
    with pytest.raises(LeaderboardError, match="versions"):
        leaderboard(results, tmp_path / "t3")
    shutil.rmtree(results / "runs" / "records" / "scannet-semseg@2")
    duplicate = results / "runs" / "records" / "copy" / "seed0.json"
    duplicate.parent.mkdir()
    duplicate.write_text(json.dumps(asdict(_record("scannet-semseg", "scratch", 0, 0.41))))
    with pytest.raises(LeaderboardError, match="with different content"):
        leaderboard(results, tmp_path / "t4")
    assert len(read_records(results)) == 15


def test_the_report_is_one_self_contained_page(tmp_path: Path) -> None:
    import re

    results = tmp_path / "results"
    for seed in range(2):
        record = _record("scannet-semseg", "scratch", seed, 0.4 + seed / 10)
        record.git_sha, record.data_fingerprint, record.finetune_preset = "abcdef1234567", "f" * 64, "small"
        write_record(results, record)
        write_record(results, _record("scannet-semseg", "ponder", seed, 0.5 + seed / 10))
    picture = results / "tables" / "predictions" / "scannet-semseg_spunet-mini_ponder_full_seed0.png"
    picture.parent.mkdir(parents=True)
    picture.write_bytes(b"\x89PNG fake")
    leaderboard(results)
    page = (results / "tables" / "index.html").read_text()
    for part in ("Overall", "Gain of pre-training", "+10.0 ± 0.0 *", "Paper numbers and their setups", "Provenance",
                 "abcdef1234", "ffffffffffff", "small"):
        assert part in page, part
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)  # plot + picture
    assert not list((results / "tables").glob("task_*.html"))


def test_linear_probe_trains_only_the_head() -> None:
    from backbones.registry import create_backbone
    from backbones.structures import PointBatch
    from tasks.heads.segmentation import SegmentationModel

    rng = np.random.default_rng(0)
    coord = rng.random((400, 3)).astype(np.float32)
    batch = PointBatch.collate([(coord, (coord * 20).astype(np.int64), rng.random((400, 6)))])
    model = SegmentationModel(create_backbone("spunet-micro"), 16, 5, freeze_backbone=True).train()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    torch.nn.functional.cross_entropy(model(batch), torch.from_numpy(rng.integers(0, 5, 400))).backward()
    assert all(p.grad is None for p in model.backbone.parameters()) and model.head.weight.grad is not None
    assert not model.backbone.training, "a frozen backbone keeps its BatchNorm statistics"
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in before.items())


def test_local_workers_run_in_separate_processes(tiny_root: Path, tmp_path: Path) -> None:
    runs = expand(backbones=["spunet-micro", "spunet-mini"], inits=["scratch"], tasks="nuscenes-lidarseg*,s3dis*",
                  seeds=[0], data_roots=(str(tmp_path / "no-data"),), results=str(tmp_path), preset="tiny")
    records = run_matrix(runs, workers=2, progress=False)  # cheap runs: every one is skipped, in a worker
    assert len(records) == 8 and {r.status for r in records} == {"skipped"}
    assert len(read_records(tmp_path)) == 8


def test_prediction_covers_every_point_with_few_fragments() -> None:
    """Thousands of returns in one voxel (as in real nuScenes sweeps) cost at most max_fragments passes."""
    from backbones.registry import create_backbone
    from bench.finetune.semseg import predict_scene
    from tasks.heads.segmentation import SegmentationModel
    from tasks.transforms import IDENTITY_VIEW

    rng = np.random.default_rng(0)
    coord = np.concatenate([rng.random((300, 3)) * 5, np.zeros((2000, 3))]).astype(np.float32)
    scene = Scene("pile", coord, strength=np.ones((len(coord), 1), np.float32))
    calls = []
    model = SegmentationModel(create_backbone("spunet-micro", in_channels=4), 16, 3).eval()
    model.register_forward_hook(lambda *args: calls.append(1))
    four = get_finetune_recipe("mini").tta_views
    for views in ((IDENTITY_VIEW,), four):
        calls.clear()
        pred = predict_scene(model, scene, 0.1, "outdoor", 3, torch.device("cpu"), views, max_fragments=4)
        assert pred.shape == (len(coord),) and len(calls) == 4 * len(views)
        assert len(set(pred[300:].tolist())) == 1, "the points of one voxel share its vote"


def test_every_task_names_a_known_loader() -> None:
    """Not-yet-runnable tasks too: their loader is a key of the one resolver, not a dataset folder name."""
    from tasks.datasets import DATASETS

    for task in list_tasks():
        assert get_task(task).loader in DATASETS, task


def test_typed_specs_refuse_unknown_types_and_positional_construction() -> None:
    from dataclasses import replace

    from bench.finetune.engine import task_type

    spec = get_task("scannet-semseg")
    with pytest.raises(KeyError, match="no task type 'segmentation' is registered; known: detection, insseg"):
        task_type(replace(spec, task_type="segmentation"))
    with pytest.raises(ValueError, match="domain must be one of"):
        replace(spec, domain="underwater")
    with pytest.raises(TypeError):
        type(spec)("x", 1)  # keyword-only


def test_records_are_read_back_typed_and_checked(tmp_path: Path) -> None:
    from bench.matrix.records import SCHEMA, RecordError

    path = write_record(tmp_path, _record("scannet-semseg", "scratch", 0, 0.5))
    assert RunRecord.from_json(path) == _record("scannet-semseg", "scratch", 0, 0.5)
    raw = json.loads(path.read_text())
    for change, message in (({"schema": SCHEMA + 1}, "schema"), ({"status": "great"}, "'status'"),
                            ({"seed": "zero"}, "'seed'"), ({"colour": "blue"}, "unknown fields")):
        path.write_text(json.dumps({**raw, **change}))
        with pytest.raises(RecordError, match=rf"^{path}: .*{message}"):
            RunRecord.from_json(path)
    old = {k: v for k, v in raw.items() if k != "facts"}  # schema 2 kept the run facts among the metrics
    path.write_text(json.dumps({**old, "schema": 2, "metrics": {"mIoU": 0.5, "steps": 300, "train_scenes": 8}}))
    migrated = RunRecord.from_json(path)
    assert migrated.metrics == {"mIoU": 0.5} and migrated.facts == {"steps": 300, "train_scenes": 8}
    assert migrated.schema == SCHEMA


def test_slurm_pretraining_is_a_job_and_its_failure_fails_the_runs(tiny_root: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The ponder init's pre-training is submitted like the fine-tunes (never run on the login node), and a failed
    pre-training gives failed records with its reason, not a fake export path."""
    import submitit

    import bench.matrix.runner as runner

    submitted = []
    real_submit = submitit.AutoExecutor.submit

    def spy(self, fn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        submitted.append(fn.fn.__name__)  # every job requeues itself on preemption (a Checkpointable wrapper)
        return real_submit(self, fn, *args, **kwargs)

    def no_gpu(job: object) -> str:
        raise RuntimeError("no GPU on this node")

    monkeypatch.setattr(submitit.AutoExecutor, "submit", spy)
    monkeypatch.setattr(runner, "pretrain", no_gpu)
    runs = expand(backbones=["spunet-micro"], inits=["ponder"], tasks="semantickitti-semseg", seeds=[0, 1],
                  data_roots=(str(tiny_root),), results=str(tmp_path), preset="tiny")
    records = run_matrix(runs, executor="debug", progress=False)
    assert submitted == ["pretrain_job", "execute", "execute"]
    for record in records:
        assert record.status == "failed" and record.init_path is None
        assert record.error == "pre-training failed: RuntimeError: no GPU on this node"


def test_the_backbone_may_learn_slower_than_the_head() -> None:
    from backbones.registry import create_backbone
    from bench.optim import make_optimizer
    from tasks.heads.segmentation import SegmentationModel

    model = SegmentationModel(create_backbone("spunet-micro"), 16, 5)
    recipe = replace(get_finetune_recipe("tiny"), backbone_lr_scale=0.1)
    optimizer, peaks = make_optimizer(model, recipe)
    backbone, head = optimizer.param_groups
    assert peaks == [pytest.approx(recipe.lr * 0.1), recipe.lr]
    assert len(head["params"]) == 2 and len(backbone["params"]) == len(list(model.backbone.parameters()))
    frozen = SegmentationModel(create_backbone("spunet-micro"), 16, 5, freeze_backbone=True)
    probe, peaks = make_optimizer(frozen, recipe)
    assert len(probe.param_groups) == 1 and peaks == [recipe.lr]  # a frozen backbone has nothing to train


def test_local_schedule_runs_each_once_and_ponder_runs_after_their_pretraining(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """One local pool: runs that need no export go first beside the pre-trainings (fine-tunes before probes);
    a ponder run waits for its export, gets its path (or its error); nothing runs twice."""
    import bench.matrix.runner as runner

    events: list[str] = []

    def fake_pretrain(job: runner.PretrainJob) -> tuple[str | None, str | None]:
        events.append(f"pretrain {job.mode}")
        return (None, "RuntimeError: no data") if job.mode == "outdoor" else (f"/exports/{job.mode}", None)

    def fake_execute(run: runner.RunSpec) -> str:
        events.append(f"{run.task} {run.init} {run.protocol}")
        assert run.init != "ponder" or (run.init_path, run.pretrain_error) in (
            ("/exports/indoor", None), (None, "RuntimeError: no data"))
        return f"record of {run.name}"

    monkeypatch.setattr(runner, "pretrain_job", fake_pretrain)
    monkeypatch.setattr(runner, "execute", fake_execute)
    runs = expand(backbones=["spunet-micro"], inits=["scratch", "ponder"], protocols=["probe", "finetune"],
                  tasks="scannet-semseg,semantickitti-semseg", seeds=[0], data_roots=("data",),
                  results=str(tmp_path))
    records = run_matrix(runs, workers=1, progress=False)
    assert records == [f"record of {run.name}" for run in runs]
    assert len(events) == len(runs) + 2 and len(set(events)) == len(events), "each job once"
    assert events[:2] == ["pretrain indoor", "pretrain outdoor"]
    independent = events[2:6]
    assert all("ponder" not in e for e in independent)
    assert [("probe" in e) for e in independent] == [False, False, True, True], "fine-tunes first"
    assert run_matrix([], workers=2, progress=False) == [], "nothing to do starts no pool"
