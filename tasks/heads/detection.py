"""3D detection on a bird's-eye-view (BEV) map: CenterPoint's head, fed by LiDAR, cameras or both.

* LiDAR: the 3D backbone's per-voxel features are max-pooled into BEV cells.
* Camera: a 2D backbone's feature maps (the level nearest stride 8, as in image-mode pre-training) are lifted
  into a voxel volume with :func:`backbones.lift.lift_to_volume`; its height cells are stacked into channels.
* Fusion: both maps concatenated and mixed by a 3x3 convolution.

The head predicts one heatmap per class (a Gaussian peak at every box centre, CenterNet's focal loss) and, at
each centre cell, the offset inside the cell, the height, log size, yaw as (sin, cos) and the velocity.
Decoding takes the top-k heatmap peaks (3x3 max-pool) and removes overlaps per class with torchvision's NMS on the
boxes' axis-aligned BEV bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from backbones.lift import lift_to_volume
from backbones.structures import PointBatch
from tasks.metrics.detection import DETECTION_CLASSES, LidarBoxes

REGRESSION = ("dx", "dy", "z", "log_w", "log_l", "log_h", "sin", "cos", "vx", "vy")
REGRESSION_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.2)  # CenterPoint's code weights


@dataclass(frozen=True)
class BEVGrid:
    """The square BEV map around the LiDAR: nuScenes' detection range (51.2 m) in ``cells`` x ``cells`` cells."""

    extent: float = 51.2
    cells: int = 128
    z_range: tuple[float, float] = (-5.0, 3.0)

    @property
    def cell(self) -> float:
        return 2 * self.extent / self.cells

    def index(self, xy: np.ndarray | torch.Tensor) -> tuple:
        """(column, row) cell indices of points (N, 2) and whether they lie inside the map."""
        ij = ((xy + self.extent) / self.cell)
        ij = ij.floor().long() if isinstance(ij, torch.Tensor) else np.floor(ij).astype(np.int64)
        inside = (ij >= 0).all(-1) & (ij < self.cells).all(-1)
        return ij[..., 0], ij[..., 1], inside


