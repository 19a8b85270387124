"""The lease protocol: who holds a cell, and when a claim counts as abandoned so another process may take it over.

A process claims a cell by writing its worker id (``host:pid``) and a heartbeat into the cell's row
(:meth:`bench.results.store.Store.claim`); it refreshes the heartbeat every epoch. A claim is abandoned when its
process is known to be gone (same host, pid not alive) or when its heartbeat is older than :data:`STALE_AFTER`.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

STALE_AFTER = timedelta(minutes=10)  # a claim from another host with no heartbeat for this long is abandoned


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_abandoned(worker: str | None, heartbeat: datetime | None, now: datetime) -> bool:
    """Whether a ``running`` claim belongs to a process that is gone (same host: pid dead; else stale)."""
    if not worker:
        return True
    host, _, pid = worker.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return int(pid) != os.getpid() and not pid_alive(int(pid))
    return heartbeat is None or now - heartbeat > STALE_AFTER
