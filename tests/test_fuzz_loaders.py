"""Fuzzing of every loader: one damaged file gives a DataFormatError naming it, or a still-valid scene.

Each case copies a small valid dataset, replaces ONE file with a mutation of it (random bytes, flipped bytes,
truncation, NaN/inf, a wrong dtype or shape, label ids out of range, garbage in a text matrix, a corrupt
devkit table) and loads the affected scenes through the public loader API. A mutation that is bound to make
the file invalid (``must_fail``) has to be rejected; any other one may also load, as long as the scene is
valid. Anything but a :class:`DataFormatError` naming the file (or its folder) is a failure.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.classes import NUSCENES16, S3DIS13, SCANNET20, SCANNET200, SEMANTIC_KITTI19, semantic_kitti_lut
from tasks.errors import DataFormatError
from tasks.formats.base import SceneDataset
from tasks.formats.nuscenes import NuScenesLidarSegDataset, read_lidarseg_frames
from tasks.formats.rgbd_folder import RGBDFolder
from tasks.formats.s3dis import S3DISDataset
from tasks.formats.scannet import ScanNetDataset, read_scannet_points_bin
from tasks.formats.semantickitti import SemanticKITTIDataset
from tasks.structures import PosedViews, Scene

FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
Draw = Callable[[st.SearchStrategy[Any]], Any]


# --- loaders and the files they read ------------------------------------------------------------------------------
def _every_scene(dataset: SceneDataset) -> list[Scene]:
    return [dataset.load(name) for name in dataset.names]


@dataclass(frozen=True)
class Loader:
    """A public loader: the seed folder it reads, how to load every scene of it, and its number of classes."""

    folder: str
    load: Callable[[Path], list[Scene]]
    num_classes: int = 0


LOADERS = {
    "scannet20": Loader("scannet", lambda r: _every_scene(ScanNetDataset(r, "train", with_views=True)), len(SCANNET20)),
    "scannet200": Loader("scannet", lambda r: _every_scene(ScanNetDataset(r, "train", "segment200")), len(SCANNET200)),
    "s3dis": Loader("s3dis", lambda r: _every_scene(S3DISDataset(r, "train")), len(S3DIS13)),
    "semantickitti": Loader("semantickitti", lambda r: _every_scene(SemanticKITTIDataset(r, "train")),
                            len(SEMANTIC_KITTI19)),
    "nuscenes": Loader("nuscenes", lambda r: [scene for split in ("train", "val") for scene in
                                              _every_scene(NuScenesLidarSegDataset(r, split, "v1.0-mini"))],
                       len(NUSCENES16)),
    "lidarseg_frames": Loader("lidarseg_frames", read_lidarseg_frames, len(NUSCENES16)),
    "rgbd_folder": Loader("rgbd_folder", lambda r: [RGBDFolder(r / "capture").scene(voxel_size=0.05, stride=4)]),
    "scannet_bin": Loader("scannet_bin", lambda r: [read_scannet_points_bin(r / "scene.bin")]),
}


@dataclass(frozen=True)
class Target:
    """One file a loader reads (``rel``: a glob under the loader's folder, first match) and what it holds.

    ``role`` is one of float, color, segment, instance (npy); float, kitti, lidarseg (bin); intrinsics, pose
    (text); color, depth (image); table (json). ``columns`` is a bin record's width or a text matrix's side.
    """

    loader: str
    rel: str
    codec: str
    role: str
    columns: int = 1
    dtype: str = "float32"
    paired: bool = True  # bin: another file fixes the number of records

    def __str__(self) -> str:
        return f"{self.loader}:{self.rel}"


_POINTCEPT = (("coord", "float"), ("color", "color"), ("normal", "float"), ("instance", "instance"))
TARGETS = [
    *(Target("scannet20", f"train/scene0000_00/{key}.npy", "npy", role) for key, role in _POINTCEPT),
    Target("scannet20", "train/scene0000_00/segment20.npy", "npy", "segment"),
    Target("scannet200", "train/scene0000_00/segment200.npy", "npy", "segment"),
    Target("scannet20", "rgbd/scene0000_00/color/0.jpg", "image", "color"),
    Target("scannet20", "rgbd/scene0000_00/depth/1.png", "image", "depth"),
    Target("scannet20", "rgbd/scene0000_00/pose/2.txt", "text", "pose", 4),
    Target("scannet20", "rgbd/scene0000_00/intrinsic/intrinsic_depth.txt", "text", "intrinsics", 4),
    *(Target("s3dis", f"Area_1/office_1/{key}.npy", "npy", role) for key, role in _POINTCEPT),
    Target("s3dis", "Area_1/office_1/segment.npy", "npy", "segment"),
    Target("semantickitti", "sequences/00/velodyne/000000.bin", "bin", "float", 4),
    Target("semantickitti", "sequences/00/labels/000000.label", "bin", "kitti", 1, "uint32"),
    Target("nuscenes", "samples/LIDAR_TOP/*.pcd.bin", "bin", "float", 5),
    Target("nuscenes", "lidarseg/v1.0-mini/*.bin", "bin", "lidarseg", 1, "uint8"),
    *(Target("nuscenes", f"v1.0-mini/{table}.json", "json", "table")
      for table in ("scene", "sample", "sample_data", "lidarseg", "calibrated_sensor", "category")),
    Target("lidarseg_frames", "frame00/points.bin", "bin", "float", 5),
    Target("lidarseg_frames", "frame00/lidarseg.bin", "bin", "lidarseg", 1, "uint8"),
    Target("rgbd_folder", "capture/camera-intrinsics.txt", "text", "intrinsics", 3),
    Target("rgbd_folder", "capture/frame-000001.pose.txt", "text", "pose", 4),
    Target("rgbd_folder", "capture/frame-000001.depth.png", "image", "depth"),
    Target("rgbd_folder", "capture/frame-000000.color.jpg", "image", "color"),
    Target("scannet_bin", "scene.bin", "bin", "float", 6, paired=False),
]
REAL_LOADERS = ("semantickitti", "lidarseg_frames", "rgbd_folder", "scannet_bin")


def _copy(src: Path, dst: Path) -> None:
    """Copy a file or folder, without camera images or permissions (the real samples are read-only)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=shutil.copyfile, ignore=shutil.ignore_patterns("CAM_*"))
    else:
        shutil.copyfile(src, dst)