def gaussian_radius(length: float, width: float, min_overlap: float = 0.1) -> float:
    """CenterNet's radius (in cells) within which a shifted box of ``length`` x ``width`` cells keeps ``min_overlap``
    IoU with the true one: the smallest root of its three cases."""
    a1, b1 = 1, length + width
    c1 = width * length * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2 = 4, 2 * (length + width)
    c2 = (1 - min_overlap) * width * length
    r2 = (b2 + math.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (length + width)
    c3 = (min_overlap - 1) * width * length
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


@dataclass
class HeadTargets:
    """Training targets of one sample: heatmaps (K, H, W) and the regression rows of the box centres."""

    heatmap: np.ndarray
    cells: np.ndarray  # (M,) flat cell index row * W + column of each box centre
    regression: np.ndarray  # (M, 10) in REGRESSION order; NaN velocity where unknown


def head_targets(boxes: LidarBoxes, grid: BEVGrid, classes: tuple[str, ...] = DETECTION_CLASSES,
                 min_radius: int = 2) -> HeadTargets:
    """Gaussian peaks and regression targets of the boxes of known classes whose centre lies on the map."""
    n = grid.cells
    heatmap = np.zeros((len(classes), n, n), dtype=np.float32)
    known = np.array([name in classes for name in boxes.names], dtype=bool)
    col, row, inside = grid.index(boxes.centers[:, :2].reshape(-1, 2))
    keep = np.flatnonzero(known & inside)
    ys, xs = np.mgrid[0:n, 0:n]
    rows = []
    for i in keep:
        w, length = boxes.sizes[i, 0] / grid.cell, boxes.sizes[i, 1] / grid.cell
        radius = max(min_radius, int(gaussian_radius(length, w)))
        sigma = (2 * radius + 1) / 6
        peak = np.exp(-((xs - col[i]) ** 2 + (ys - row[i]) ** 2) / (2 * sigma**2))
        peak[np.maximum(abs(xs - col[i]), abs(ys - row[i])) > radius] = 0
        k = classes.index(boxes.names[i])
        heatmap[k] = np.maximum(heatmap[k], peak)
        offset = (boxes.centers[i, :2] + grid.extent) / grid.cell - np.array([col[i], row[i]])
        rows.append([*offset, boxes.centers[i, 2], *np.log(boxes.sizes[i]), np.sin(boxes.yaws[i]),
                     np.cos(boxes.yaws[i]), *boxes.velocities[i]])
    return HeadTargets(heatmap, (row[keep] * n + col[keep]).astype(np.int64),
                       np.array(rows, dtype=np.float32).reshape(-1, len(REGRESSION)))


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss over Gaussian heatmaps, normalised by the number of peaks."""
    p = logits.sigmoid().clamp(1e-4, 1 - 1e-4)
    positive = target.eq(1).float()
    pos = -(torch.log(p) * (1 - p) ** alpha * positive).sum()
    neg = -(torch.log(1 - p) * p**alpha * (1 - target) ** beta * (1 - positive)).sum()
    return (pos + neg) / positive.sum().clamp(min=1)


def detection_loss(heatmap: torch.Tensor, regression: torch.Tensor, targets: list[HeadTargets],
                   regression_weight: float = 0.25) -> dict[str, torch.Tensor]:
    """Focal loss on the heatmaps plus weighted L1 on the regression at the true centres (velocity where known)."""
    target_heat = torch.from_numpy(np.stack([t.heatmap for t in targets])).to(heatmap.device)
    heat = focal_loss(heatmap, target_heat)
    b, c = regression.shape[:2]
    flat = regression.reshape(b, c, -1)
    picked = torch.cat([flat[i, :, torch.from_numpy(t.cells).to(flat.device)].T for i, t in enumerate(targets)])
    wanted = torch.from_numpy(np.concatenate([t.regression for t in targets])).to(flat.device)
    known = torch.isfinite(wanted)
    weights = torch.tensor(REGRESSION_WEIGHTS, device=flat.device).expand_as(wanted)
    l1 = ((picked - torch.nan_to_num(wanted)).abs() * weights * known).sum() / max(len(wanted), 1)
    return {"heatmap": heat, "regression": l1, "total": heat + regression_weight * l1}


def conv_block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False), nn.BatchNorm2d(channels_out),
                         nn.ReLU(inplace=True))


class CenterHead(nn.Module):
    """A shared 3x3 block, then a heatmap branch (bias set so the initial score is 0.1) and a regression branch."""

    def __init__(self, channels: int, classes: int = len(DETECTION_CLASSES), hidden: int = 64) -> None:
        super().__init__()
        self.shared = conv_block(channels, hidden)
        self.heatmap = nn.Sequential(conv_block(hidden, hidden), nn.Conv2d(hidden, classes, 1))
        self.regression = nn.Sequential(conv_block(hidden, hidden), nn.Conv2d(hidden, len(REGRESSION), 1))
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - 0.1) / 0.1))

    def forward(self, bev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.shared(bev)
        return self.heatmap(x), self.regression(x)


class LidarBEV(nn.Module):
    """Per-voxel features of a 3D backbone, max-pooled into BEV cells, then a 3x3 block."""

    def __init__(self, backbone: nn.Module, grid: BEVGrid, channels: int = 64) -> None:
        super().__init__()
        self.backbone, self.grid = backbone, grid
        self.block = conv_block(backbone.config.out_channels, channels)
        self.out_channels = channels

    def forward(self, points: PointBatch, batch_size: int) -> torch.Tensor:
        feats = self.backbone(points)
        col, row, inside = self.grid.index(points.coord[:, :2])
        n = self.grid.cells
        cell = (points.batch_index * n * n + row * n + col)[inside]
        bev = feats.new_zeros(batch_size * n * n, feats.shape[1])
        bev = bev.scatter_reduce(0, cell[:, None].expand(-1, feats.shape[1]), feats[inside], "amax",
                                 include_self=True)  # ReLU features: empty cells stay 0
        return self.block(bev.reshape(batch_size, n, n, -1).permute(0, 3, 1, 2))


class CameraBEV(nn.Module):
    """Multi-view 2D features lifted into a voxel volume over the BEV map (height cells stacked into channels)."""

    def __init__(self, backbone: nn.Module, grid: BEVGrid, channels: int = 64,
                 volume: tuple[int, int, int] = (64, 64, 4)) -> None:
        super().__init__()
        self.backbone, self.grid, self.volume = backbone, grid, volume
        self.level = min(range(len(backbone.strides)), key=lambda i: abs(backbone.strides[i] - 8))
        self.block = conv_block(backbone.channels[self.level] * volume[2], channels)
        self.out_channels = channels

    def forward(self, images: torch.Tensor, intrinsics: torch.Tensor, cam_to_lidar: torch.Tensor) -> torch.Tensor:
        maps = self.backbone(images)
        g = self.grid
        lifted, _ = lift_to_volume(maps.maps[self.level], maps.strides[self.level], intrinsics, cam_to_lidar,
                                   tuple(images.shape[-2:]), (-g.extent, -g.extent, g.z_range[0]),
                                   (g.extent, g.extent, g.z_range[1]), self.volume)  # (B, Z, Y, X, C)
        b, z, y, x, c = lifted.shape
        bev = lifted.permute(0, 1, 4, 2, 3).reshape(b, z * c, y, x)
        bev = F.interpolate(bev, size=(g.cells, g.cells), mode="bilinear", align_corners=False)
        return self.block(bev)


@dataclass
class DetectionInput:
    """A batch of samples: the voxelised sweeps (LiDAR tracks) and/or the resized camera images (camera tracks)."""

    batch_size: int
    points: PointBatch | None = None
    images: torch.Tensor | None = None  # (B, V, 3, H, W) normalised
    intrinsics: torch.Tensor | None = None  # (B, V, 3, 3) of the resized images
    cam_to_lidar: torch.Tensor | None = None  # (B, V, 4, 4)

    def to(self, device: torch.device) -> DetectionInput:
        tensors = [None if t is None else t.to(device) for t in (self.images, self.intrinsics, self.cam_to_lidar)]
        return DetectionInput(self.batch_size, None if self.points is None else self.points.to(device), *tensors)


class Detector(nn.Module):
    """LiDAR and/or camera BEV branches, fused by concatenation + 3x3 conv when both are present, and the head.

    ``backbone`` holds the branches' backbones (the fine-tuning engine's learning-rate groups and the frozen-probe
    logic find them there)."""

    def __init__(self, grid: BEVGrid, lidar: nn.Module | None = None, camera: nn.Module | None = None,
                 channels: int = 64) -> None:
        super().__init__()
        if lidar is None and camera is None:
            raise ValueError("a detector needs a LiDAR or a camera backbone")
        self.grid = grid
        self.lidar = LidarBEV(lidar, grid, channels) if lidar is not None else None
        self.camera = CameraBEV(camera, grid, channels) if camera is not None else None
        self.backbone = nn.ModuleDict({k: v for k, v in (("lidar", lidar), ("camera", camera)) if v is not None})
        branches = [b for b in (self.lidar, self.camera) if b is not None]
        self.fuse = conv_block(channels * len(branches), channels) if len(branches) > 1 else nn.Identity()
        self.head = CenterHead(channels)

    def forward(self, batch: DetectionInput) -> tuple[torch.Tensor, torch.Tensor]:
        maps = []
        if self.lidar is not None:
            maps.append(self.lidar(batch.points, batch.batch_size))
        if self.camera is not None:
            maps.append(self.camera(batch.images, batch.intrinsics, batch.cam_to_lidar))
        return self.head(self.fuse(torch.cat(maps, 1)))


@torch.no_grad()
def decode(heatmap: torch.Tensor, regression: torch.Tensor, grid: BEVGrid, top_k: int = 100,
           score_threshold: float = 0.05, nms_iou: float = 0.2, classes: tuple[str, ...] = DETECTION_CLASSES
           ) -> list[LidarBoxes]:
    """Boxes per sample: top-k local maxima of the heatmaps, regressed, then per-class NMS in BEV."""
    b, k, h, w = heatmap.shape
    scores = heatmap.sigmoid()
    peaks = scores * (F.max_pool2d(scores, 3, stride=1, padding=1) == scores)
    out = []
    for i in range(b):
        value, flat = peaks[i].reshape(-1).topk(min(top_k, k * h * w))
        keep = value > score_threshold
        value, flat = value[keep], flat[keep]
        cls, cell = flat // (h * w), flat % (h * w)
        row, col = cell // w, cell % w
        reg = regression[i].reshape(len(REGRESSION), -1)[:, cell].T
        x = (col + reg[:, 0]) * grid.cell - grid.extent
        y = (row + reg[:, 1]) * grid.cell - grid.extent
        size = reg[:, 3:6].clamp(max=4.0).exp()
        yaw = torch.atan2(reg[:, 6], reg[:, 7])
        c, s = yaw.cos().abs(), yaw.sin().abs()  # the rotated box's axis-aligned bounds (length along its heading)
        hx, hy = (c * size[:, 1] + s * size[:, 0]) / 2, (s * size[:, 1] + c * size[:, 0]) / 2
        bounds = torch.stack([x - hx, y - hy, x + hx, y + hy], 1)
        kept = batched_nms(bounds, value, cls, nms_iou)
        out.append(LidarBoxes(
            centers=torch.stack([x, y, reg[:, 2]], 1)[kept].cpu().numpy().astype(np.float64),
            sizes=size[kept].cpu().numpy().astype(np.float64), yaws=yaw[kept].cpu().numpy().astype(np.float64),
            velocities=reg[kept, 8:10].cpu().numpy().astype(np.float64),
            names=[classes[int(c)] for c in cls[kept]], scores=value[kept].cpu().numpy().astype(np.float64)))
    return out
