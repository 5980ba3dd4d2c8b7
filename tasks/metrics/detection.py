"""nuScenes detection scores through nuscenes-devkit: the official submission JSON, scored by ``DetectionEval``.

Predictions are made in each sample's LiDAR frame; :func:`submission_entries` moves them to the global frame the
devkit expects (translation, size w-l-h, rotation quaternion, velocity, attribute). :func:`evaluate_submission`
checks that every sample token of the split has an entry (the devkit's own check is a bare assertion) and returns
NDS, mAP, the five TP errors and the per-class APs as plain numbers.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyquaternion import Quaternion

from tasks.errors import DataFormatError
from tasks.io import atomic_write

# the devkit's detection classes, in its config's order
DETECTION_CLASSES = ("car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian", "motorcycle", "bicycle",
                     "traffic_cone", "barrier")
TP_ERRORS = ("trans_err", "scale_err", "orient_err", "vel_err", "attr_err")
DETECTION_METRICS = ("NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE")
MOVING_SPEED = 0.2  # m/s: above it an object is given a moving attribute (CenterPoint's rule)


@dataclass
class LidarBoxes:
    """Boxes in one sample's LiDAR frame: centres (M, 3), sizes (M, 3) as width, length, height, yaws (M,),
    velocities (M, 2) in m/s, class names and scores."""

    centers: np.ndarray
    sizes: np.ndarray
    yaws: np.ndarray
    velocities: np.ndarray
    names: list[str]
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.centers)

    def select(self, keep: np.ndarray) -> LidarBoxes:
        """The boxes where the boolean mask ``keep`` is set."""
        return LidarBoxes(self.centers[keep], self.sizes[keep], self.yaws[keep], self.velocities[keep],
                          [n for n, k in zip(self.names, keep, strict=True) if k], self.scores[keep])

    def corners(self) -> np.ndarray:
        """(M, 8, 3) corners: the bottom face (counter-clockwise from front-left) then the top face."""
        w, length, h = self.sizes[:, 0:1], self.sizes[:, 1:2], self.sizes[:, 2:3]
        x = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * length / 2
        y = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * w / 2
        z = np.array([-1, -1, -1, -1, 1, 1, 1, 1]) * h / 2
        c, s = np.cos(self.yaws)[:, None], np.sin(self.yaws)[:, None]
        return np.stack([c * x - s * y, s * x + c * y, z], -1) + self.centers[:, None, :]


def default_attribute(name: str, velocity: np.ndarray) -> str:
    """The attribute a prediction carries: moving or not, from its speed; none for barriers and cones."""
    moving = bool(np.hypot(*velocity) > MOVING_SPEED)
    if name in ("bicycle", "motorcycle"):
        return "cycle.with_rider" if moving else "cycle.without_rider"
    if name == "pedestrian":
        return "pedestrian.moving" if moving else "pedestrian.standing"
    if name in ("barrier", "traffic_cone"):
        return ""
    return "vehicle.moving" if moving else "vehicle.parked"


def submission_entries(token: str, boxes: LidarBoxes, lidar_to_global: np.ndarray) -> list[dict]:
    """One sample's boxes as the devkit's result entries, in the global frame."""
    rotation = lidar_to_global[:3, :3]
    turn = Quaternion(matrix=rotation, atol=1e-6)
    entries = []
    for i in range(len(boxes)):
        velocity = rotation @ np.r_[np.nan_to_num(boxes.velocities[i]), 0.0]
        entries.append(dict(
            sample_token=token,
            translation=(rotation @ boxes.centers[i] + lidar_to_global[:3, 3]).tolist(),
            size=[float(v) for v in boxes.sizes[i]],
            rotation=list((turn * Quaternion(axis=[0, 0, 1], angle=float(boxes.yaws[i]))).elements),
            velocity=velocity[:2].tolist(),
            detection_name=boxes.names[i],
            detection_score=float(boxes.scores[i]),
            attribute_name=default_attribute(boxes.names[i], velocity[:2]),
        ))
    return entries


def write_submission(path: Path, results: dict[str, list[dict]], modality: str) -> Path:
    """The official submission file: ``meta`` (which sensors were used) and ``results`` per sample token."""
    meta = dict(use_camera="camera" in modality, use_lidar="lidar" in modality, use_radar=False, use_map=False,
                use_external=False)
    text = json.dumps({"meta": meta, "results": results})
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


def split_sample_tokens(nusc, eval_set: str) -> list[str]:  # noqa: ANN001 - the devkit's NuScenes
    """Every sample token of the devkit split ``eval_set`` (what the devkit's ground truth holds)."""
    from nuscenes.utils.splits import create_splits_scenes

    scenes = set(create_splits_scenes()[eval_set])
    return [s["token"] for s in nusc.sample if nusc.get("scene", s["scene_token"])["name"] in scenes]


def evaluate_submission(nusc, result_path: Path, eval_set: str, output_dir: Path) -> dict[str, object]:  # noqa: ANN001
    """Score a submission file with ``DetectionEval`` and the standard ``detection_cvpr_2019`` config.

    Returns NDS and mAP (fractions, as the suite keeps every score; tables show %), the TP errors (mATE ... mAAE),
    per-class AP and the AP of each class at each distance threshold. A submission that lacks sample tokens of the
    split, or holds others, is an error naming the file.
    """
    from nuscenes.eval.detection.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    try:
        submitted = set(json.loads(Path(result_path).read_text())["results"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataFormatError(result_path, f"not a nuScenes detection submission ({exc})") from exc
    expected = set(split_sample_tokens(nusc, eval_set))
    missing, extra = sorted(expected - submitted), sorted(submitted - expected)
    if missing or extra:
        raise DataFormatError(result_path, f"the submission must hold every sample token of split {eval_set!r} and "
                              f"no other: {len(missing)} missing (e.g. {missing[:3]}), {len(extra)} not in the "
                              f"split (e.g. {extra[:3]})")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its progress bars
        evaluator = DetectionEval(nusc, config_factory("detection_cvpr_2019"), str(result_path), eval_set,
                                  str(output_dir), verbose=False)
        metrics, _ = evaluator.evaluate()
    summary = metrics.serialize()
    tp = summary["tp_errors"]
    return {
        "NDS": summary["nd_score"], "mAP": summary["mean_ap"],
        **{_tp_name(k): tp[k] for k in TP_ERRORS},
        "per_class": dict(summary["mean_dist_aps"]),
        "ap_by_threshold": {name: {str(t): ap for t, ap in aps.items()} for name, aps in summary["label_aps"].items()},
        "gt_boxes": len(evaluator.gt_boxes.all), "predicted_boxes": len(evaluator.pred_boxes.all),
    }


def _tp_name(error: str) -> str:
    """``trans_err`` -> ``mATE`` (the paper's names)."""
    return "mA" + error[0].upper() + "E"
