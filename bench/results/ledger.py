"""The cell's life, in one place: claim (or hand out), heartbeat, deliver the outcome, end.

Every way a cell runs goes through a :class:`Ledger`:

* the local runner (:func:`bench.runner.run_cells`, also each ``--workers`` process) — :meth:`Ledger.pending`,
  :meth:`Ledger.claim`, :meth:`Ledger.heartbeat`, :meth:`Ledger.settle`;
* the driver of remote executors (:mod:`bench.executors.remote`: Slurm, submitit, Ray) — :meth:`Ledger.sync`,
  :meth:`Ledger.hand_out`, :meth:`Ledger.keep_alive`, :meth:`Ledger.end`;
* a remote job (:mod:`bench.executors.job`) — :meth:`Ledger.report_running`, :meth:`Ledger.settle`.

The order of writes is what makes a kill lose nothing: an outcome goes to the cell's result file first (atomic,
:mod:`bench.results.files`) and then to the database, so a process killed between the two leaves a file that the
next run (or ``bench collect``) ingests instead of training the cell again. A ledger without a store (a remote
worker beside a SQLite file) writes the files only; the driver is the database's one writer.
"""

from __future__ import annotations

import os
import socket
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.cell import ACTIVE, Cell, CellResult, Status
from bench.errors import BenchError, Diverged
from bench.results import files
from bench.results.collect import CollectSummary, collect, refresh_running
from bench.results.store import Store



def failure_result(exc: BaseException) -> CellResult:
    """The outcome of a cell whose work raised: ``diverged`` on NaN, ``failed`` (with its traceback) else."""
    if isinstance(exc, Diverged):
        return CellResult(status=Status.DIVERGED, error=str(exc))
    if isinstance(exc, BenchError):  # e.g. a dataset that cannot be loaded: a user problem, not a crash
        return CellResult(status=Status.FAILED, error=str(exc))
    return CellResult(status=Status.FAILED, error="".join(traceback.format_exception(exc)))


