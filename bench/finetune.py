"""Fine-tuning and evaluation of a backbone on a semantic-segmentation task.

Backbone (scratch, or a pre-trained export loaded by path) + linear head; cross-entropy + Lovász-softmax,
SGD (Nesterov) + OneCycle, the reference augmentations; evaluation on whole scenes: Pointcept's test-mode
grid sampling splits each scene into fragments (one point per voxel each), their class probabilities are
voted per voxel and back to every point, optionally over four rotations (test-time augmentation).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from backbones.registry import create_backbone, get_backbone_config
from backbones.structures import PointBatch
from bench.optim import one_cycle
from tasks.datasets import task_scenes
from tasks.heads.segmentation import SegmentationModel, lovasz_softmax
from tasks.metrics import ConfusionMatrix
from tasks.spec import TaskSpec
from tasks.structures import Scene
from tasks.transforms import Augment, grid_sample_train, rotation_z, voxelize

log = logging.getLogger(__name__)


BN_SCENES = 64  # training scenes (at most) over which BatchNorm statistics are recomputed before evaluation


class NotApplicable(Exception):
    """This backbone or initialisation cannot run this task (e.g. a 2D backbone on a point-cloud task)."""


@dataclass(frozen=True)
class FinetuneRecipe:
    epochs: int = 100
    batch_size: int = 2  # scenes per step
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    pct_start: float = 0.05
    lovasz_weight: float = 1.0
    max_points: int | None = None  # cap on training points per scene (after grid sampling)
    outdoor_voxel: float = 0.05  # metres; indoor uses the backbone's voxel
    tta: bool = False


FINETUNE_PRESETS = {
    "reference": FinetuneRecipe(),
    "mini": FinetuneRecipe(epochs=6, batch_size=2, lr=0.05, max_points=10_000, outdoor_voxel=0.1),
    "tiny": FinetuneRecipe(epochs=2, batch_size=2, lr=0.05, max_points=3_000, outdoor_voxel=0.2),  # tests
}


def load_export(backbone: torch.nn.Module, path: str | Path, name: str, in_channels: int) -> str:
    """Load a pre-training export (``backbone.pt`` + ``backbone.json``) into ``backbone``; returns its sha256."""
    path = Path(path)
    weights = path / "backbone.pt" if path.is_dir() else path
    meta_path = weights.with_name("backbone.json")
    if not weights.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"{weights}: pre-trained export (backbone.pt + backbone.json) not found")
    meta = json.loads(meta_path.read_text())
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    if digest != meta.get("sha256"):
        raise ValueError(f"{weights}: sha256 {digest[:12]} does not match backbone.json "
                         f"({str(meta.get('sha256'))[:12]})")
    if meta.get("backbone") != name:
        raise NotApplicable(f"{weights} holds {meta.get('backbone')!r}, not {name!r}")
    if meta.get("config", {}).get("in_channels", in_channels) != in_channels:
        raise NotApplicable(f"{weights} was pre-trained with {meta['config']['in_channels']} input channels; "
                            f"this task feeds {in_channels}")
    backbone.load_state_dict(torch.load(weights, map_location="cpu"))
    return digest


def point_features(scene: Scene, outdoor: bool) -> np.ndarray:
    """Indoor: colour (0-1) + normal; outdoor: xyz + intensity (what the pre-training fed)."""
    n = len(scene)
    if outdoor:
        strength = scene.strength if scene.strength is not None else np.zeros((n, 1), np.float32)
        return np.concatenate([scene.coord, strength], 1).astype(np.float32)
    color = scene.color / 255.0 if scene.color is not None else np.zeros((n, 3), np.float32)
    normal = scene.normal if scene.normal is not None else np.zeros((n, 3), np.float32)
    return np.concatenate([color, normal], 1).astype(np.float32)


def _train_cloud(scene: Scene, outdoor: bool, voxel: float, limit: int | None, rng: np.random.Generator):  # noqa: ANN202
    augment = Augment(rotate_z=np.pi, scale=(0.95, 1.05) if outdoor else (0.9, 1.1), flip_p=0.5,
                      jitter_sigma=0.0 if outdoor else 0.005)
    scene = augment(scene, rng)
    sampled = grid_sample_train(scene.coord, voxel, rng)
    index = sampled.index
    grid = sampled.grid_coord
    if limit and len(index) > limit:
        pick = np.sort(rng.choice(len(index), limit, replace=False))
        index, grid = index[pick], grid[pick]
    return (scene.coord[index], grid, point_features(scene, outdoor)[index]), scene.segment[index]


@torch.no_grad()
def precise_batchnorm(model: SegmentationModel, clouds: list, device: torch.device) -> None:
    """Recompute the BatchNorm statistics as exact averages over ``clouds`` (the training scenes).

    SpUNet's BatchNorm follows Pointcept (momentum 0.01): after a short fine-tuning its running statistics
    are still mostly their initial values, and evaluation (which uses them) would be wrong. A frozen
    backbone keeps its own statistics.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
             and not (model.freeze_backbone and any(m is b for b in model.backbone.modules()))]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for cloud in clouds:
        model(PointBatch.collate([cloud]).to(device))
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.eval()


