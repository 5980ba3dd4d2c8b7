"""The feature probe: ridge regression and R^2 by their definitions, and the command on the tiny suite."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.finetune.features import r2_score, ridge_fit, ridge_predict, scene_targets
from tasks.structures import Scene


def test_ridge_recovers_a_linear_map_and_r2_follows_its_definition() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 5)) * [1, 10, 0.1, 3, 1] + 4
    y = x @ rng.normal(size=(5, 2)) + 0.5
    fit = ridge_fit(x, y, alpha=1e-9)
    assert r2_score(y, ridge_predict(fit, x)) == pytest.approx(1.0, abs=1e-9)
    assert r2_score(y, np.broadcast_to(y.mean(0), y.shape)) == pytest.approx(0.0, abs=1e-12)  # the mean: 0
    noise = rng.normal(size=(2000, 1))
    assert abs(r2_score(noise, ridge_predict(ridge_fit(x, noise), x))) < 0.01  # nothing to find
    truth = np.array([[0.0], [1.0], [2.0], [3.0]])
    assert r2_score(truth, truth + 1.0) == pytest.approx(1 - 4 / 5)  # residual 4 over total 5


def test_targets_per_domain() -> None:
    coord = np.array([[0, 0, 1.0], [0, 0, 2.0], [0, 0, 3.0]], np.float32)
    indoor = scene_targets(Scene("s", coord, color=np.full((3, 3), 255, np.float32), normal=np.eye(3, dtype=np.float32),
                                 segment=np.array([0, 1, -1])), "indoor")
    assert set(indoor) == {"height", "colour", "normal", "class"} and indoor["colour"].max() == 1.0
    assert np.diff(indoor["height"][:, 0]) == pytest.approx([1.0, 1.0]) and abs(indoor["height"][0, 0]) < 0.05
    outdoor = scene_targets(Scene("s", coord, strength=np.ones((3, 1), np.float32)), "outdoor")
    assert set(outdoor) == {"height", "intensity"}


def test_features_command_probes_random_and_exported_backbones(tiny_root: Path, tmp_path: Path,
                                                              capsys) -> None:  # noqa: ANN001
    from backbones.registry import create_backbone

    torch.manual_seed(7)
    torch.save(create_backbone("spunet-micro").state_dict(), tmp_path / "backbone.pt")
    digest = hashlib.sha256((tmp_path / "backbone.pt").read_bytes()).hexdigest()
    (tmp_path / "backbone.json").write_text(json.dumps({"backbone": "spunet-micro", "sha256": digest,
                                                        "config": {"in_channels": 6}}))
    assert main(["features", "--task", "scannet-semseg", "--data", str(tiny_root), "--backbone", "spunet-micro",
                 "--scenes", "2", "--inits", f"random,{tmp_path}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["init", "class_accuracy", "colour_r2", "height_r2", "normal_r2"]
    assert lines[1].split()[0] == "random" and lines[2].split()[0] == str(tmp_path)
    assert lines[1].split()[1:] != lines[2].split()[1:]  # other weights, other features
    assert main(["features", "--task", "nope", "--data", str(tiny_root)]) == 2
