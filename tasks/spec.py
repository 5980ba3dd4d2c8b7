"""The benchmark tasks: frozen metadata per task (MTEB-style) and a registry with wildcard listing.

``version`` is bumped whenever anything that changes the numbers changes (split, classes, metric, protocol,
evaluation); records carry ``id@version`` and the leaderboard refuses to mix versions. ``reference`` is
the paper's number for the task with the setup it comes from (:data:`tasks.references.PAPER`; ``None`` where the
paper gives none): a target over runs on real data, a footnote over the mini suite, never a result of this suite.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Literal, get_args

from tasks import references as refs
from tasks.classes import NUSCENES16, S3DIS13, SCANNET20, SCANNET200, SEMANTIC_KITTI19
from tasks.contract import DOMAINS, Domain
from tasks.metrics.detection import DETECTION_CLASSES, DETECTION_METRICS
from tasks.references import Setting

Sensor = Literal["lidar", "camera"]
Protocol = Literal["full", "limited-reconstruction", "limited-annotation"]


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    id: str
    version: int
    title: str
    loader: str  # its dataset format: a key of tasks.datasets.DATASETS (which folder, how scenes are read)
    train_split: str
    eval_split: str
    task_type: str  # a task type registered with bench.finetune.register_task_type (semseg, insseg, detection ...)
    classes: tuple[str, ...]
    ignore_index: int
    metrics: tuple[str, ...]
    main_score: str
    higher_is_better: bool
    protocol: Protocol
    protocol_value: float | None  # fraction of training scenes, or labelled points per scene
    domain: Domain  # which pre-training applies
    paper: refs.PaperResult | None = None  # the published number and its setup
    runnable: bool = True
    note: str = ""
    # what the task's model reads: LiDAR (a 3D backbone), cameras (a 2D backbone), or both (the run's 3D backbone
    # and the recipe's image backbone)
    sensors: tuple[Sensor, ...] = ("lidar",)
    beside: tuple[str, ...] = ()  # metrics (fractions) the leaderboard shows beside the main score
    unit: Literal["%", "dB"] = "%"  # the main score: a fraction shown in percent, or decibels shown as they are
    # the leaderboard table that shows it: the benchmark's columns, or the low-level one (its metrics are not class
    # scores)
    table: Literal["benchmark", "lowlevel"] = "benchmark"
    # its reference fine-tuning recipe: settings over bench.recipes.FinetuneRecipe's defaults, each with its source
    # (tasks.references); the CPU presets override them (``ponderbench list recipes --task ID``)
    recipe: tuple[Setting, ...] = ()

    def __post_init__(self) -> None:
        for name, allowed in (("protocol", get_args(Protocol)), ("domain", DOMAINS),
                              ("table", ("benchmark", "lowlevel"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"task {self.id}: {name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not self.sensors or not set(self.sensors) <= set(get_args(Sensor)):
            raise ValueError(f"task {self.id}: sensors must be among {get_args(Sensor)}, got {self.sensors}")
        if not set(self.beside) <= set(self.metrics):
            raise ValueError(f"task {self.id}: beside metrics {self.beside} must be among its metrics")
        if self.main_score not in self.metrics:
            raise ValueError(f"task {self.id}: main score {self.main_score!r} is not among its metrics")

    @property
    def dataset(self) -> str:
        """Its dataset's folder under a data root (``scannet``, ``s3dis`` ...), from the one table of formats."""
        from tasks.datasets import dataset_format

        return dataset_format(self.loader).folder

    @property
    def condition(self) -> str | None:
        """Its dataset's condition for PDNorm backbones (``ScanNet``, ``S3DIS`` ...; None for the others)."""
        from tasks.datasets import dataset_format

        return dataset_format(self.loader).condition

    @property
    def reference(self) -> float | None:
        """The paper's number, if any."""
        return None if self.paper is None else self.paper.value

    @property
    def key(self) -> str:
        return f"{self.id}@{self.version}"


_REGISTRY: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    if spec.id in _REGISTRY:
        raise ValueError(f"task {spec.id!r} is already registered")
    _REGISTRY[spec.id] = spec
    return spec