def predict_scene(model: torch.nn.Module, scene: Scene, voxel: float, outdoor: bool, num_classes: int,
                  device: torch.device, tta: bool = False, max_fragments: int = 8) -> np.ndarray:
    """Class of every point of ``scene``.

    Test-mode grid sampling: fragment k takes the k-th point of every voxel (wrapping), the fragments'
    class probabilities are summed per voxel and every point takes its voxel's vote. At most
    ``max_fragments`` fragments: real sweeps can hold thousands of returns in one voxel (the nuScenes samples
    have 3,165 in one 10 cm voxel), which would otherwise mean thousands of forward passes.
    """
    votes = np.zeros((len(scene), num_classes), dtype=np.float32)
    for angle in ((0.0, np.pi / 2, np.pi, 3 * np.pi / 2) if tta else (0.0,)):
        view = rotation_z(angle).apply(scene) if angle else scene
        feats = point_features(view, outdoor)
        grid, order, start, count = voxelize(view.coord, voxel)
        voxel_votes = np.zeros((len(count), num_classes), dtype=np.float32)
        for k in range(min(int(count.max()), max_fragments)):
            pick = order[start + k % count]  # one point per voxel, in voxel order
            batch = PointBatch.collate([(view.coord[pick], grid[pick], feats[pick])]).to(device)
            with torch.no_grad():
                voxel_votes += model(batch).softmax(-1).cpu().numpy()
        voxel_of = np.empty(len(scene), dtype=np.int64)
        voxel_of[order] = np.repeat(np.arange(len(count)), count)
        votes += voxel_votes[voxel_of]
    return votes.argmax(1)


def finetune(spec: TaskSpec, backbone_name: str, data_root: str | Path, seed: int = 0,
             recipe: FinetuneRecipe = FinetuneRecipe(), init: str | Path | None = None,  # noqa: B008
             linear_probe: bool = False, device: str = "cpu", progress: bool = False) -> dict[str, object]:
    """Train on the task's training split, evaluate on its eval split; returns the metrics and run facts."""
    if spec.task_type != "semseg" or not spec.runnable:
        raise NotApplicable(f"task {spec.id} ({spec.task_type}) has no fine-tuning pipeline yet")
    config = get_backbone_config(backbone_name)
    if config.modality != "3d":
        raise NotApplicable(f"{backbone_name} is a 2D backbone; {spec.id} is a point-cloud task")
    outdoor = spec.domain == "outdoor"
    in_channels = 4 if outdoor else 6
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    backbone = create_backbone(backbone_name, in_channels=in_channels)
    init_sha = load_export(backbone, init, backbone_name, in_channels) if init else None
    model = SegmentationModel(backbone, backbone.config.out_channels, len(spec.classes), linear_probe)
    dev = torch.device(device)
    model.to(dev)
    voxel = recipe.outdoor_voxel if outdoor else (config.voxel_size or 0.02)
    train = task_scenes(spec, data_root, "train")
    evaluation = task_scenes(spec, data_root, spec.eval_split)
    if len(train) == 0 or len(evaluation) == 0:
        raise ValueError(f"task {spec.id}: {len(train)} training and {len(evaluation)} evaluation scenes under "
                         f"{data_root}")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, nesterov=True,
                                weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(train) / recipe.batch_size)
    scheduler = one_cycle(optimizer, recipe.lr, recipe.epochs * steps_per_epoch, recipe.pct_start)
    model.train()
    last_loss = float("nan")
    for _ in tqdm(range(recipe.epochs), desc=f"{spec.id} {backbone_name}", disable=not progress):
        order = rng.permutation(len(train))
        for start in range(0, len(order), recipe.batch_size):
            clouds, labels = zip(*(_train_cloud(train[int(i)], outdoor, voxel, recipe.max_points, rng)
                                   for i in order[start:start + recipe.batch_size]), strict=True)
            batch = PointBatch.collate(list(clouds)).to(dev)
            target = torch.from_numpy(np.concatenate(labels)).long().to(dev)
            if not (target >= 0).any():
                scheduler.step()
                continue  # limited annotations: no labelled point drawn in this batch
            logits = model(batch)
            loss = F.cross_entropy(logits, target, ignore_index=spec.ignore_index)
            loss = loss + recipe.lovasz_weight * lovasz_softmax(logits, target, spec.ignore_index)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"task {spec.id}: non-finite fine-tuning loss")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            last_loss = float(loss.detach())
    stats_rng = np.random.default_rng(seed + 1)
    some = sorted(stats_rng.permutation(len(train))[:BN_SCENES].tolist())
    precise_batchnorm(model, [_train_cloud(train[i], outdoor, voxel, recipe.max_points, stats_rng)[0] for i in some],
                      dev)
    matrix = ConfusionMatrix(len(spec.classes), spec.ignore_index)
    for i in range(len(evaluation)):
        scene = evaluation[i]
        matrix.update(scene.segment, predict_scene(model, scene, voxel, outdoor, len(spec.classes), dev, recipe.tta))
    return {**matrix.scores(spec.classes), "init_sha256": init_sha, "train_scenes": len(train),
            "eval_scenes": len(evaluation), "final_train_loss": last_loss, "eval_points": int(matrix.matrix.sum())}
