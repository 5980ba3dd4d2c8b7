"""ScanNet instance AP against values computed by hand from the benchmark's definition (not by the same code)."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.classes import SCANNET20, SCANNET200
from tasks.metrics.instance import InstancePrediction, instance_classes, scannet_instance_ap

CLASSES = ("wall", "floor", "chair", "table")
WALL, FLOOR, CHAIR, TABLE = range(4)


def _scene(*sizes: tuple[int, int], wall: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """A scene of ``wall`` wall points then one instance per (class, size), in order."""
    segment = [np.full(wall, WALL)] + [np.full(n, c) for c, n in sizes]
    instance = [np.full(wall, -1)] + [np.full(n, i) for i, (_, n) in enumerate(sizes)]
    return np.concatenate(segment), np.concatenate(instance)


def _mask(n: int, start: int, stop: int) -> np.ndarray:
    mask = np.zeros(n, bool)
    mask[start:stop] = True
    return mask


def test_instance_classes_leave_out_the_stuff() -> None:
    assert len(instance_classes(SCANNET20)) == 18
    kept = [SCANNET200[i] for i in instance_classes(SCANNET200)]
    assert "wall" not in kept and "floor" not in kept and len(kept) == len(SCANNET200) - 2


def test_perfect_predictions_score_one() -> None:
    segment, instance = _scene((CHAIR, 200), (CHAIR, 150), (TABLE, 400))
    preds = [InstancePrediction(instance == i, int(segment[instance == i][0]), 0.9) for i in range(3)]
    result = scannet_instance_ap([(segment, instance, preds)], CLASSES)
    assert [result[k] for k in ("mAP", "AP50", "AP25")] == pytest.approx([1.0, 1.0, 1.0])
    assert set(result["per_class"]) == {"chair", "table"}  # stuff is not evaluated


def test_one_split_instance() -> None:
    """A 200-point chair split into 120 (score 0.9) + 80 (0.8): IoUs 0.6 and 0.4. At 0.5 the first is a true
    positive, the second a false positive below it in score, so precision is 1 at full recall: AP 1. Above
    0.55 nothing matches (AP 0). At 0.25 the second is a duplicate of a matched chair: a lower-scored FP again."""
    segment, instance = _scene((CHAIR, 200))
    n = len(segment)
    preds = [InstancePrediction(_mask(n, 300, 420), CHAIR, 0.9), InstancePrediction(_mask(n, 420, 500), CHAIR, 0.8)]
    chair = scannet_instance_ap([(segment, instance, preds)], CLASSES)["per_class"]["chair"]
    assert chair["AP50"] == pytest.approx(1.0) and chair["AP25"] == pytest.approx(1.0)
    assert chair["AP"] == pytest.approx(2 / 9)  # thresholds 0.50 and 0.55 of 0.50 ... 0.90


def test_one_merged_pair() -> None:
    """One prediction over two 150-point chairs: IoU 0.5 with each. At 0.5 (strictly above) nothing matches:
    AP 0. At 0.25 it takes the first chair and the second is missed: precision 1 up to recall 1/2, AP 0.5."""
    segment, instance = _scene((CHAIR, 150), (CHAIR, 150))
    preds = [InstancePrediction(_mask(len(segment), 300, 600), CHAIR, 0.9)]
    chair = scannet_instance_ap([(segment, instance, preds)], CLASSES)["per_class"]["chair"]
    assert chair["AP50"] == 0.0 and chair["AP25"] == pytest.approx(0.5)


def test_a_confident_false_positive_and_a_prediction_below_the_minimum_size() -> None:
    """A perfect chair at score 0.5 and a chair prediction on the table at 0.9: sorted by score the curve is
    (P 0, R 0) then (P 1/2, R 1), so AP = 1/2 x 1/2 = 0.25. The same false positive with 50 points is dropped
    (below 100), leaving AP 1."""
    segment, instance = _scene((CHAIR, 200), (TABLE, 300))
    n = len(segment)
    perfect = InstancePrediction(instance == 0, CHAIR, 0.5)
    for size, expected in ((300, 0.25), (50, 1.0)):
        wrong = InstancePrediction(_mask(n, 500, 500 + size), CHAIR, 0.9)
        chair = scannet_instance_ap([(segment, instance, [perfect, wrong])], CLASSES)["per_class"]["chair"]
        assert chair["AP50"] == pytest.approx(expected), size


def test_a_false_positive_on_void_is_ignored() -> None:
    """A chair prediction lying on the wall (void for instances) is not counted against the chair class."""
    segment, instance = _scene((CHAIR, 200))
    preds = [InstancePrediction(instance == 0, CHAIR, 0.5), InstancePrediction(_mask(len(segment), 0, 200), CHAIR, 0.9)]
    assert scannet_instance_ap([(segment, instance, preds)], CLASSES)["per_class"]["chair"]["AP50"] == pytest.approx(1)


def test_a_class_whose_only_predictions_are_ignored_scores_zero() -> None:
    """The chair is missed and its one prediction lies on the wall: nothing enters the curve, and the official
    script's AP is then 0 (not a crash, not a missing class)."""
    segment, instance = _scene((CHAIR, 200))
    preds = [InstancePrediction(_mask(len(segment), 0, 200), CHAIR, 0.9)]
    assert scannet_instance_ap([(segment, instance, preds)], CLASSES)["per_class"]["chair"]["AP50"] == 0.0


def test_known_ious_give_the_protocols_ap() -> None:
    """Three 200-point chairs covered by predictions with IoU 0.96, 0.76, 0.56 (scores in that order). At a
    threshold where the best k match, the others are FPs ranked below every TP plus k-3 misses: AP = k/3. Over
    0.50 ... 0.90 k is 3, 3, 2, 2, 2, 2, 1, 1, 1: mAP = (2 + 4 x 2/3 + 3 x 1/3) / 9 = 17/27."""
    segment, instance = _scene((CHAIR, 200), (CHAIR, 200), (CHAIR, 200))
    n = len(segment)
    preds = [InstancePrediction(_mask(n, 300 + 200 * i, 300 + 200 * i + size), CHAIR, score)
             for i, (size, score) in enumerate(((192, 0.9), (152, 0.8), (112, 0.7)))]
    result = scannet_instance_ap([(segment, instance, preds)], CLASSES)
    chair = result["per_class"]["chair"]
    assert [chair["AP"], chair["AP50"], chair["AP25"]] == pytest.approx([17 / 27, 1.0, 1.0])
    assert result["mAP"] == pytest.approx(17 / 27)  # the table class has no ground truth: left out
