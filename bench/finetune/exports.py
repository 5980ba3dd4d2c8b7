"""Loading an init into a fine-tuning backbone, checked: a pre-training export (``backbone.pt`` + ``backbone.json``),
or any checkpoint :func:`backbones.checkpoint.load_checkpoint` reads (Pointcept / PonderV2 trainer checkpoints,
plain state dicts)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from backbones.checkpoint import CheckpointMismatch, backbone_state, load_checkpoint
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


def is_export(path: str | Path) -> bool:
    """Whether ``path`` is an export (a folder, or a ``backbone.pt`` with its ``backbone.json``)."""
    path = Path(path)
    return path.is_dir() or (path.name == "backbone.pt" and path.with_name("backbone.json").is_file())


def check_init(path: str | Path) -> None:
    """Read an init whole before any work: an export as :func:`read_export` does, any other checkpoint as data
    holding weights. Raises :class:`DataFormatError` naming the file."""
    if is_export(path):
        read_export(path)
    else:
        backbone_state(load_torch(path, "a checkpoint"), Path(path))


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
    pre-trained on another number of input channels (see :mod:`tasks.contract`). A checkpoint that is not an
    export (a Pointcept or PonderV2 trainer checkpoint, a state dict) loads through
    :func:`backbones.checkpoint.load_checkpoint`, strictly; its file's sha256 is returned.
    """
    if not is_export(path):
        try:
            return load_checkpoint(backbone, path, name).sha256
        except CheckpointMismatch as exc:  # another architecture or input width: as an export of another backbone
            raise NotApplicable(str(exc)) from exc
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
