"""Claims: one process at a time runs a run (or a pre-training) of a shared results folder.

Two ``ponderbench run`` commands on one folder (two Slurm array jobs, two users) would otherwise both do every run.
Before it starts, a run takes a claim: a file beside its record, created only if absent (``O_EXCL``, which NFS
honours, where ``flock``-style locks are unreliable), naming its owner (host, pid, start, heartbeat interval).
While the run lasts, a thread touches the file (the heartbeat). A claim is stale, and is taken over, when its
heartbeat is older than the taker's ``stale_after`` (and than three of the owner's own intervals), or at once when
its owner was a process of this host that no longer exists. Taking over goes through a second exclusive file,
so two processes that find the same stale claim do not both take it.
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
MIN_STALE_AFTER_S = 1.0


def _create(path: Path, content: str) -> bool:
    """Create ``path`` holding ``content`` if it does not exist; whether this call created it. A failed write
    leaves no file behind (an empty claim would block everyone)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return True


def _read(path: Path) -> dict:
    try:
        held = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return held if isinstance(held, dict) else {}


def _age(path: Path) -> float | None:
    """Seconds since the file's last heartbeat; None if it is gone."""
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None


def _owner_gone(held: dict) -> bool:
    """Whether the claim's owner was a process of this host that has ended (a local ``kill -9``)."""
    if held.get("host") != socket.gethostname() or not isinstance(held.get("pid"), int):
        return False
    try:
        os.kill(held["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by another user
        return False
    return False


def owner(path: Path) -> str:
    """Who holds a claim, in words (for "running elsewhere")."""
    held = _read(path)
    if not {"host", "pid", "since"} <= held.keys():
        return "an unknown owner"
    return f"{held['host']} pid {held['pid']}, since {held['since']}"


def is_free(path: Path, stale_after: float) -> bool:
    """Whether a claim could be taken now: absent, or stale."""
    age = _age(path)
    return age is None or _stale(path, age, stale_after)


def _stale(path: Path, age: float, stale_after: float) -> bool:
    held = _read(path)
    return age >= max(stale_after, 3 * float(held.get("heartbeat_s", 0.0))) or _owner_gone(held)


@dataclass
class Claim:
    """A claim this process holds; ``release()`` (or leaving the ``with`` block) gives it up. ``lost`` turns true
    when another process has taken it over (this one stalled past the timeout): its work must not be written."""

    path: Path
    token: str
    heartbeat_s: float
    lost: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread(target=self._beat, daemon=True, name=f"claim {self.path.name}").start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if _read(self.path).get("token") != self.token:
                self.lost = not self._stop.is_set()
                return
            try:
                os.utime(self.path)
            except OSError as exc:  # a transient NFS error: the next beat tries again
                log.warning("%s: heartbeat failed (%s)", self.path, exc)

    def release(self) -> None:
        self._stop.set()
        if _read(self.path).get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim(path: Path, stale_after: float = STALE_AFTER_S) -> Claim | None:
    """Claim ``path`` for this process; None when another process holds it (its heartbeat is fresh)."""
    stale_after = max(stale_after, MIN_STALE_AFTER_S)
    token = uuid.uuid4().hex
    heartbeat = max(0.05, min(30.0, stale_after / 4))
    content = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": token,
                          "since": time.strftime("%Y-%m-%d %H:%M:%S"), "heartbeat_s": heartbeat})
    for _ in range(2):  # a claim released between our create and our look is simply created again
        if _create(path, content):
            return Claim(path, token, heartbeat)
        age = _age(path)
        if age is not None:
            break
    else:
        return None
    if not _stale(path, age, stale_after):
        return None
    breaker = path.with_name(path.name + ".break")  # one taker at a time
    if not _create(breaker, token):
        if (_age(breaker) or 0.0) >= max(stale_after, 60.0):  # a taker killed in the few lines below
            breaker.unlink(missing_ok=True)
        return None  # the next attempt takes it
    try:
        age = _age(path)
        if age is not None and not _stale(path, age, stale_after):  # its owner came back, or a taker was first
            return None
        log.warning("%s: taking over a stale claim (%s; no heartbeat for %.0f s)", path, owner(path), age or 0.0)
        path.unlink(missing_ok=True)
        return Claim(path, token, heartbeat) if _create(path, content) else None
    finally:
        if _read(breaker).get("token") == token:
            breaker.unlink(missing_ok=True)
