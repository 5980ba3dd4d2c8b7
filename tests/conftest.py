"""Shared fixtures: a generated tiny suite, and the real samples in ../shared/data (skipped when absent)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    # Triton decides at @triton.jit time whether to interpret, so this must precede any kernel import.
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _import_example_backbone() -> None:
    """Register the README's example backbone, so the registry-parametrised tests cover it too."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("custom_backbone", REPO / "examples" / "custom_backbone.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


_import_example_backbone()


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 'tiny' suite, generated once per test session (read-only by convention; copy before corrupting)."""
    from tasks.synth.suite import synthesize

    return synthesize(tmp_path_factory.mktemp("tiny"), "tiny", seed=0, progress=False)


@pytest.fixture
def tiny_copy(tiny_root: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny suite that a test may corrupt."""
    dst = tmp_path / "data"
    shutil.copytree(tiny_root, dst)
    return dst


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data samples not found at {SHARED_DATA} (only present in the development checkout)")
    return SHARED_DATA


@pytest.fixture
def free_port() -> int:
    """A TCP port nobody listens on now, for a torchrun rendezvous."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def interpreter() -> None:
    """Triton runs on the CPU only through its interpreter, which this file enables when there is no GPU."""
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no GPU and TRITON_INTERPRET is not 1")
