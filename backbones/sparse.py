"""The spconv import boundary: its warnings are filtered here, and the conv algorithm is chosen here.

spconv-cu120's default (implicit-GEMM) algorithm only runs on CUDA; on the CPU every layer must be built
with ``ConvAlgo.Native``. The algorithm is fixed when a layer is constructed, so backbones ask
:func:`conv_algo` at construction time.
"""

from __future__ import annotations

import warnings

import torch

with warnings.catch_warnings():
    # spconv 2.3 uses the deprecated torch.cuda.amp decorators at import time
    warnings.simplefilter("ignore", FutureWarning)
    warnings.simplefilter("ignore", UserWarning)
    import spconv.pytorch as spconv  # noqa: F401  (re-exported)
    from spconv.pytorch import ConvAlgo


def conv_algo(choice: str = "auto") -> ConvAlgo | None:
    """``"auto"``: spconv's default on CUDA, Native otherwise; ``"native"`` / ``"default"`` force one."""
    if choice == "native" or (choice == "auto" and not torch.cuda.is_available()):
        return ConvAlgo.Native
    if choice in ("auto", "default"):
        return None
    raise ValueError(f"algo must be 'auto', 'native' or 'default', got {choice!r}")
