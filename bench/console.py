"""What reaches the terminal of a ``ponderbench`` command: the suite's own messages, not third-party notices.

Called by the command line and by every worker process it starts (spawned workers inherit neither logging nor
warning filters). Library use (``import bench``) is left alone.
"""

from __future__ import annotations

import logging
import warnings

OWN_PACKAGES = ("bench", "tasks", "renderer", "backbones")


def configure(verbose: bool = False, worker: bool = False) -> None:
    """The suite's loggers at INFO (a worker's at WARNING: its progress is the parent's bar; DEBUG with
    ``verbose``); third-party loggers and warnings only from ERROR up."""
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(message)s")
    level = logging.DEBUG if verbose else logging.WARNING if worker else logging.INFO
    for name in OWN_PACKAGES:
        logging.getLogger(name).setLevel(level)
    # torch logs through a handler of its own (propagation off) and sets its loggers' levels when imported: after
    # its import, the level of its top logger holds for the rest
    import torch  # noqa: F401

    logging.getLogger("torch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=rf"({'|'.join(OWN_PACKAGES)})(\.|$)")
