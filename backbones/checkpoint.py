"""Weights for a registered backbone from the files people have, as timm's ``create_model(checkpoint_path=...)``.

Three layouts are read (never as code: :func:`tasks.io.load_torch`):
- the suite's exports: a folder (or its ``backbone.pt``) with ``backbone.json`` beside it;
- trainer checkpoints of Pointcept and PonderV2 (``{"state_dict": {"module.backbone.conv_input.0.weight": ...}}``)
  and the suite's own (``{"model": ...}``); the backbone is found under whichever prefix (``module.backbone.``,
  ``backbone.``, ``module.``, none) names most of its parameters, so the backbone inside a segmentor or a Ponder
  pre-training checkpoint of the same architecture loads, and the rest (renderer, heads, the original
  SpUNet's ``final`` classifier) is counted as outside it;
- plain state dicts.

Module names follow the original code's, so no mapping table is needed where the architecture is the same.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tasks.errors import DataFormatError
from tasks.io import load_torch

log = logging.getLogger(__name__)

# a PPT model inside a PointGroup segmentor nests its SpUNet one level deeper (``backbone.backbone.``)
PREFIXES = ("module.backbone.backbone.", "backbone.backbone.", "module.backbone.", "backbone.", "module.", "")


@dataclass(frozen=True)
class LoadedCheckpoint:
    """What loading a checkpoint into a backbone did (kept as ``model.checkpoint``)."""

    path: str
    sha256: str
    layout: str  # "export", "trainer" (a ``state_dict`` or ``model`` entry) or "state dict"
    prefix: str  # stripped from the file's keys
    missing: tuple[str, ...]  # the backbone's keys the file lacks (left as initialised)
    unexpected: tuple[str, ...]  # keys under the prefix the backbone does not have
    outside: int  # keys of other parts of the model in the file (heads, renderer), not loaded


def _weights_file(path: Path) -> tuple[Path, str]:
    if path.is_dir():
        return path / "backbone.pt", "export"
    return path, "export" if path.with_name("backbone.json").is_file() and path.name == "backbone.pt" else ""


def backbone_state(raw: object, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict in what a checkpoint file held, and its layout ("trainer" or "state dict")."""
    if not isinstance(raw, dict):
        raise DataFormatError(path, f"holds a {type(raw).__name__}, not a state dict or a trainer checkpoint")
    state, layout = raw, "state dict"
    for entry in ("state_dict", "model"):
        if isinstance(raw.get(entry), dict):
            state, layout = raw[entry], "trainer"
            break
    if not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataFormatError(path, "holds no weights (no tensor in its state dict)")
    return state, layout


class CheckpointMismatch(DataFormatError):
    """The checkpoint holds another architecture or input width than the backbone asked for."""


def _under(model: nn.Module, state: dict[str, torch.Tensor], prefix: str) -> dict[str, tuple[str, torch.Tensor]]:
    """The entries of ``state`` under ``prefix`` as {name in ``model``: (key in the file, tensor)}: named without the
    prefix as ``model`` names them now (a module with ``legacy_names`` renames its older spellings, as it does when
    loading), less the original's head inside the backbone (``head_keys``: SpUNet's ``final`` classifier in a
    Pointcept segmentor), plus what the original keeps in the model around its backbone (``context_keys``:
    SpUNet-v1m3's condition table, PPT's ``embedding_table``) where the backbone has none of its own."""
    heads = getattr(type(model), "head_keys", ())
    inside = {k[len(prefix):]: (k, v) for k, v in state.items() if k.startswith(prefix)
              and not k[len(prefix):].startswith(heads)}
    around = prefix.removesuffix("backbone.") if prefix.endswith("backbone.") else None
    for context in getattr(type(model), "context_keys", ()) if around is not None else ():
        for k, v in state.items():
            if k.startswith(around + context):
                inside.setdefault(k[len(around):], (k, v))
    for path, module in model.named_modules():
        rename = getattr(type(module), "legacy_names", None)
        if rename is not None:
            inside = rename(inside, f"{path}." if path else "")
    return inside


def load_checkpoint(model: nn.Module, path: str | Path, name: str, strict: bool = True,
                    raw: object | None = None) -> LoadedCheckpoint:
    """Load the backbone weights of ``path`` into ``model`` (the registered backbone ``name``); ``raw``: what the
    file holds, when the caller has read it already.

    Refuses a tensor whose shape differs from the backbone's, naming the key; with ``strict``, also missing or
    unexpected keys, naming them (else it logs them and loads the rest)."""
    weights, layout = _weights_file(Path(path))
    try:
        raw = load_torch(weights, f"a checkpoint for {name}") if raw is None else raw
    except DataFormatError as exc:
        if "lr_scheduler" not in exc.problem:
            raise
        raise DataFormatError(weights, f"{exc.problem}. A trainer checkpoint written with torch < 2.4 pickles its "
                              "learning-rate scheduler; if you trust the file, keep only its weights: torch.save("
                              "{'state_dict': torch.load(IN, weights_only=False)['state_dict']}, OUT)") from None
    state, found = backbone_state(raw, weights)
    layout = layout or found
    own = model.state_dict()
    # the prefix under which the file names most of the backbone's keys (none when nothing matches: then every
    # key of the file is reported as unexpected)
    under = {p: _under(model, state, p) for p in PREFIXES}
    prefix = max(PREFIXES, key=lambda p: (sum(k in own for k in under[p]), -len(p)))
    renamed = under[prefix]
    for key, (in_file, tensor) in renamed.items():
        if key in own and tuple(own[key].shape) != tuple(tensor.shape):
            raise CheckpointMismatch(weights, f"{in_file}: shape {tuple(tensor.shape)} in the file, "
                                     f"{tuple(own[key].shape)} in {name}")
    missing = tuple(k for k in own if k not in renamed)
    unexpected = tuple(in_file for k, (in_file, _) in renamed.items() if k not in own)
    pdnorm = any(".bns." in k or ".modulation." in k for k in state)
    hint = (" (its keys are PDNorm's: a SpUNet-v1m3 / PPT model, load it as spunet-v1m3)"
            if pdnorm and not any(".bns." in k for k in own) else "")
    if len(missing) > len(own) / 2:  # not this architecture: even strict=False would leave most of it random
        raise CheckpointMismatch(weights, f"is not a {name}: {len(own) - len(missing)} of its {len(own)} "
                                 f"tensors are in the file{hint}; missing {_names(missing)}; unexpected "
                                 f"{_names(unexpected)}")
    if strict and (missing or unexpected):
        raise CheckpointMismatch(weights, f"does not match {name}{hint}: missing {_names(missing)}; unexpected "
                                 f"{_names(unexpected)} (create_backbone(..., strict=False) loads what matches)")
    if missing or unexpected:
        log.warning("%s into %s: missing %s; unexpected %s", weights, name, _names(missing), _names(unexpected))
    model.load_state_dict({k: v for k, (_, v) in renamed.items() if k in own}, strict=False)
    with weights.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return LoadedCheckpoint(str(weights), digest, layout, prefix, missing, unexpected,
                            outside=len(state) - len(renamed))


def _names(keys: tuple[str, ...], shown: int = 8) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more