def _rgbd_folder(dst: Path, frames: list[tuple[Path, Path, Path]], intrinsics: np.ndarray) -> None:
    """A 7-Scenes style folder from (color, depth, pose) files."""
    dst.mkdir(parents=True)
    (dst / "camera-intrinsics.txt").write_text(_matrix_text(intrinsics))
    for i, (color, depth, pose) in enumerate(frames):
        for src, suffix in ((color, "color.jpg"), (depth, "depth.png"), (pose, "pose.txt")):
            _copy(src, dst / f"frame-{i:06d}.{suffix}")


@pytest.fixture(scope="module")
def synthetic_seeds(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small valid dataset per loader, from the tiny suite (read-only by convention)."""
    dst = tmp_path_factory.mktemp("seeds")
    for rel in ("scannet/train/scene0000_00", "scannet/rgbd/scene0000_00", "s3dis/Area_1/office_1",
                "semantickitti/sequences/00/velodyne/000000.bin", "semantickitti/sequences/00/labels/000000.label",
                "nuscenes"):
        _copy(tiny_root / rel, dst / rel)
    nus = NuScenesLidarSegDataset(tiny_root / "nuscenes", "train", "v1.0-mini")
    for i, token in enumerate(nus.names):
        sd_token = nus.nusc.get("sample", token)["data"]["LIDAR_TOP"]
        frame = dst / "lidarseg_frames" / f"frame{i:02d}"
        _copy(nus.root / nus.nusc.get("sample_data", sd_token)["filename"], frame / "points.bin")
        _copy(nus.root / nus.nusc.get("lidarseg", sd_token)["filename"], frame / "lidarseg.bin")
    rgbd = tiny_root / "scannet" / "rgbd" / "scene0000_00"
    frames = [(rgbd / f"color/{i}.jpg", rgbd / f"depth/{i}.png", rgbd / f"pose/{i}.txt") for i in range(3)]
    intrinsics = np.loadtxt(rgbd / "intrinsic" / "intrinsic_depth.txt")[:3, :3]
    _rgbd_folder(dst / "rgbd_folder" / "capture", frames, intrinsics)
    scene = tiny_root / "scannet" / "train" / "scene0000_00"
    xyzrgb = np.c_[np.load(scene / "coord.npy"), np.load(scene / "color.npy")][:600].astype(np.float32)
    (dst / "scannet_bin").mkdir()
    xyzrgb.tofile(dst / "scannet_bin" / "scene.bin")
    return dst


@pytest.fixture(scope="module")
def real_seeds(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same layouts from the real samples in ../shared/data (copied to a temporary folder only)."""
    dst = tmp_path_factory.mktemp("real_seeds")
    _copy(shared_data / "semantickitti-format-sample", dst / "semantickitti")
    _copy(shared_data / "nuscenes-lidarseg-samples" / "frame00", dst / "lidarseg_frames" / "frame00")
    _copy(shared_data / "scannet-scan-sample" / "scene0000_00.bin", dst / "scannet_bin" / "scene.bin")
    src = shared_data / "7scenes-rgbd"
    frames = [(src / f"frame-{i:06d}.color.jpg", src / f"frame-{i:06d}.depth.png", src / f"frame-{i:06d}.pose.txt")
              for i in (0, 10)]
    _rgbd_folder(dst / "rgbd_folder" / "capture", frames, np.loadtxt(src / "camera-intrinsics.txt"))
    return dst


# --- mutations ----------------------------------------------------------------------------------------------------
class Mutation(NamedTuple):
    data: bytes
    must_fail: bool  # the file is bound to be invalid: loading it has to raise
    what: str


def _matrix_text(mat: np.ndarray) -> str:
    return "".join(" ".join(f"{v:.9g}" for v in row) + "\n" for row in np.atleast_2d(mat))


def _decode(target: Target, raw: bytes) -> np.ndarray:
    if target.codec == "npy":
        return np.load(io.BytesIO(raw))
    if target.codec == "bin":
        return np.frombuffer(raw, target.dtype).reshape(-1, target.columns).copy()
    if target.codec == "text":
        return np.loadtxt(io.StringIO(raw.decode()), ndmin=2)
    return cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)


