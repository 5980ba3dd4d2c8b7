"""One registry for 3D and 2D backbones, timm-style: a decorator, ``create_backbone`` and ``list_backbones``.

Third-party packages register backbones through the ``ponderbench.backbones`` entry-point group: each
entry point names a module whose import runs ``@register_backbone`` decorators. A researcher with one file
uses :func:`load_plugin` (``ponderbench --plugin my_nets.py``) instead. ``"timm:<model>"`` names any timm
image model without registering it first.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Literal

import torch
from torch import nn

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "ponderbench.backbones"


@dataclass(frozen=True)
class BackboneConfig:
    """What a user needs to know to pick a backbone; ``create_backbone`` overrides fill the rest."""

    name: str
    modality: Literal["3d", "2d"]
    in_channels: int
    out_channels: int
    description: str
    voxel_size: float | None = None  # metres, 3D only
    params: int | None = None  # filled in by get_backbone_config


@dataclass(frozen=True)
class _Entry:
    config: BackboneConfig
    factory: Callable[..., nn.Module]


_REGISTRY: dict[str, _Entry] = {}
_plugins_loaded = False


def register_backbone(name: str, *, modality: Literal["3d", "2d"], in_channels: int, out_channels: int,
                      description: str, voxel_size: float | None = None
                      ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a factory (a class or function taking keyword overrides) under ``name``."""
    if modality == "3d" and voxel_size is None:
        raise ValueError(f"3D backbone {name!r} needs a voxel_size")

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered (by {_REGISTRY[name].factory!r})")
        _REGISTRY[name] = _Entry(BackboneConfig(name, modality, in_channels, out_channels, description, voxel_size),
                                 factory)
        return factory

    return decorator


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    import backbones.ptv3  # noqa: F401  (built-in registrations)
    import backbones.spunet  # noqa: F401
    import backbones.spunet_pdnorm  # noqa: F401
    import backbones.timm2d  # noqa: F401

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception:  # a broken plugin must not hide the built-in backbones
            log.exception("could not load backbone plugin %s", ep.value)


@dataclass(frozen=True)
class Plugin:
    """A module imported for its ``@register_backbone`` entries: where it came from, and the sha256 of its file."""

    spec: str  # as the user gave it: a .py path or a dotted module name
    path: str
    sha256: str


_plugins: dict[str, Plugin] = {}


def is_plugin_file(spec: str) -> bool:
    """Whether a plugin spec names a file (else a dotted module name)."""
    return spec.endswith(".py") or "/" in spec


class PluginError(ImportError):
    """A plugin that cannot be imported (missing, or raising on import): the command stops before any work."""


def load_plugin(spec: str) -> Plugin:
    """Import a plugin once: a ``.py`` file by path, or a module by its dotted name (importable from sys.path)."""
    if spec in _plugins:
        return _plugins[spec]
    _load_plugins()  # built-ins first, so a plugin that re-registers a built-in name fails clearly
    if is_plugin_file(spec):
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: plugin file not found")
        name = f"ponderbench_plugin_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # so that classes it defines can be pickled to worker processes
        try:
            module_spec.loader.exec_module(module)
        except BaseException as exc:  # Ctrl-C included: no half-imported plugin stays behind
            del sys.modules[name]
            if not isinstance(exc, Exception):
                raise
            raise PluginError(f"{path}: the plugin failed on import: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(spec)
        except Exception as exc:
            raise PluginError(f"plugin module {spec!r} failed on import: {type(exc).__name__}: {exc}") from exc
        path = Path(module.__file__ or spec)
    _plugins[spec] = Plugin(spec, str(path), hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "")
    get_backbone_config.cache_clear()
    return _plugins[spec]


def list_backbones(pattern: str = "*", modality: str | None = None) -> list[str]:
    """Registered names matching a shell-style wildcard, sorted."""
    _load_plugins()
    return sorted(n for n, e in _REGISTRY.items()
                  if fnmatch.fnmatchcase(n, pattern) and (modality is None or e.config.modality == modality))


def _entry(name: str) -> _Entry:
    _load_plugins()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith("timm:"):
        from backbones.timm2d import timm_entry

        return timm_entry(name.removeprefix("timm:"))
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"unknown backbone {name!r}{hint} (see `ponderbench list backbones`)")


@cache
def get_backbone_config(name: str) -> BackboneConfig:
    """The variant's config with its parameter count (counted on the meta device: no memory, no compute)."""
    entry = _entry(name)
    with torch.device("meta"):
        params = count_parameters(entry.factory())
    return replace(entry.config, params=params)


def create_backbone(name: str, *, checkpoint: str | Path | None = None, strict: bool = True,
                    **overrides: object) -> nn.Module:
    """Build a backbone; ``overrides`` go to its factory (e.g. ``in_channels=4``). ``checkpoint``: weights to load
    (an export, a Pointcept / PonderV2 trainer checkpoint or a state dict; :mod:`backbones.checkpoint`); what
    loading did (file hash, prefix, missing and unexpected keys) is kept as ``model.checkpoint``."""
    entry = _entry(name)
    model = entry.factory(**overrides)
    known = {k: v for k, v in overrides.items() if k in ("in_channels", "out_channels", "voxel_size")}
    # what the built model reports wins: an override such as ``channels=`` changes its output width too
    built = {k: v for k in ("in_channels", "out_channels") if isinstance(v := getattr(model, k, None), int)}
    model.config = replace(entry.config, params=count_parameters(model), **{**known, **built})  # type: ignore[assignment]
    if checkpoint is not None:
        from backbones.checkpoint import load_checkpoint

        model.checkpoint = load_checkpoint(model, checkpoint, name, strict=strict)  # type: ignore[assignment]
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
