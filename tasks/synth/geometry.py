"""Scenes made of oriented boxes: exact ray casting, surface sampling and view-independent shading.

One geometry serves both the point clouds and the images rendered from it, so rendering targets of the
mini datasets are exact (depth of a pixel is the true distance to the same surfaces the points lie on).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LIGHT = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
# Which faces are sampled: (-x, +x, -y, +y, -z, +z). Bottoms rest on something and are never seen.
NO_BOTTOM = (True, True, True, True, False, True)
TOP_ONLY = (False, False, False, False, False, True)


@dataclass
class Boxes:
    """P oriented boxes (yaw about z). ``kind`` indexes the generator's class table."""

    center: np.ndarray  # (P, 3)
    half: np.ndarray  # (P, 3) half extents along the box's local axes
    yaw: np.ndarray  # (P,)
    kind: np.ndarray  # (P,) int
    instance: np.ndarray  # (P,) int, -1 for stuff
    color: np.ndarray  # (P, 3) albedo in [0, 1]
    texture: np.ndarray  # (P,) int: 0 plain, 1 checker, 2 stripes, 3 waves
    faces: np.ndarray  # (P, 6) bool, faces to sample

    def __len__(self) -> int:
        return len(self.center)

    @classmethod
    def stack(cls, items: list[dict]) -> Boxes:
        return cls(
            center=np.array([b["center"] for b in items], dtype=np.float64),
            half=np.array([b["half"] for b in items], dtype=np.float64),
            yaw=np.array([b.get("yaw", 0.0) for b in items], dtype=np.float64),
            kind=np.array([b["kind"] for b in items], dtype=np.int64),
            instance=np.array([b.get("instance", -1) for b in items], dtype=np.int64),
            color=np.array([b["color"] for b in items], dtype=np.float64),
            texture=np.array([b.get("texture", 0) for b in items], dtype=np.int64),
            faces=np.array([b.get("faces", NO_BOTTOM) for b in items], dtype=bool),
        )

    def to_local(self, points: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Points (N, 3) into the local frames of boxes ``index`` (N,)."""
        c, s = np.cos(-self.yaw[index]), np.sin(-self.yaw[index])
        d = points - self.center[index]
        return np.stack([c * d[:, 0] - s * d[:, 1], s * d[:, 0] + c * d[:, 1], d[:, 2]], axis=1)

    def rotate_to_world(self, vectors: np.ndarray, index: np.ndarray) -> np.ndarray:
        c, s = np.cos(self.yaw[index]), np.sin(self.yaw[index])
        return np.stack([c * vectors[:, 0] - s * vectors[:, 1], s * vectors[:, 0] + c * vectors[:, 1],
                         vectors[:, 2]], axis=1)


def raycast(boxes: Boxes, origins: np.ndarray, dirs: np.ndarray, chunk: int = 8192
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit of each ray: distance t (inf on a miss), box index (-1) and world normal."""
    n = len(origins)
    t_out = np.full(n, np.inf)
    idx_out = np.full(n, -1, dtype=np.int64)
    normal_out = np.zeros((n, 3))
    cos, sin = np.cos(-boxes.yaw)[None], np.sin(-boxes.yaw)[None]
    for a in range(0, n, chunk):
        o, d = origins[a:a + chunk, None, :] - boxes.center[None], dirs[a:a + chunk, None, :]
        lo = np.stack([cos * o[..., 0] - sin * o[..., 1], sin * o[..., 0] + cos * o[..., 1], o[..., 2]], -1)
        ld = np.stack([cos * d[..., 0] - sin * d[..., 1], sin * d[..., 0] + cos * d[..., 1],
                       np.broadcast_to(d[..., 2], lo.shape[:2])], -1)
        ld = np.where(np.abs(ld) < 1e-12, 1e-12, ld)
        t1, t2 = (-boxes.half[None] - lo) / ld, (boxes.half[None] - lo) / ld
        near, far = np.minimum(t1, t2), np.maximum(t1, t2)
        t_near, t_far = near.max(-1), far.min(-1)
        hit = (t_far >= t_near) & (t_near > 1e-6)
        t = np.where(hit, t_near, np.inf)
        best = t.argmin(1)
        rows = np.arange(len(best))
        tb = t[rows, best]
        ok = np.isfinite(tb)
        axis = near[rows, best].argmax(-1)
        local_n = np.zeros((len(best), 3))
        local_n[rows, axis] = -np.sign(ld[rows, best, axis])
        t_out[a:a + chunk] = tb
        idx_out[a:a + chunk] = np.where(ok, best, -1)
        normal_out[a:a + chunk] = np.where(ok[:, None], boxes.rotate_to_world(local_n, best), 0.0)
    return t_out, idx_out, normal_out


def inside_any(boxes: Boxes, points: np.ndarray, exclude: np.ndarray, margin: float = 1e-3,
               chunk: int = 16384) -> np.ndarray:
    """Whether each point lies strictly inside a box other than its own (``exclude``)."""
    out = np.zeros(len(points), dtype=bool)
    cos, sin = np.cos(-boxes.yaw)[None], np.sin(-boxes.yaw)[None]
    for a in range(0, len(points), chunk):
        d = points[a:a + chunk, None, :] - boxes.center[None]
        lx, ly = cos * d[..., 0] - sin * d[..., 1], sin * d[..., 0] + cos * d[..., 1]
        inside = ((np.abs(lx) < boxes.half[None, :, 0] - margin) & (np.abs(ly) < boxes.half[None, :, 1] - margin)
                  & (np.abs(d[..., 2]) < boxes.half[None, :, 2] - margin))
        inside[np.arange(inside.shape[0]), exclude[a:a + chunk]] = False
        out[a:a + chunk] = inside.any(1)
    return out


def sample_surface(boxes: Boxes, density: float, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points on the sampled faces (``density`` per m^2), minus those hidden inside other boxes.

    Returns points (N, 3), normals (N, 3) and the box index of each point.
    """
    pts, nrm, owner = [], [], []
    for p in range(len(boxes)):
        h = boxes.half[p]
        for f in np.flatnonzero(boxes.faces[p]):
            axis, sign = f // 2, (1.0 if f % 2 else -1.0)
            u, v = [a for a in range(3) if a != axis]
            count = rng.poisson(4 * h[u] * h[v] * density)
            if count == 0:
                continue
            local = np.empty((count, 3))
            local[:, axis] = sign * h[axis]
            local[:, u] = rng.uniform(-h[u], h[u], count)
            local[:, v] = rng.uniform(-h[v], h[v], count)
            n = np.zeros((count, 3))
            n[:, axis] = sign
            index = np.full(count, p)
            pts.append(boxes.rotate_to_world(local, index) + boxes.center[p])
            nrm.append(boxes.rotate_to_world(n, index))
            owner.append(index)
    points, normals, owners = np.concatenate(pts), np.concatenate(nrm), np.concatenate(owner)
    keep = ~inside_any(boxes, points, owners)
    return points[keep], normals[keep], owners[keep]


def shade(boxes: Boxes, points: np.ndarray, normals: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """View-independent colour (uint8 RGB): albedo x texture x Lambert, the same for points and pixels."""
    local = boxes.to_local(points, owner)
    tex = boxes.texture[owner]
    checker = (np.floor(local[:, 0] / 0.25) + np.floor(local[:, 1] / 0.25) + np.floor(local[:, 2] / 0.25)) % 2
    stripes = np.floor(local[:, 2] / 0.15) % 2
    waves = 0.5 + 0.5 * np.sin(local[:, 0] * 9.0) * np.cos(local[:, 1] * 7.0)
    factor = np.select([tex == 1, tex == 2, tex == 3], [0.7 + 0.3 * checker, 0.75 + 0.25 * stripes,
                                                        0.7 + 0.3 * waves], 1.0)
    light = 0.55 + 0.45 * np.abs(normals @ LIGHT)
    rgb = boxes.color[owner] * (factor * light)[:, None]
    return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world (OpenCV axes: x right, y down, z forward) for a camera at ``eye`` facing ``target``, z up."""
    up = np.array([0.0, 0.0, 1.0])
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, y, z], axis=1)
    c2w[:3, 3] = eye
    return c2w


