"""Which implementation a kernel-backed op uses: Triton on CUDA, the PyTorch reference elsewhere.

``PONDERBENCH_BACKEND=reference|triton`` or the ``backend=`` argument forces one; Triton on a CPU tensor
only runs under ``TRITON_INTERPRET=1`` (the interpreter, used by the parity tests).
"""

from __future__ import annotations

import os

import torch

BACKENDS = ("auto", "reference", "triton")


def resolve_backend(backend: str, tensor: torch.Tensor) -> str:
    backend = os.environ.get("PONDERBENCH_BACKEND", backend) if backend == "auto" else backend
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if tensor.is_cuda else "reference"
    if backend == "triton" and not tensor.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("the Triton backend needs a CUDA tensor (or TRITON_INTERPRET=1 for the CPU interpreter)")
    return backend
