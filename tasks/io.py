"""Checked readers and atomic writers shared by every format module.

Every reader validates what it reads (existence, dtype, shape, finiteness, label range) and raises
:class:`DataFormatError` naming the file, so that a corrupt scene never becomes a silent wrong result.
"""

from __future__ import annotations

import functools
import os
import pickle
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tasks.errors import DataFormatError


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise DataFormatError(path, "file is missing")
    return path


def load_npy(path: Path, kinds: str, columns: int | None = None) -> np.ndarray:
    """Load a ``.npy`` array and check its dtype kind (any of ``kinds``: 'f' float, 'i'/'u' integer) and width.

    ``columns=None`` expects a 1-D array; an int expects ``(N, columns)``.
    """
    require_file(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for truncated/corrupt files
        raise DataFormatError(path, f"cannot be read as .npy ({exc})") from exc
    if arr.dtype.kind not in kinds:
        raise DataFormatError(path, f"dtype {arr.dtype} is not one of the kinds '{kinds}'")
    expected = "(N,)" if columns is None else f"(N, {columns})"
    if columns is None and arr.ndim != 1 or columns is not None and (arr.ndim != 2 or arr.shape[1] != columns):
        raise DataFormatError(path, f"shape {arr.shape} is not {expected}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise DataFormatError(path, f"{int((~np.isfinite(arr)).sum())} non-finite values (NaN/inf)")
    return arr


def load_binary(path: Path, dtype: np.dtype | type, columns: int = 1) -> np.ndarray:
    """Read a flat binary file of ``dtype`` records with ``columns`` values each (KITTI/nuScenes style)."""
    require_file(path)
    itemsize = np.dtype(dtype).itemsize * columns
    size = path.stat().st_size
    if size % itemsize:
        raise DataFormatError(
            path, f"size {size} B is not a multiple of {itemsize} B ({columns} x {np.dtype(dtype)}); truncated?")
    arr = np.fromfile(path, dtype=dtype)
    arr = arr.reshape(-1, columns) if columns > 1 else arr
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise DataFormatError(path, f"{int((~np.isfinite(arr)).sum())} non-finite values (NaN/inf)")
    return arr


def load_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Read a whitespace-separated text matrix (poses, intrinsics) of an exact shape."""
    require_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # an empty file: reported below as a (0, 1) shape
            mat = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DataFormatError(path, f"not a numeric text matrix ({exc})") from exc
    if mat.shape != shape:
        raise DataFormatError(path, f"matrix shape {mat.shape} is not {shape}")
    return mat


def load_intrinsics(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A pinhole intrinsics text matrix (3x3 or 4x4): finite, with positive focal lengths."""
    mat = load_matrix(path, shape)
    if not np.isfinite(mat).all() or not (mat[0, 0] > 0 and mat[1, 1] > 0):
        raise DataFormatError(path, f"not a camera matrix (finite, fx > 0, fy > 0): {mat.tolist()}")
    return mat


def _container_problem(data: bytes) -> str | None:
    """What is wrong with a JPEG/PNG file's framing, checked before OpenCV decodes it.

    OpenCV decodes a truncated JPEG silently (grey at the bottom), and can take seconds on a PNG chunk whose
    length runs past the end of the file.
    """
    # entropy-coded JPEG data stuffs every 0xFF, so FF D9 is only ever a marker; bytes after it (padding, vendor
    # trailers) are legal and kept
    if data[:2] == b"\xff\xd8" and data.rfind(b"\xff\xd9") < 2:
        return "JPEG has no end-of-image marker (truncated)"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        pos = 8
        while pos + 8 <= len(data) and data[pos + 4:pos + 8] != b"IEND":
            pos += 12 + int.from_bytes(data[pos:pos + 4], "big")  # length, type, data, CRC
        if pos + 12 > len(data):
            return "PNG chunks run past the end of the file (truncated or corrupt)"
    return None


def load_image(path: Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Read an image with OpenCV; colour images come back RGB uint8, 16-bit PNGs unchanged."""
    data = require_file(path).read_bytes()
    if problem := _container_problem(data):
        raise DataFormatError(path, problem)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags) if data else None
    except cv2.error as exc:
        raise DataFormatError(path, f"cannot be decoded as an image ({exc})") from exc
    if img is None:
        raise DataFormatError(path, "cannot be decoded as an image (corrupt or truncated)")
    to_rgb = {3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGBA}.get(img.shape[2]) if img.ndim == 3 else None
    return img if to_rgb is None else cv2.cvtColor(img, to_rgb)


def check_length(path: Path, arr: np.ndarray, n: int, points: Path | None = None) -> np.ndarray:
    """Check that a per-point file has ``n`` entries, as many as the ``points`` file (named in the error)."""
    if len(arr) != n:
        source = f"{points.name} has" if points else "the scene has"
        raise DataFormatError(path, f"has {len(arr)} entries but {source} {n} points")
    return arr


def check_labels(path: Path, labels: np.ndarray, num_classes: int, ignore_index: int = -1) -> np.ndarray:
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        raise DataFormatError(
            path, f"{int(bad.sum())} labels outside [0, {num_classes}) and not the ignore index {ignore_index} "
            f"(e.g. {int(labels[bad][0])})"
        )
    return labels


def check_range(path: Path, values: np.ndarray, what: str, low: float, high: float = np.inf) -> np.ndarray:
    """Check that all ``values`` lie in ``[low, high]``."""
    bad = (values < low) | (values > high)
    if bad.any():
        raise DataFormatError(path, f"{int(bad.sum())} {what} outside [{low}, {high}] (e.g. {values[bad][0]})")
    return values


# ------------------------------------------------------------------- files from strangers: data, never code
# A pickle names the functions it calls while loading (``os.system`` as readily as ``numpy.ndarray``). Checkpoints,
# point lists and info files are downloaded from strangers, so they load through allowlists: tensors (torch's
# weights-only unpickler), numpy arrays, dtypes and scalars, and builtin containers; anything else is refused,
# naming the file and the global, before it is imported.
_NUMPY_GLOBALS = {(core, name) for core in ("numpy.core.multiarray", "numpy._core.multiarray")
                  for name in ("_reconstruct", "scalar")} | {("numpy", "ndarray"), ("numpy", "dtype")}
_PICKLE_GLOBALS = _NUMPY_GLOBALS | {("_codecs", "encode")} | {  # _codecs.encode: bytes in protocol-2 pickles
    ("builtins", name) for name in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str",
                                    "bytes", "bytearray", "bool", "slice", "range")}
_DATA_DTYPES = "?bBhHiIlLqQefdgFDUS"  # numpy's numeric, string and bytes dtypes
# numpy.dtypes' classes a pickle may name (void, object and datetime ones too: their contents go through the same
# unpickler)
_NUMPY_DTYPES = {type(np.dtype(code)).__name__ for code in _DATA_DTYPES + "VOMm"}


def _numpy_multiarray() -> Any:
    """numpy's ``multiarray`` module: ``numpy._core.multiarray`` in numpy 2, ``numpy.core.multiarray`` before."""
    if np.lib.NumpyVersion(np.__version__) >= "2.0.0":
        from numpy._core import multiarray
    else:
        from numpy.core import multiarray
    return multiarray


@functools.cache
def _numpy_safe_globals() -> list[object]:
    """What torch's weights-only unpickler must admit for numpy arrays, dtypes and scalars, under the names numpy 1
    and numpy 2 pickle them by (``numpy.core`` became ``numpy._core``), whichever numpy wrote the file."""
    return [*[(getattr(_numpy_multiarray(), name), f"{core}.{name}") for core, name in _NUMPY_GLOBALS
              if core.endswith(".multiarray")], np.ndarray, np.dtype,
            *{type(np.dtype(code)) for code in _DATA_DTYPES}]


def load_torch(path: str | Path, what: str) -> Any:
    """``torch.load`` of a file the suite did not write itself (``what`` names it in errors): tensors, numpy arrays
    and builtin containers only; a file that would import anything else is refused before it runs."""
    import torch

    path = require_file(Path(path))
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)  # refused below if unsafe
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DataFormatError(path, f"refused as {what}: {_refusal(path, exc)}; the suite loads tensors, numpy arrays "
                              "and builtin containers only, never code") from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise DataFormatError(path, f"cannot be read as {what} ({(str(exc) or repr(exc)).splitlines()[0]})") from exc


def _refusal(path: Path, exc: pickle.UnpicklingError) -> str:
    """Why torch's weights-only loader stopped: the globals a zip checkpoint would import, else its own words."""
    import torch

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - only zip checkpoints can be listed
        names = []
    if names:
        return "loading it would import " + ", ".join(names)
    detail = str(exc).split("WeightsUnpickler error:", 1)[-1].split("Check the documentation", 1)[0]
    return f"not a weights-only file ({' '.join(detail.split())})"


class _DataUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_GLOBALS or module == "numpy.dtypes" and name in _NUMPY_DTYPES:
            if module.endswith(".multiarray"):  # numpy 1 and 2 spell its module apart; either wrote the file
                return getattr(_numpy_multiarray(), name)
            return super().find_class(module, name)
        raise DataFormatError(self.path, f"refused: the pickle would import {module}.{name}; the suite loads numpy "
                              "arrays, dtypes and builtin containers only")


def load_pickle(path: str | Path, what: str) -> Any:
    """A pickled data file (mmdetection3d's info ``.pkl``) through an unpickler that admits numpy arrays, dtypes and
    builtin containers only; ``what`` names the expected content in errors."""
    path = require_file(Path(path))
    try:
        with path.open("rb") as f:
            return _DataUnpickler(f, path).load()
    except DataFormatError:
        raise
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, AttributeError, IndexError,
            ImportError) as exc:
        raise DataFormatError(path, f"cannot be read as {what} ({exc})") from exc


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder and rename, so a crash never leaves half a file.

    The file gets the mode a plain ``open`` would give (0666 less the umask), not ``mkstemp``'s private 0600,
    so that colleagues and web servers can read tables, records and exports.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_writable(folder: Path, what: str) -> None:
    """Refuse, before any work, a folder this process cannot write to (read-only, not ours, a full disk), naming
    it: a block is written and synced in it, then removed."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise ValueError(f"{folder}: the {what} cannot be written to ({exc.strerror or exc})") from exc


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` can only read by setting,
    which would race with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_image(path: Path, image: np.ndarray) -> None:
    """Write an RGB uint8 image or a single-channel (uint16) image; the extension picks the codec."""
    arr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image

    def _write(tmp: Path) -> None:  # the temporary name keeps the extension, so OpenCV picks the codec
        if not cv2.imwrite(str(tmp), arr):
            raise OSError(f"{path}: OpenCV could not encode the image")

    atomic_write(path, _write)


def save_npy(path: Path, arr: np.ndarray) -> None:
    atomic_write(path, lambda tmp: np.save(tmp, arr))


def save_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))
