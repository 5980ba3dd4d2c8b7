"""Loading a pre-training export (``backbone.pt`` + ``backbone.json``) into a fine-tuning backbone, checked."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch


class NotApplicable(Exception):
    """This backbone or initialisation cannot run this task (e.g. a 2D backbone on a point-cloud task)."""


def export_weights(path: str | Path) -> Path:
    """The weights file of an export given as its folder or as the file itself."""
    path = Path(path)
    return path / "backbone.pt" if path.is_dir() else path


def export_sha256(path: str | Path) -> str:
    """The sha256 of an export's weights (what a record names the init by)."""
    return hashlib.sha256(export_weights(path).read_bytes()).hexdigest()


def load_export(backbone: torch.nn.Module, path: str | Path, name: str, in_channels: int) -> str:
    """Load a pre-training export into ``backbone``; returns its sha256.

    Refuses a file whose hash does not match its ``backbone.json``, another backbone's weights, and weights
    pre-trained on another number of input channels (see :mod:`tasks.contract`).
    """
    weights = export_weights(path)
    meta_path = weights.with_name("backbone.json")
    if not weights.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"{weights}: pre-trained export (backbone.pt + backbone.json) not found")
    meta = json.loads(meta_path.read_text())
    digest = export_sha256(weights)
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
