"""The lease protocol: who holds a cell, and when a claim counts as abandoned so another process may take it over.

A process claims a cell by writing its worker id (``host:pid``) and a heartbeat into the cell's row
(:meth:`bench.results.store.Store.claim`); while it holds the cell it refreshes the heartbeat every
:func:`heartbeat_every` seconds, from a thread of its own, so a slow epoch never makes a live claim look dead
(:class:`bench.results.ledger.Ledger`). A remote executor's driver refreshes the heartbeat of the cells its jobs
hold (``queued`` or ``running``) the same way.

A claim is abandoned when

* its heartbeat is older than the staleness window (``[bench] stale_after_minutes`` in bench.toml, default
  :data:`STALE_AFTER`) — on any host, whether or not a process with its pid is alive: after a reboot a pid
  belongs to some other process, and a frozen process holds nothing; or
* it was written on this host by a process id that is not alive (found at once, without waiting for the window).

Clocks: heartbeats are written in UTC by the claimant and compared with the reader's clock, so hosts sharing a
database should keep their clocks synchronised (NTP) well within the window.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

STALE_AFTER = timedelta(minutes=10)  # the default staleness window (bench.toml: [bench] stale_after_minutes)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):  # not a pid this system can have
        return False
    return True


def heartbeat_every(stale_after: timedelta = STALE_AFTER) -> float:
    """Seconds between heartbeats of a live holder: every minute, or a third of a shorter window."""
    return max(0.05, min(60.0, stale_after.total_seconds() / 3))


def claim_abandoned(worker: str | None, heartbeat: datetime | None, now: datetime,
                    stale_after: timedelta = STALE_AFTER) -> bool:
    """Whether a claim (``running``, or ``queued`` for a job) may be taken over: its heartbeat is older than
    ``stale_after`` (any host, any pid), or it was made on this host by a process that is gone."""
    if not worker or heartbeat is None or now - heartbeat > stale_after:
        return True
    host, _, pid = worker.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return int(pid) != os.getpid() and not pid_alive(int(pid))
    return False