def render_view(boxes: Boxes, intrinsics: np.ndarray, cam_to_world: np.ndarray, width: int, height: int,
                max_depth: float = np.inf) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast one pinhole view: RGB (H, W, 3) uint8, planar depth (H, W) float32 (0 = miss), box index."""
    v, u = np.mgrid[0:height, 0:width]
    pix = np.stack([(u.ravel() - intrinsics[0, 2]) / intrinsics[0, 0],
                    (v.ravel() - intrinsics[1, 2]) / intrinsics[1, 1], np.ones(u.size)], axis=1)
    dirs_cam = pix / np.linalg.norm(pix, axis=1, keepdims=True)
    dirs = dirs_cam @ cam_to_world[:3, :3].T
    origins = np.broadcast_to(cam_to_world[:3, 3], dirs.shape)
    t, idx, normal = raycast(boxes, origins, dirs)
    hit = np.isfinite(t) & (t * dirs_cam[:, 2] < max_depth)
    depth = np.where(hit, t * dirs_cam[:, 2], 0.0).astype(np.float32)
    rgb = np.zeros((u.size, 3), dtype=np.uint8)
    rgb[~hit] = (200, 215, 235)  # sky / void
    points = origins[hit] + dirs[hit] * t[hit, None]
    rgb[hit] = shade(boxes, points, normal[hit], idx[hit])
    return rgb.reshape(height, width, 3), depth.reshape(height, width), np.where(hit, idx, -1).reshape(height, width)