def _encode(target: Target, arr: np.ndarray) -> bytes:
    if target.codec == "npy":
        buf = io.BytesIO()
        np.save(buf, arr)
        return buf.getvalue()
    if target.codec == "bin":
        return arr.tobytes()
    if target.codec == "text":
        return _matrix_text(arr).encode()
    return cv2.imencode(".png" if target.role == "depth" else ".jpg", arr)[1].tobytes()


def _header_size(target: Target, raw: bytes) -> int:
    """Bytes before the first record: the .npy header, one bin record, PNG signature + IHDR, a text line."""
    if target.codec == "npy":
        return 10 + int.from_bytes(raw[8:10], "little")
    if target.codec == "bin":
        return np.dtype(target.dtype).itemsize * target.columns
    return {"image": 33, "text": raw.find(b"\n") + 1, "json": 2}[target.codec]


def _bin_must_fail(target: Target, size: int, original: int) -> bool:
    """A bin file of a new size is invalid unless it is unpaired and still whole records."""
    record = _header_size(target, b"")
    return size != original and (target.paired or size % record != 0)


def _rng(draw: Draw) -> np.random.Generator:
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


def _positions(draw: Draw, size: int) -> list[int]:
    return draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=4, unique=True))


def random_bytes(draw: Draw, target: Target, raw: bytes, k: int) -> Mutation:
    size = draw(st.one_of(st.integers(0, 64), st.just(len(raw)), st.integers(0, 2 * len(raw))))
    return Mutation(_rng(draw).bytes(size), False, f"{size} random bytes")


def random_payload(draw: Draw, target: Target, raw: bytes, k: int) -> Mutation:
    head = _header_size(target, raw)
    return Mutation(raw[:head] + _rng(draw).bytes(len(raw) - head), False, "random bytes after the header")