def get_task(task_id: str) -> TaskSpec:
    try:
        return _REGISTRY[task_id]
    except KeyError:
        raise KeyError(f"unknown task {task_id!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def list_tasks(pattern: str = "*", runnable: bool | None = None) -> list[str]:
    """Task ids matching a wildcard pattern (comma-separated patterns allowed), optionally only runnable ones."""
    patterns = [p.strip() for p in pattern.split(",") if p.strip()]
    return sorted(t for t, spec in _REGISTRY.items() if any(fnmatch.fnmatch(t, p) for p in patterns)
                  and (runnable is None or spec.runnable == runnable))


SEG_METRICS = ("mIoU", "mAcc", "allAcc")


def _semseg(id: str, title: str, loader: str, classes: tuple[str, ...], domain: Domain,
            recipe: tuple[Setting, ...], protocol: Protocol = "full",
            value: float | None = None, version: int = 3, note: str = "") -> TaskSpec:
    return register_task(TaskSpec(
        id=id, version=version, title=title, loader=loader, train_split="train", eval_split="val",
        task_type="semseg", classes=classes, ignore_index=-1, metrics=SEG_METRICS, main_score="mIoU",
        higher_is_better=True, protocol=protocol, protocol_value=value, domain=domain, paper=refs.PAPER.get(id),
        note=note, recipe=recipe))


_semseg("scannet-semseg", "ScanNet semantic segmentation (20 classes), val", "scannet", SCANNET20,
        "indoor", refs.SCANNET_SEMSEG)
_semseg("scannet200-semseg", "ScanNet200 semantic segmentation, val", "scannet200", SCANNET200,
        "indoor", refs.SCANNET200_SEMSEG)
_semseg("s3dis-area5-semseg", "S3DIS Area 5 semantic segmentation (13 classes)", "s3dis", S3DIS13,
        "indoor", refs.S3DIS_SEMSEG)
INSSEG_METRICS = ("mAP", "AP50", "AP25")
for id, title, loader, classes, recipe in (
        ("scannet-insseg", "ScanNet instance segmentation (18 classes), val", "scannet", SCANNET20,
         refs.SCANNET_INSSEG),
        ("scannet200-insseg", "ScanNet200 instance segmentation, val", "scannet200", SCANNET200,
         refs.SCANNET200_INSSEG)):
    register_task(TaskSpec(
        id=id, version=3, title=title, loader=loader, train_split="train", eval_split="val",
        task_type="insseg", classes=classes, ignore_index=-1, metrics=INSSEG_METRICS, main_score="AP50",
        higher_is_better=True, protocol="full", protocol_value=None, domain="indoor", paper=refs.PAPER[id],
        recipe=recipe,
        note="PointGroup-style head; the ScanNet benchmark's AP over its instance classes (all but wall, floor)"))
for pct in (1, 5, 10, 20):
    _semseg(f"scannet-de-lr{pct}", f"ScanNet data-efficient: {pct}% of the training scenes", "scannet",
            SCANNET20, "indoor", refs.SCANNET_SEMSEG, protocol="limited-reconstruction", value=pct / 100)
for points in (20, 50, 100, 200):
    _semseg(f"scannet-de-la{points}", f"ScanNet data-efficient: {points} labelled points per training scene",
            "scannet", SCANNET20, "indoor", refs.SCANNET_SEMSEG, protocol="limited-annotation",
            value=float(points))
_semseg("semantickitti-semseg", "SemanticKITTI semantic segmentation (19 classes), val", "semantickitti",
        SEMANTIC_KITTI19, "outdoor", refs.SEMANTIC_KITTI_SEMSEG)
_semseg("nuscenes-lidarseg", "nuScenes lidar semantic segmentation (16 classes), val", "nuscenes",
        # 4: the generated drives hold every detection class, some moving; 5: intensity / 255
        NUSCENES16, "outdoor", refs.NUSCENES_SEMSEG, version=5)
_semseg("nuscenes-lidarseg-samples", "Real nuScenes lidarseg sweeps (../shared/data): every 5th sweep held out",
        "lidarseg-frames", NUSCENES16, "outdoor", refs.NUSCENES_SEMSEG, version=4,  # 4: intensity / 255
        note="30 real sweeps (24 train, 6 held out): a check on real data, not a benchmark")
_semseg("nuscenes-lidarseg-samples-la200", "Real nuScenes lidarseg sweeps, 200 labelled points per training sweep",
        "lidarseg-frames", NUSCENES16, "outdoor", refs.NUSCENES_SEMSEG, protocol="limited-annotation",
        value=200.0, version=4, note="the limited-annotation protocol on real sweeps: does pre-training on them help?")
for track, title, sensors in (("lidar", "LiDAR", ("lidar",)), ("camera", "camera (2D backbone)", ("camera",)),
                              ("fusion", "LiDAR + camera", ("lidar", "camera"))):
    register_task(TaskSpec(
        # 3: LiDAR intensity / 255 (the camera track reads no LiDAR)
        id=f"nuscenes-det-{track}", version=2 if track == "camera" else 3, title=f"nuScenes 3D detection, {title}",
        loader="nuscenes", train_split="train", eval_split="val", task_type="detection", classes=DETECTION_CLASSES,
        ignore_index=-1, metrics=DETECTION_METRICS, main_score="NDS", higher_is_better=True, protocol="full",
        protocol_value=None, domain="outdoor", paper=refs.PAPER[f"nuscenes-det-{track}"],
        sensors=sensors, beside=("mAP",),
        note="CenterPoint-style BEV head; scored by nuscenes-devkit's DetectionEval (NDS, mAP in %) on the "
             "devkit's val split (mini_val for v1.0-mini)"))

# Low-level tasks: a Ponder model fitted to each scene's training frames; its held-out frames (the contract's rule)
# are rendered (nvs), its SDF meshed (recon). Their own leaderboard table: their metrics are not class scores.
NVS_METRICS = ("PSNR", "SSIM", "AbsRel", "RMSE", "delta1")
RECON_METRICS = ("fscore", "precision", "recall", "accuracy", "completeness", "chamfer_l1")
for short, loader, split, where in (
        ("7scenes", "rgbd-folder", "heldout", "the real 7-Scenes frames of ../shared/data"),
        ("scannet", "scannet-rgbd", "test", "the RGB-D frames of the ScanNet test scenes")):
    for task_type, version, metrics, main, unit, what in (
            ("nvs", 1, NVS_METRICS, "PSNR", "dB", "novel-view synthesis: held-out frames rendered (PSNR, SSIM, "
                                                  "depth)"),
            # recon 2: both surfaces cut to what the frames see
            ("recon", 2, RECON_METRICS, "fscore", "%", "3D reconstruction: the SDF's mesh vs the reference, "
                                                       "F-score at 5 cm")):
        register_task(TaskSpec(
            id=f"{task_type}-{short}", version=version, title=f"{what.split(':')[0]}, {where}",
            loader=loader, train_split=split, eval_split=split, task_type=task_type, classes=(), ignore_index=-1,
            metrics=metrics, main_score=main, higher_is_better=True, protocol="full", protocol_value=None,
            domain="indoor", unit=unit, table="lowlevel",
            note=f"{what}; a Ponder model fitted per scene to its training frames (the held-out rule keeps every 5th)"))
