"""nuScenes detection: the devkit metric path, the head's box encoding, frames and augmentation, the three tracks
end to end, and the box conventions on the real multi-sensor sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.finetune.detection import (
    Detection,
    camera_inputs,
    detect,
    load_detector,
    random_similarity,
    sample_boxes,
    transform_boxes,
)
from bench.finetune.engine import finetune
from bench.recipes import get_finetune_recipe
from bench.runlog import METRICS, read_run_log
from tasks.errors import DataFormatError
from tasks.formats.nuscenes import NuScenesLidarSegDataset, read_mmdet3d_info
from tasks.heads.detection import REGRESSION, BEVGrid, decode, head_targets
from tasks.metrics.detection import (
    DETECTION_CLASSES,
    LidarBoxes,
    evaluate_submission,
    submission_entries,
    write_submission,
)
from tasks.spec import get_task, list_tasks

MOVING = {"vehicle.moving", "cycle.with_rider", "pedestrian.moving"}


@pytest.fixture(scope="module")
def every_class_val(tmp_path_factory: pytest.TempPathFactory) -> NuScenesLidarSegDataset:
    """A generated v1.0-mini whose mini_val scenes hold every detection class with LiDAR points (seed 5 does)."""
    from tasks.synth.nuscenes_tables import NuScenesWriter
    from tasks.synth.outdoor import NUSCENES_MIX, make_street

    root = tmp_path_factory.mktemp("every_class")
    writer = NuScenesWriter(root, "v1.0-mini", 5, (32, 18), 512)
    for i, name in enumerate(("scene-0103", "scene-0916")):
        rng = np.random.default_rng([5, i])
        writer.add_scene(name, make_street(rng, length=60.0, n_objects=30, mix=dict.fromkeys(NUSCENES_MIX, 0.1)), 2,
                         rng)
    writer.finish()
    return NuScenesLidarSegDataset(root, "val", "v1.0-mini")


def ground_truth_submission(data: NuScenesLidarSegDataset, path: Path, offset: float = 0.0,
                            skip: int = 0) -> Path:
    """The boxes the devkit scores (those with LiDAR points), written as predictions through our own path, shifted
    by ``offset`` metres along the LiDAR x axis; the first ``skip`` samples are left out."""
    results = {}
    for name in data.names[skip:]:
        sample = data.sensors(name, cameras=False)
        boxes = sample_boxes(sample, training=True)
        boxes.centers[:, 0] += offset
        results[name] = submission_entries(name, boxes, sample.lidar_to_global)
    return write_submission(path, results, "lidar")


def test_ground_truth_as_predictions_scores_perfectly(every_class_val: NuScenesLidarSegDataset, tmp_path: Path
                                                      ) -> None:
    classes = {n for name in every_class_val.names
               for n in sample_boxes(every_class_val.sensors(name, cameras=False), training=True).names}
    assert classes == set(DETECTION_CLASSES), "the fixture must hold every class"
    path = ground_truth_submission(every_class_val, tmp_path / "submission.json")
    scores = evaluate_submission(every_class_val.nusc, path, "mini_val", tmp_path / "eval")
    assert scores["mAP"] == pytest.approx(1.0)
    assert all(ap == pytest.approx(1.0) for ap in scores["per_class"].values())
    for error in ("mATE", "mASE", "mAOE"):
        assert scores[error] == pytest.approx(0.0, abs=1e-6), error
    assert scores["mAVE"] < 0.05  # the devkit's velocities are differences of annotations; ours are its own
    assert scores["mAAE"] == pytest.approx(0.0, abs=1e-6)  # attributes follow from the velocities


@pytest.mark.parametrize("offset", [0.75, 1.5, 3.0])
def test_shifted_boxes_lose_exactly_the_thresholds_below_the_shift(every_class_val: NuScenesLidarSegDataset,
                                                                   tmp_path: Path, offset: float) -> None:
    """The devkit matches by centre distance at 0.5, 1, 2 and 4 m: a box shifted by d is a hit exactly at the
    thresholds above d. TP errors are measured at 2 m: the translation error is d below it, and 1 (the devkit's
    value for a class without true positives) beyond it."""
    path = ground_truth_submission(every_class_val, tmp_path / "submission.json", offset)
    scores = evaluate_submission(every_class_val.nusc, path, "mini_val", tmp_path / "eval")
    for name, aps in scores["ap_by_threshold"].items():
        for threshold, ap in aps.items():
            assert ap == pytest.approx(1.0 if float(threshold) > offset else 0.0), (name, threshold)
    lost = sum(t < offset for t in (0.5, 1.0, 2.0, 4.0))
    assert scores["mAP"] == pytest.approx((4 - lost) / 4)
    assert scores["mATE"] == pytest.approx(offset if offset < 2.0 else 1.0, abs=1e-6)


def test_missing_sample_tokens_are_a_clear_error(every_class_val: NuScenesLidarSegDataset, tmp_path: Path) -> None:
    path = ground_truth_submission(every_class_val, tmp_path / "submission.json", skip=1)
    with pytest.raises(DataFormatError, match=r"submission.json.*1 missing"):
        evaluate_submission(every_class_val.nusc, path, "mini_val", tmp_path / "eval")


def test_generated_motion_gives_velocities_and_attributes(every_class_val: NuScenesLidarSegDataset) -> None:
    """The devkit's velocity (from consecutive annotations) is 0 for standing objects and the generated speed for
    moving ones, and the attribute says which; barriers and cones have none."""
    nusc = every_class_val.nusc
    attributes = {a["token"]: a["name"] for a in nusc.attribute}
    moving = standing = 0
    for ann in nusc.sample_annotation:
        category = nusc.get("category", nusc.get("instance", ann["instance_token"])["category_token"])["name"]
        names = {attributes[t] for t in ann["attribute_tokens"]}
        speed = float(np.hypot(*nusc.box_velocity(ann["token"])[:2]))
        if category.startswith("movable_object"):
            assert not names
        elif names & MOVING:
            moving += 1
            assert speed > 0.5, (category, names)
        else:
            standing += 1
            assert speed == pytest.approx(0.0, abs=1e-9), (category, names)
        assert ann["num_lidar_pts"] >= 0
    assert moving > 0 and standing > 0


def test_head_targets_decode_back_to_the_boxes() -> None:
    """A perfect heatmap and regression map decode to the boxes they were made from (offsets, log sizes, yaw as
    sin/cos and velocity all invert)."""
    grid = BEVGrid(extent=20.0, cells=40)
    boxes = LidarBoxes(centers=np.array([[3.3, -7.1, -0.4], [-12.2, 5.05, 0.8]]),
                       sizes=np.array([[1.9, 4.5, 1.6], [0.6, 0.7, 1.8]]), yaws=np.array([0.3, -2.8]),
                       velocities=np.array([[4.0, 1.0], [0.0, 0.0]]), names=["car", "pedestrian"],
                       scores=np.ones(2))
    targets = head_targets(boxes, grid)
    heat = torch.full((1, len(DETECTION_CLASSES), 40, 40), -10.0)
    heat[0][torch.from_numpy(targets.heatmap) == 1] = 10.0
    reg = torch.zeros(1, len(REGRESSION), 40 * 40)
    reg[0, :, torch.from_numpy(targets.cells)] = torch.from_numpy(targets.regression).T
    out = decode(heat, reg.reshape(1, -1, 40, 40), grid)[0]
    order = np.argsort(out.names)
    assert [out.names[i] for i in order] == ["car", "pedestrian"]
    np.testing.assert_allclose(out.centers[order], boxes.centers, atol=1e-4)
    np.testing.assert_allclose(out.sizes[order], boxes.sizes, atol=1e-4)
    np.testing.assert_allclose(np.cos(out.yaws[order] - boxes.yaws), 1.0, atol=1e-6)
    np.testing.assert_allclose(out.velocities[order], boxes.velocities, atol=1e-5)


def test_nms_keeps_close_neighbours() -> None:
    """Parked cars side by side and buses passing in opposite lanes are separate objects: all survive decoding."""
    grid = BEVGrid()
    boxes = LidarBoxes(centers=np.array([[0.0, 10.0, 0.0], [2.5, 10.0, 0.0], [-20.0, 0.0, 0.0], [-16.0, 0.0, 0.0]]),
                       sizes=np.array([[1.9, 4.5, 1.6]] * 2 + [[2.9, 11.0, 3.4]] * 2),
                       yaws=np.array([np.pi / 2, np.pi / 2, np.pi / 2, -np.pi / 2]), velocities=np.zeros((4, 2)),
                       names=["car", "car", "bus", "bus"], scores=np.ones(4))
    targets = head_targets(boxes, grid)
    n = grid.cells
    heat = torch.full((1, len(DETECTION_CLASSES), n, n), -10.0)
    heat[0][torch.from_numpy(targets.heatmap) == 1] = 10.0
    reg = torch.zeros(1, len(REGRESSION), n * n)
    reg[0, :, torch.from_numpy(targets.cells)] = torch.from_numpy(np.nan_to_num(targets.regression)).T
    assert len(decode(heat, reg.reshape(1, -1, n, n), grid)[0]) == 4


def test_augmented_cameras_still_see_the_boxes_where_they_were(tiny_root: Path) -> None:
    """make_batch moves points, boxes and camera poses with one similarity (flips included): every box centre
    projects to the same pixel of the resized image before and after."""
    from bench.finetune.detection import DetectorConfig, make_batch

    data = NuScenesLidarSegDataset(tiny_root / "nuscenes", "train", "v1.0-mini")
    sample = data.sensors(data.names[0])
    config = DetectorConfig(("camera",), None, "timm:resnet18", (64, 96))
    def project(batch, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
        world_to_cam = np.linalg.inv(batch.cam_to_lidar[0].double().numpy())
        cam = np.einsum("vij,mj->vmi", world_to_cam[:, :3, :3], centers) + world_to_cam[:, None, :3, 3]
        uv = np.einsum("vij,vmj->vmi", batch.intrinsics[0].double().numpy(), cam)
        return uv[..., :2] / uv[..., 2:], cam[..., 2] > 0.5

    plain, _ = make_batch([sample], config, None)
    expected, front = project(plain, sample_boxes(sample, training=True).centers)  # training keeps boxes with points
    assert front.any()
    for seed in range(4):
        moved, truth = make_batch([sample], config, [np.random.default_rng(seed)])
        got, _ = project(moved, truth[0].centers)
        np.testing.assert_allclose(got[front], expected[front], atol=1e-3)


def test_augmentation_moves_boxes_with_the_points() -> None:
    """Corners of transformed boxes are the transformed corners (rotation, scale and flips, headings included)."""
    rng = np.random.default_rng(3)
    boxes = LidarBoxes(rng.uniform(-20, 20, (6, 3)), rng.uniform(0.5, 5, (6, 3)), rng.uniform(-np.pi, np.pi, 6),
                       rng.normal(0, 3, (6, 2)), ["car"] * 6, np.ones(6))
    for _ in range(8):
        m = random_similarity(rng)
        moved = transform_boxes(boxes, m)
        expected = boxes.corners() @ m[:3, :3].T + m[:3, 3]
        # a flip mirrors the corner order; compare as sets of corners per box
        for got, want in zip(moved.corners(), expected, strict=True):
            distances = np.linalg.norm(got[:, None] - want[None], axis=-1)
            assert distances.min(1).max() < 1e-9
        np.testing.assert_allclose(moved.velocities, boxes.velocities @ m[:2, :2].T)


def test_resized_cameras_project_points_where_the_full_images_do(tiny_root: Path) -> None:
    data = NuScenesLidarSegDataset(tiny_root / "nuscenes", "train", "v1.0-mini")
    sample = data.sensors(data.names[0])
    h, w = sample.images[0].shape[:2]
    _, intrinsics, cam_to_lidar = camera_inputs(sample, (64, 96))
    np.testing.assert_allclose(np.linalg.inv(cam_to_lidar), sample.lidar_to_cam, atol=1e-12)
    uv, inside = sample.project(0)
    cam = sample.points[inside, :3] @ sample.lidar_to_cam[0, :3, :3].T + sample.lidar_to_cam[0, :3, 3]
    small = cam @ intrinsics[0].T
    small = small[:, :2] / small[:, 2:]
    np.testing.assert_allclose(small, (uv[inside] + 0.5) * np.array([96 / w, 64 / h]) - 0.5, atol=1e-6)


def test_the_three_tracks_are_runnable_tasks() -> None:
    assert list_tasks("nuscenes-det*", runnable=True) == ["nuscenes-det-camera", "nuscenes-det-fusion",
                                                           "nuscenes-det-lidar"]
    assert get_task("nuscenes-det-fusion").sensors == ("lidar", "camera")
    assert get_task("nuscenes-det-lidar").main_score == "NDS"


@pytest.mark.parametrize(("track", "backbone"), [("lidar", "spunet-micro"), ("camera", "timm:resnet18"),
                                                 ("fusion", "spunet-micro")])
def test_each_track_trains_and_is_scored_by_the_devkit(tiny_root: Path, tmp_path: Path, track: str,
                                                       backbone: str) -> None:
    recipe = get_finetune_recipe("tiny")
    result = finetune(get_task(f"nuscenes-det-{track}"), backbone, tiny_root, recipe=recipe,
                      artifacts=tmp_path / "run", picture=tmp_path / "bev.png")
    assert 0.0 <= result.scores["NDS"] <= 1.0 and 0.0 <= result.scores["mAP"] <= 1.0
    assert set(result.per_class) == set(DETECTION_CLASSES)
    facts = result.facts
    assert facts.steps == Detection().settings(recipe).epochs * int(np.ceil(facts.train_scenes / recipe.batch_size))
    submission = json.loads((tmp_path / "run" / "submission.json").read_text())
    evaluation = NuScenesLidarSegDataset(tiny_root / "nuscenes", "val", "v1.0-mini")
    assert set(submission["results"]) == set(evaluation.names)
    assert submission["meta"]["use_lidar"] == (track != "camera")
    assert submission["meta"]["use_camera"] == (track != "lidar")
    assert (tmp_path / "bev.png").stat().st_size > 10_000
    model, config = load_detector(tmp_path / "run" / "model.pt")
    assert config.sensors == get_task(f"nuscenes-det-{track}").sensors
    again = detect(model, config, evaluation.sensors(evaluation.names[0], cameras=track != "lidar"),
                   torch.device("cpu"))
    assert len(again) == len(submission["results"][evaluation.names[0]])
    # the one fine-tuning loop: its run log, and its checkpoint, which the same run resumes from at the end
    log = read_run_log(tmp_path / "run" / METRICS)
    assert log.event.iloc[-1] == "eval" and log.step.iloc[-1] == result.facts.steps and "NDS" in log
    if track == "lidar":
        resumed = finetune(get_task("nuscenes-det-lidar"), backbone, tiny_root, recipe=recipe,
                           artifacts=tmp_path / "run")
        assert resumed.facts.resumed_from_step == result.facts.steps and resumed.scores["NDS"] == result.scores["NDS"]


def test_a_point_cloud_backbone_cannot_run_the_camera_track(tiny_root: Path) -> None:
    from bench.finetune import NotApplicable

    with pytest.raises(NotApplicable, match="2D backbone"):
        finetune(get_task("nuscenes-det-camera"), "spunet-micro", tiny_root, recipe=get_finetune_recipe("tiny"))
    with pytest.raises(NotApplicable, match="linear read-out"):
        finetune(get_task("nuscenes-det-lidar"), "spunet-micro", tiny_root, recipe=get_finetune_recipe("tiny"),
                 linear_probe=True)


def test_real_boxes_sit_on_their_points(shared_data: Path) -> None:
    """The real sample's ground-truth boxes, read in our convention (centre, w-l-h, yaw in the LiDAR frame), hold
    the LiDAR returns the dataset counted inside them: frames and box conventions are right."""
    sample = read_mmdet3d_info(next((shared_data / "nuscenes-multisensor-sample").glob("*.pkl")))
    boxes = sample_boxes(sample, training=False)
    counted = sample.box_lidar_points
    inside = _points_in_boxes(sample.points[:, :3], boxes)
    dense = counted >= 20
    assert dense.sum() >= 5
    ratio = inside[dense] / counted[dense]
    assert np.median(ratio) > 0.9 and ratio.min() > 0.5  # counted on the same sweep; a few returns differ


def test_generated_boxes_sit_on_their_points(tiny_root: Path) -> None:
    data = NuScenesLidarSegDataset(tiny_root / "nuscenes", "train", "v1.0-mini")
    sample = data.sensors(data.names[0], cameras=False)
    boxes = sample_boxes(sample, training=False)
    # returns carry 1 cm range noise: every counted return lies within 5 cm of its box
    assert (_points_in_boxes(sample.points[:, :3], boxes, margin=0.05) >= sample.box_lidar_points).all()
    assert (sample.box_lidar_points > 0).any()


def test_the_lidar_detector_runs_on_the_real_sample(shared_data: Path, tiny_root: Path, tmp_path: Path) -> None:
    """A (barely) trained LiDAR detector reads the real sweep and draws the BEV and CAM_FRONT pictures."""
    from bench.finetune.plots import plot_boxes_on_camera, plot_detections

    finetune(get_task("nuscenes-det-lidar"), "spunet-micro", tiny_root, recipe=get_finetune_recipe("tiny"),
             artifacts=tmp_path / "run")
    model, config = load_detector(tmp_path / "run" / "model.pt")
    sample = read_mmdet3d_info(next((shared_data / "nuscenes-multisensor-sample").glob("*.pkl")))
    predicted = detect(model, config, sample, torch.device("cpu"))
    plot_detections(sample, predicted, tmp_path / "bev.png", "real sample")
    front = sample.cameras.index("CAM_FRONT")
    plot_boxes_on_camera(sample, front, [(sample_boxes(sample, False), "limegreen"), (predicted, "red")],
                         tmp_path / "front.png", "CAM_FRONT")
    assert (tmp_path / "bev.png").stat().st_size > 10_000 and (tmp_path / "front.png").stat().st_size > 10_000


def _points_in_boxes(points: np.ndarray, boxes: LidarBoxes, margin: float = 0.0) -> np.ndarray:
    """How many of ``points`` lie inside each box (grown by ``margin`` metres)."""
    counts = []
    for i in range(len(boxes)):
        c, s = np.cos(-boxes.yaws[i]), np.sin(-boxes.yaws[i])
        d = points - boxes.centers[i]
        local = np.stack([c * d[:, 0] - s * d[:, 1], s * d[:, 0] + c * d[:, 1], d[:, 2]], 1)
        half = boxes.sizes[i, [1, 0, 2]] / 2 + margin  # length along x, width along y
        counts.append(int((np.abs(local) <= half).all(1).sum()))
    return np.array(counts)



def test_the_matrix_gives_each_track_its_backbones_and_pretrainings(tmp_path: Path) -> None:
    """With the default 3D backbone the camera track runs the recipe's image backbone; ponder runs wait for the
    outdoor export (LiDAR), the image-mode export (camera), or both (fusion)."""
    from bench.matrix.runner import expand, pretrain_jobs

    runs = expand(backbones=["spunet-mini"], inits=["scratch", "ponder"], tasks="nuscenes-det*", seeds=[0],
                  data_roots=(str(tmp_path),), results=str(tmp_path), protocols=["finetune"])
    backbones = {(r.task, r.init): r.backbone for r in runs}
    assert backbones[("nuscenes-det-camera", "scratch")] == "timm:resnet18"
    assert backbones[("nuscenes-det-fusion", "ponder")] == "spunet-mini"
    jobs = pretrain_jobs(runs)
    assert {(j.backbone, j.mode) for j in jobs} == {("spunet-mini", "outdoor"), ("timm:resnet18", "image")}
    assert {(run.task, slot) for waiting in jobs.values() for run, slot in waiting} == {
        ("nuscenes-det-lidar", "init_path"), ("nuscenes-det-camera", "init_path"),
        ("nuscenes-det-fusion", "init_path"), ("nuscenes-det-fusion", "image_init_path")}
