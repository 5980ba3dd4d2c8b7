"""Loading a pre-training export (``backbone.pt`` + ``backbone.json``) into a fine-tuning backbone, checked."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from tasks.errors import DataFormatError
from tasks.io import load_torch


class NotApplicable(Exception):
    """This backbone or initialisation cannot run this task (e.g. a 2D backbone on a point-cloud task)."""


def export_weights(path: str | Path) -> Path:
    """The weights file of an export given as its folder or as the file itself."""
    path = Path(path)
    return path / "backbone.pt" if path.is_dir() else path


def export_sha256(path: str | Path) -> str:
    """The sha256 of an export's weights (what a record names the init by)."""
    return hashlib.sha256(export_weights(path).read_bytes()).hexdigest()


def read_export(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """An export's description (``backbone.json``) and weights, checked whole and readable: both files present, the
    JSON an object, the weights loadable as weights (never code). Raises :class:`DataFormatError` naming the file."""
    weights = export_weights(path)
    meta_path = weights.with_name("backbone.json")
    if not weights.is_file():
        raise DataFormatError(weights, "missing: an export is a folder holding backbone.pt and backbone.json (as "
                              "`ponderbench pretrain` writes it), or that backbone.pt")
    if not meta_path.is_file():
        raise DataFormatError(meta_path, f"missing: {weights.name} is not an export without the backbone.json "
                              "written beside it (backbone name, config, sha256)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise DataFormatError(meta_path, f"cannot be read as an export's description ({exc})") from exc
    if not isinstance(meta, dict):
        raise DataFormatError(meta_path, "is not an export's description (a JSON object)")
    return meta, load_torch(weights, "a pre-trained export")


def load_export(backbone: torch.nn.Module, path: str | Path, name: str, in_channels: int) -> str:
    """Load a pre-training export into ``backbone``; returns its sha256.

    Refuses a file whose hash does not match its ``backbone.json``, another backbone's weights, and weights
    pre-trained on another number of input channels (see :mod:`tasks.contract`).
    """
    meta, state = read_export(path)
    weights = export_weights(path)
    digest = export_sha256(weights)
    if digest != meta.get("sha256"):
        raise ValueError(f"{weights}: sha256 {digest[:12]} does not match backbone.json "
                         f"({str(meta.get('sha256'))[:12]})")
    if meta.get("backbone") != name:
        raise NotApplicable(f"{weights} holds {meta.get('backbone')!r}, not {name!r}")
    if meta.get("config", {}).get("in_channels", in_channels) != in_channels:
        raise NotApplicable(f"{weights} was pre-trained with {meta['config']['in_channels']} input channels; "
                            f"this task feeds {in_channels}")
    backbone.load_state_dict(state)
    return digest