def flip_bytes(draw: Draw, target: Target, raw: bytes, k: int) -> Mutation:
    data = bytearray(raw)
    for pos in _positions(draw, len(raw)):
        data[pos] ^= draw(st.integers(1, 255))
    return Mutation(bytes(data), False, "flipped bytes")


def truncation(target: Target, raw: bytes, size: int) -> Mutation:
    """The first ``size`` bytes: a broken file, except text (the last number may survive) or lost whitespace."""
    must_fail = {"npy": True, "image": True, "text": False, "json": bool(raw[size:].strip()),
                 "bin": _bin_must_fail(target, size, len(raw))}[target.codec]
    return Mutation(raw[:size], must_fail, f"truncated to {size} of {len(raw)} B")


def truncate(draw: Draw, target: Target, raw: bytes, k: int) -> Mutation:
    head = _header_size(target, raw)
    size = draw(st.one_of(st.just(0), st.just(1), st.integers(2, max(2, head - 1)),
                          st.integers(min(head, len(raw) - 2), len(raw) - 2), st.just(len(raw) - 1)))
    return truncation(target, raw, size)


def non_finite(draw: Draw, target: Target, raw: bytes, k: int) -> Mutation:
    arr = _decode(target, raw).astype(np.float32 if target.codec != "text" else np.float64)
    flat = arr.reshape(-1)
    for pos in _positions(draw, flat.size):
        flat[pos] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    # a non-finite camera pose marks a frame to skip (real ScanNet has them); nothing else may hold one
    return Mutation(_encode(target, arr), target.role != "pose", "NaN/inf injected")


NPY_KINDS = {"float": "f", "color": "fu", "segment": "iu", "instance": "iu"}
DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32",
          "float64", "complex64")


def wrong_dtype(draw: Draw, target: Target, raw: bytes, k: int) -> Mutation:
    arr = _decode(target, raw)
    dtype = np.dtype(draw(st.sampled_from(DTYPES + (("U4", "O") if target.codec == "npy" else ()))))
    with np.errstate(all="ignore"):
        data = _encode(target, arr.astype(dtype))
    must_fail = (dtype.kind not in NPY_KINDS[target.role] if target.codec == "npy"
                 else _bin_must_fail(target, len(data), len(raw)))
    return Mutation(data, must_fail, f"rewritten as {dtype}")


def wrong_shape(draw: Draw, target: Target, raw: bytes, k: int) -> Mutation:
    arr = _decode(target, raw)
    r = draw(st.integers(1, 5))
    shapes = {"fewer rows": arr[:-r], "more rows": np.concatenate([arr, arr[:r]]), "no rows": arr[:0],
              "extra axis": arr[None]}
    if arr.ndim == 2:
        shapes |= {"fewer columns": arr[:, :-1], "more columns": np.c_[arr, arr[:, :1]], "flat": arr.reshape(-1)}
    else:
        shapes["column"] = arr[:, None]
    how = draw(st.sampled_from(sorted(shapes)))
    data = _encode(target, shapes[how])
    return Mutation(data, target.codec == "npy" or _bin_must_fail(target, len(data), len(raw)), how)


UNKNOWN_KITTI_IDS = [*np.flatnonzero(semantic_kitti_lut() == -2).tolist(), 260, 1000, 0xFFFF]


def bad_labels(draw: Draw, target: Target, raw: bytes, k: int) -> Mutation:
    arr = _decode(target, raw)
    flat = arr.reshape(-1)
    info = np.iinfo(arr.dtype)
    values = {
        "segment": st.one_of(st.integers(-300, -2), st.integers(k, k + 300)),
        "instance": st.integers(-300, -2),
        "lidarseg": st.integers(32, 255),
        "kitti": st.sampled_from(UNKNOWN_KITTI_IDS),
    }[target.role].filter(lambda v: info.min <= v <= info.max)
    for pos in _positions(draw, flat.size):
        value = draw(values)
        flat[pos] = (flat[pos] & 0xFFFF0000) | value if target.role == "kitti" else value
    return Mutation(_encode(target, arr), True, "label ids out of range")