@dataclass
class Ledger:
    """The cell-life API over one results store (``None`` on a worker that only writes files) and run folder."""

    store: Store | None
    run_dir: Path

    # -- the local runner -----------------------------------------------------------------------------------
    def pending(self, cells: Sequence[Cell]) -> list[Cell]:
        """Ingest results a killed run left in files, then the cells not yet ``done``, in order."""
        hashes = [c.cell_hash for c in cells]
        collect(self._store(), self.run_dir, hashes)
        statuses = self._store().statuses(hashes)
        return [c for c in cells if statuses.get(c.cell_hash) != Status.DONE]

    def claim(self, cell: Cell) -> bool:
        """Take ``cell`` for this process; False when it is done or running elsewhere. An old failed attempt's
        result file is removed, so it can never be ingested over this attempt."""
        if not self._store().claim(cell.record()):
            return False
        files.discard(self.run_dir, cell.cell_hash)
        return True

    def heartbeat(self, cell: Cell, epochs_done: int) -> None:
        self._store().heartbeat(cell.cell_hash, epochs_done)

    # -- every process that runs a cell ---------------------------------------------------------------------
    def settle(self, cell: Cell, work: Callable[[], CellResult], *, worker: str | None = None,
               interruptible: bool = True, reraise: bool = False) -> CellResult:
        """Run ``work`` and deliver its outcome whatever happens; returns the outcome.

        An exception is a ``failed`` (or ``diverged``) outcome and the grid goes on; with ``reraise`` (``--debug``)
        it is delivered and then raised. Ctrl-C (``interruptible``: a process that claimed the cell itself) marks
        the cell ``interrupted`` and propagates; a job leaves that to its driver, and pre-emption (``SystemExit``)
        is never caught, so the job is requeued and resumes from its checkpoint.
        """
        try:
            result = work()
        except KeyboardInterrupt:
            if interruptible and self.store is not None:
                self.store.finish(cell.cell_hash, CellResult(status=Status.INTERRUPTED, error="interrupted by the user"))
            raise
        except Exception as exc:  # noqa: BLE001 - a failed cell is data
            result = failure_result(exc)
            if reraise and not isinstance(exc, Diverged):
                self.deliver(cell, result, worker)
                raise
        self.deliver(cell, result, worker)
        return result

    def deliver(self, cell: Cell, result: CellResult, worker: str | None = None) -> None:
        """Hand an outcome on: the result file first (durable, atomic), then the database when there is one."""
        files.write_result(self.run_dir, cell.record(), result)
        if self.store is not None:
            self.store.ingest(cell.record(), result, worker)

    # -- the driver of remote jobs --------------------------------------------------------------------------
    def sync(self, cell_hashes: Iterable[str] | None = None) -> CollectSummary:
        """Ingest the result files that arrived; mark cells whose worker reported as ``running``."""
        return collect(self._store(), self.run_dir, cell_hashes)

    def claims(self, cell_hashes: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """``{hash: (status, worker)}`` of the known cells among ``cell_hashes``."""
        return self._store().claims(cell_hashes)

    def prepare(self, cells: Sequence[Cell]) -> None:
        """Before cells are submitted: remove old attempts' result files, so none is ingested over a new attempt
        (before the jobs exist, so a fast job's new file is never the one removed)."""
        for cell in cells:
            files.discard(self.run_dir, cell.cell_hash)

    def hand_out(self, cells: Sequence[Cell], tags: Sequence[str]) -> None:
        """Cells submitted as jobs: ``queued`` under each job's tag (a cell a fast job already finished stays)."""
        self._store().enqueue([c.record() for c in cells], tags)

    def keep_alive(self, tags: dict[str, str]) -> None:
        """Refresh the heartbeat of cells waiting in jobs (``hash: tag``), so no one takes them over."""
        self._store().touch(tags)

    def end(self, cell_hash: str, tag: str, status: Status, error: str) -> bool:
        """A job ended without a result (``failed``) or was stopped with its driver (``interrupted``)."""
        return self._store().mark_ended(cell_hash, tag, status, error)

    def refresh_running(self, cell_hashes: Iterable[str]) -> int:
        return refresh_running(self._store(), self.run_dir, cell_hashes)

    # -- a remote job ---------------------------------------------------------------------------------------
    def finished_before(self, cell: Cell) -> CellResult | None:
        """The outcome a job already wrote, if a pre-emption hit it between its result file and its exit."""
        try:
            return files.read_result(files.result_path(self.run_dir, cell.cell_hash))[1]
        except (OSError, files.UnreadableResult):
            return None

    def redeliver(self, cell: Cell, result: CellResult, tag: str) -> None:
        """A requeued job whose result file exists: hand it to the database (idempotent) instead of training."""
        if self.store is not None:
            self.store.ingest(cell.record(), result, tag)

    def start_job(self, cell: Cell, tag: str) -> None:
        """A job starts (or restarts after a requeue): its state file says so, and the database when it may."""
        previous = files.read_state(self.run_dir, cell.cell_hash) or {}
        starts = int(previous.get("starts", 0)) + 1 if previous.get("worker") == tag else 1
        files.write_state(self.run_dir, cell.cell_hash, status=Status.RUNNING, worker=tag, host=socket.gethostname(),
                          pid=os.getpid(), epochs_done=previous.get("epochs_done", 0) if starts > 1 else 0,
                          epochs=cell.config["epochs"], starts=starts)
        if self.store is not None:
            self.store.mark_running(cell.cell_hash, tag, 0)

    def report_running(self, cell: Cell, tag: str, epochs_done: int) -> None:
        """A job's progress: its state file, and the database when the job may write it."""
        files.write_state(self.run_dir, cell.cell_hash, epochs_done=epochs_done)
        if self.store is not None:
            self.store.mark_running(cell.cell_hash, tag, epochs_done)

    def end_job(self, cell: Cell, result: CellResult) -> None:
        """The job's state file records its outcome (the result itself is already delivered)."""
        files.write_state(self.run_dir, cell.cell_hash, status=result.status)

    def _store(self) -> Store:
        if self.store is None:
            raise RuntimeError("this ledger writes result files only; the driver holds the database")
        return self.store


def still_active(status: str | None) -> bool:
    """Whether a status means the cell is handed out and has reported no outcome yet."""
    return status in ACTIVE
