"""Class embeddings that semantic renders are contrasted against (PonderV2 uses CLIP text embeddings).

No model is downloaded at run time: the default gives each class name a fixed random unit vector (seeded
by a hash of the name, so it is the same on every machine and run), and a user who has text embeddings
(e.g. from CLIP) passes them as a file: ``.json`` ({"name": [floats]}) or ``.npz`` (one array per name).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch


def deterministic_embeddings(names: list[str], dim: int = 512) -> torch.Tensor:
    """(K, dim) unit vectors, a pure function of each class name."""
    rows = []
    for name in names:
        seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
        rows.append(np.random.default_rng(seed).standard_normal(dim))
    vectors = torch.from_numpy(np.stack(rows)).float()
    return vectors / vectors.norm(dim=-1, keepdim=True)


def load_embeddings(path: str | Path, names: list[str]) -> torch.Tensor:
    """(K, D) embeddings of ``names`` read from a user file; every class must be present with one length."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: class-embedding file not found")
    if path.suffix == ".json":
        table = {k: np.asarray(v, dtype=np.float32) for k, v in json.loads(path.read_text()).items()}
    elif path.suffix == ".npz":
        with np.load(path) as data:
            table = {k: data[k].astype(np.float32) for k in data.files}
    else:
        raise ValueError(f"{path}: class embeddings must be a .json or .npz file")
    missing = [n for n in names if n not in table]
    if missing:
        raise ValueError(f"{path}: no embedding for classes {missing}")
    dims = {table[n].shape for n in names}
    if len(dims) != 1 or len(next(iter(dims))) != 1:
        raise ValueError(f"{path}: embeddings must be 1-D vectors of one length, got shapes {sorted(dims)}")
    vectors = np.stack([table[n] for n in names])
    if not np.isfinite(vectors).all():
        raise ValueError(f"{path}: embeddings contain NaN or inf")
    return torch.from_numpy(vectors)


def class_embeddings(names: list[str], path: str | Path | None = None, dim: int = 512) -> torch.Tensor:
    """The user's embeddings when ``path`` is given, else the deterministic default."""
    return deterministic_embeddings(names, dim) if path is None else load_embeddings(path, names)