def garbage_token(draw: Draw, target: Target, raw: bytes, k: int) -> Mutation:
    def not_a_number(token: str) -> bool:
        try:
            float(token)
        except ValueError:
            return True
        return False

    token = draw(st.text(st.characters(blacklist_categories=("Z", "Cc", "Cs")), min_size=1, max_size=6)
                 .filter(not_a_number))
    pieces = re.split(r"(\s+)", raw.decode())  # numbers at even positions, whitespace between them
    pieces[2 * draw(st.integers(0, (len(pieces) - 1) // 2))] = token
    return Mutation("".join(pieces).encode(), True, f"garbage token {token!r}")


def wrong_matrix_shape(draw: Draw, target: Target, raw: bytes, k: int) -> Mutation:
    shape = draw(st.tuples(st.integers(0, 6), st.integers(1, 6)).filter(lambda s: s != (target.columns,) * 2))
    mat = _rng(draw).normal(size=shape)
    ragged = draw(st.booleans()) and shape[0] > 1
    text = _matrix_text(mat) + ("1 2\n" if ragged else "")
    return Mutation(text.encode(), True, f"matrix of shape {shape}{' + a ragged row' if ragged else ''}")


def wrong_image(draw: Draw, target: Target, raw: bytes, k: int) -> Mutation:
    img = _decode(target, raw)
    h, w = img.shape[:2]
    images = {"8-bit": img.astype(np.uint8), "resized": cv2.resize(img, (w // 2, h // 2 + 1)),
              "blank": np.zeros_like(img), "channels": img[..., 0] if img.ndim == 3 else np.dstack([img] * 3)}
    how = draw(st.sampled_from(sorted(images)))
    # one depth intrinsics serves all frames, so a depth of another size or type is an error; colour is resized
    must_fail = target.role == "depth" and how != "blank"
    return Mutation(_encode(target, images[how]), must_fail, f"{how} image")


JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.just([]),
                        st.just({}), st.lists(st.integers(), max_size=2))


def table_record(draw: Draw, target: Target, raw: bytes, k: int) -> Mutation:
    """A devkit table with a wrong top level, or one record with a key deleted, retyped or a dangling token."""
    table = json.loads(raw)
    if draw(st.integers(0, 5)) == 0:
        return Mutation(json.dumps(draw(JSON_VALUES)).encode(), False, "table of the wrong type")
    record = draw(st.sampled_from(table))
    key = draw(st.sampled_from(sorted(record)))
    how = draw(st.sampled_from(["deleted", "retyped", "dangling"]))
    if how == "deleted":
        del record[key]
    elif how == "dangling" and (key.endswith("token") or key in ("next", "prev")):
        record[key] = draw(st.text("0123456789abcdef", min_size=1, max_size=32))
    else:
        record[key] = draw(JSON_VALUES)
    return Mutation(json.dumps(table).encode(), False, f"{key!r} of a record {how}")


# a mutator draws a Mutation of a target file's bytes; the int is the loader's number of classes
MUTATORS: dict[str, tuple[Callable[[Draw, Target, bytes, int], Mutation], ...]] = {
    "npy": (random_bytes, random_payload, flip_bytes, truncate, wrong_dtype, wrong_shape),
    "bin": (random_bytes, flip_bytes, truncate, wrong_dtype, wrong_shape),
    "text": (random_bytes, flip_bytes, truncate, non_finite, garbage_token, wrong_matrix_shape),
    "image": (random_bytes, random_payload, flip_bytes, truncate, wrong_image),
    "json": (random_bytes, flip_bytes, truncate, table_record),
}


def mutators(target: Target) -> tuple[Callable[[Draw, Target, bytes, int], Mutation], ...]:
    extra = ((non_finite,) if target.role in ("float", "color") and target.codec in ("npy", "bin") else ()) + (
        (bad_labels,) if target.role in ("segment", "instance", "kitti", "lidarseg") else ())
    return MUTATORS[target.codec] + extra


# --- the contract -------------------------------------------------------------------------------------------------
TRAILING_SHAPES = {"color": (3,), "normal": (3,), "strength": (1,), "segment": (), "instance": ()}


def check_views(views: PosedViews) -> None:
    assert views.image.dtype == np.uint8 and views.depth.dtype == np.float32
    assert np.isfinite(views.depth).all() and (views.depth >= 0).all()
    assert np.isfinite(views.intrinsics).all() and (views.intrinsics[:, [0, 1], [0, 1]] > 0).all()
    assert np.isfinite(views.cam_to_world).all()


def check_scene(scene: Scene, num_classes: int) -> None:
    """What every loader promises: consistent lengths, finite values, colours in [0, 255], labels in range or -1."""
    n = len(scene.coord)
    assert n > 0 and scene.coord.shape == (n, 3) and np.isfinite(scene.coord).all()
    for key, trailing in TRAILING_SHAPES.items():
        value = getattr(scene, key)
        assert value is None or value.shape == (n, *trailing) and np.isfinite(value).all(), key
    if scene.color is not None:
        assert scene.color.min() >= 0 and scene.color.max() <= 255
    if scene.segment is not None:
        assert ((scene.segment == -1) | (scene.segment >= 0) & (scene.segment < num_classes)).all()
    if scene.instance is not None:
        assert (scene.instance >= -1).all()
    if scene.views is not None:
        check_views(scene.views)


def check_mutation(seeds: Path, target: Target, mutate: Callable[[bytes], Mutation]) -> None:
    """Load the target's scenes with the target file mutated, in a fresh copy, and check the contract."""
    loader = LOADERS[target.loader]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / loader.folder
        shutil.copytree(seeds / loader.folder, root, copy_function=os.link)  # hard links: a cheap fresh copy
        path = sorted(root.glob(target.rel))[0]
        mutation = mutate(path.read_bytes())
        path.unlink()  # a new file, never a write through the link into the seed
        path.write_bytes(mutation.data)
        try:
            scenes = loader.load(root)
        except DataFormatError as err:
            # the file, one of its folders, or (a count mismatch) the file it does not match and its name
            named = [path, *path.parents[: len(path.relative_to(root).parts) - 1]]
            assert err.path in named or path.name in err.problem, f"{mutation.what}: {err} does not name {path}"
            assert str(err).startswith(f"{err.path}: ")
            return
    assert not mutation.must_fail, f"{mutation.what} of {target} loaded without an error"
    for scene in scenes:
        check_scene(scene, loader.num_classes)


def fuzz(seeds: Path, target: Target, data: st.DataObject) -> None:
    how = data.draw(st.sampled_from(mutators(target)), label="mutator")
    check_mutation(seeds, target, lambda raw: how(data.draw, target, raw, LOADERS[target.loader].num_classes))


@pytest.mark.parametrize("target", TARGETS, ids=str)
@FUZZ
@given(data=st.data())
def test_fuzz_synthetic(synthetic_seeds: Path, target: Target, data: st.DataObject) -> None:
    fuzz(synthetic_seeds, target, data)


@pytest.mark.parametrize("target", [t for t in TARGETS if t.loader in REAL_LOADERS], ids=str)
@settings(FUZZ, max_examples=8)
@given(data=st.data())
def test_fuzz_real_samples(real_seeds: Path, target: Target, data: st.DataObject) -> None:
    fuzz(real_seeds, target, data)


@pytest.mark.parametrize("target", TARGETS, ids=str)
@pytest.mark.parametrize("length", ["empty", "one byte", "within the header", "mid-record", "one byte short"])
def test_truncation_classes(synthetic_seeds: Path, target: Target, length: str) -> None:
    """Every length class of truncation, for every file (the fuzzer samples them; this pins each one)."""
    def cut(raw: bytes) -> Mutation:
        head = _header_size(target, raw)
        sizes = {"empty": 0, "one byte": 1, "within the header": max(2, head // 2),
                 "mid-record": head + (len(raw) - head) // 2 + 1, "one byte short": len(raw) - 1}
        return truncation(target, raw, sizes[length])

    check_mutation(synthetic_seeds, target, cut)
