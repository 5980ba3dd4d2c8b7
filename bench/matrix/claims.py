"""Claims: one process at a time runs a run (or a pre-training) of a shared results folder.

Two ``ponderbench run`` commands on one folder (two Slurm array jobs, two users) would otherwise both do every run.
Before it starts, a run takes a claim: a file beside its record, created only if absent (``O_EXCL``, which NFS
honours, where ``flock``-style locks are unreliable), naming its owner (host, pid, start). While the run lasts, a
thread touches the file (the heartbeat); a claim whose heartbeat is older than ``stale_after`` seconds belongs to a
killed owner and is taken over. Taking over goes through a second exclusive file, so two processes that find the
same stale claim do not both take it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

STALE_AFTER_S = 600.0  # a claim without a heartbeat for this long is a killed owner's (the CLI's --claim-timeout)


def _create(path: Path, content: str) -> bool:
    """Create ``path`` holding ``content`` if it does not exist; whether this call created it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(content)
    return True


def _age(path: Path) -> float | None:
    """Seconds since the file's last heartbeat; None if it is gone."""
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None


def owner(path: Path) -> str:
    """Who holds a claim, in words (for "running elsewhere")."""
    try:
        held = json.loads(path.read_text())
        return f"{held['host']} pid {held['pid']}, since {held['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "an unknown owner"


@dataclass
class Claim:
    """A claim this process holds; ``release()`` (or leaving the ``with`` block) gives it up."""

    path: Path
    token: str
    heartbeat_s: float
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread(target=self._beat, daemon=True, name=f"claim {self.path.name}").start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except FileNotFoundError:  # released, or taken over after this process stalled past the timeout
                return

    def release(self) -> None:
        self._stop.set()
        try:
            if json.loads(self.path.read_text()).get("token") == self.token:
                self.path.unlink()
        except (OSError, ValueError):
            pass

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim(path: Path, stale_after: float = STALE_AFTER_S) -> Claim | None:
    """Claim ``path`` for this process; None when another process holds it (its heartbeat is fresh)."""
    token = uuid.uuid4().hex
    content = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": token,
                          "since": time.strftime("%Y-%m-%d %H:%M:%S")})
    heartbeat = max(0.05, min(30.0, stale_after / 4))
    if _create(path, content):
        return Claim(path, token, heartbeat)
    age = _age(path)
    if age is not None and age < stale_after:
        return None
    breaker = path.with_name(path.name + ".break")  # one taker at a time; a taker killed here is itself stale
    if not _create(breaker, token):
        if (_age(breaker) or 0.0) < max(stale_after, 60.0):
            return None
        breaker.unlink(missing_ok=True)
        return None  # the next attempt takes it
    try:
        age = _age(path)
        if age is not None and age < stale_after:  # its owner came back, or another taker was first
            return None
        log.warning("%s: taking over a stale claim (%s; no heartbeat for %.0f s)", path, owner(path), age or 0.0)
        path.unlink(missing_ok=True)
        return Claim(path, token, heartbeat) if _create(path, content) else None
    finally:
        breaker.unlink(missing_ok=True)


def wait_for_claim(path: Path, stale_after: float = STALE_AFTER_S, poll_s: float = 5.0) -> Claim:
    """Block until this process holds ``path`` (another owner finishes, or its claim goes stale)."""
    told = False
    while (held := claim(path, stale_after)) is None:
        if not told:
            log.warning("%s is claimed by %s; waiting", path, owner(path))
            told = True
        time.sleep(min(poll_s, stale_after / 2))
    return held
