"""The cell's life, in one place: claim (or hand out), heartbeat, deliver the outcome, end.

Every way a cell runs goes through a :class:`Ledger`:

* the local runner (:func:`bench.runner.run_cells`, also each ``--workers`` process) — :meth:`Ledger.pending`,
  :meth:`Ledger.claim`, :meth:`Ledger.heartbeat`, :meth:`Ledger.settle`;
* the driver of remote executors (:mod:`bench.executors.remote`: Slurm, submitit, Ray) — :meth:`Ledger.sync`,
  :meth:`Ledger.hand_out`, :meth:`Ledger.keep_alive`, :meth:`Ledger.end`;
* a remote job (:mod:`bench.executors.job`) — :meth:`Ledger.report_running`, :meth:`Ledger.settle`.

Nothing is left half-done: a process that claimed a cell refreshes its heartbeat from a thread while it holds
it (:meth:`Ledger.holding`), and any exception after the claim that did not deliver an outcome — a failed
result write, a database that went away, a bug in progress code — releases the cell (``failed`` with the
traceback, or ``interrupted`` on Ctrl-C), so no live process leaves a cell ``running`` that it is not running. The
run folder is checked writable before a cell is claimed (:func:`check_run_folder`).

The order of writes is what makes a kill lose nothing: an outcome goes to the cell's result file first (atomic,
:mod:`bench.results.files`) and then to the database, so a process killed between the two leaves a file that the
next run (or ``bench collect``) ingests instead of training the cell again. A ledger without a store (a remote
worker beside a SQLite file) writes the files only; the driver is the database's one writer.
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.cell import ACTIVE, Cell, CellResult, Status
from bench.errors import BenchError, Diverged, Halt
from bench.results import files
from bench.results.claims import heartbeat_every, worker_id
from bench.results.collect import CollectSummary, collect, refresh_running
from bench.results.store import Store


def _unwritable(folder: Path) -> str | None:
    """Why ``folder`` cannot take a new file, or None: tried, not guessed from permission bits (root, read-only
    mounts, ACLs)."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".bench-write-check-"):
            pass
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def check_run_folder(folder: Path) -> None:
    """A cell's folder, created if missing, takes new files; else one line (nothing is claimed)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        reason = _unwritable(folder)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    if reason:
        raise BenchError(f"run folder {folder} cannot be written ({reason}); nothing was claimed: fix its "
                         "permissions, or point run_dir in bench.toml elsewhere")


def check_run_folders(run_dir: Path, cells: Sequence[Cell]) -> None:
    """Before any cell is claimed: the run folder (or, while it does not exist, the folder it would be made in),
    and each cell folder an earlier attempt left, take new files. Creates nothing; one line when one does not."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        parent = run_dir
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        reason = "a file is in its place" if run_dir.exists() else (
            f"{parent} is not a folder" if not parent.is_dir() else _unwritable(parent))
        if reason:
            raise BenchError(f"run folder {run_dir} cannot be created ({reason}); nothing was claimed: point run_dir "
                             "in bench.toml elsewhere, or fix the permissions")
        return
    folders = [run_dir] + [run_dir / c.cell_hash for c in cells if (run_dir / c.cell_hash).exists()
                           or (run_dir / c.cell_hash).is_symlink()]
    for folder in folders:
        reason = "a file is in its place" if not folder.is_dir() else _unwritable(folder)
        if reason:
            raise BenchError(f"run folder {folder} cannot be written ({reason}); nothing was claimed: fix its "
                             "permissions, or point run_dir in bench.toml elsewhere")


# A full disk, a quota, a file system gone read-only: the machine's problem, not the cell's
HALTING_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def halt_for(exc: BaseException, run_dir: Path) -> Halt | None:
    """The :class:`Halt` a cell's exception means, if it means the run cannot go on (``None`` otherwise)."""
    if isinstance(exc, Halt):
        return exc
    if isinstance(exc, OSError) and exc.errno in HALTING_ERRNOS:
        path = Path(os.fsdecode(exc.filename)).absolute() if exc.filename else None
        if path is None or path.is_relative_to(Path(run_dir).absolute()):
            where = f"under the run folder {run_dir}" + (f" ({path})" if path else "")
            remedy = "free space there (or point run_dir in bench.toml elsewhere)"
        else:
            where, remedy = str(path), "free space there"
        return Halt(f"cannot write {where}: {os.strerror(exc.errno)}; {remedy} and run the same command again to "
                    "resume from the last checkpoints")
    return None


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
        """Take ``cell`` for this process; False when it is done or running elsewhere. Its folder is checked
        writable first (one line, nothing claimed); an old failed attempt's result file is removed, so it can never
        be ingested over this attempt."""
        check_run_folder(self.run_dir / cell.cell_hash)
        if not self._store().claim(cell.record()):
            return False
        try:
            files.discard(self.run_dir, cell.cell_hash)
        except BaseException as exc:
            self.release(cell, exc)
            raise
        return True

    def heartbeat(self, cell: Cell, epochs_done: int) -> None:
        self._store().heartbeat(cell.cell_hash, epochs_done)

    @contextmanager
    def holding(self, cell: Cell, worker: str | None = None, interruptible: bool = True) -> Iterator[None]:
        """While a cell is held: its heartbeat is refreshed from a thread (a slow epoch never looks abandoned), and
        leaving with an exception releases the cell unless an outcome was delivered (:meth:`release`). A job
        (``interruptible=False``) keeps its cell on Ctrl-C or pre-emption (``SystemExit``): its driver decides."""
        beat = _Heartbeat(self.store, cell.cell_hash, worker) if self.store is not None else None
        if beat is not None:
            beat.start()
        try:
            yield
        except BaseException as exc:
            if interruptible or not isinstance(exc, (KeyboardInterrupt, SystemExit)):
                self.release(cell, exc, worker)
            raise
        finally:
            if beat is not None:
                beat.stop()

    def release(self, cell: Cell, exc: BaseException, worker: str | None = None) -> None:
        """The cell's holder gives up without an outcome: ``interrupted`` (Ctrl-C, exit) or ``failed`` with the
        traceback — only while the cell is still this holder's and active, so a delivered outcome stays."""
        if self.store is None:
            return
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            said = str(exc) if isinstance(exc, KeyboardInterrupt) else ""  # SystemExit's text is its code
            status, error = Status.INTERRUPTED, said or "interrupted by the user"
        elif isinstance(exc, Halt):
            status, error = Status.INTERRUPTED, f"the run stopped: {exc}"
        else:
            status = Status.FAILED
            error = "the outcome could not be recorded:\n" + "".join(traceback.format_exception(exc))
        try:
            self.store.mark_ended(cell.cell_hash, worker or worker_id(), status, error)
        except Exception:  # noqa: BLE001 - the database itself is what failed: the original error is raised
            pass

    # -- every process that runs a cell ---------------------------------------------------------------------
    def settle(self, cell: Cell, work: Callable[[], CellResult], *, worker: str | None = None,
               interruptible: bool = True, reraise: bool = False) -> CellResult:
        """Run ``work`` and deliver its outcome whatever happens; returns the outcome.

        An exception is a ``failed`` (or ``diverged``) outcome and the grid goes on; with ``reraise`` (``--debug``)
        it is delivered and then raised. Ctrl-C (``interruptible``: a process that claimed the cell itself) marks
        the cell ``interrupted`` and propagates; a job leaves that to its driver, and pre-emption (``SystemExit``)
        is never caught, so the job is requeued and resumes from its checkpoint.
        """
        with self.holding(cell, worker, interruptible):
            try:
                result = work()
            except KeyboardInterrupt as exc:
                if interruptible and self.store is not None:
                    self.store.finish(cell.cell_hash, CellResult(status=Status.INTERRUPTED,
                                                                 error=str(exc) or "interrupted by the user"))
                raise
            except Exception as exc:  # noqa: BLE001 - a failed cell is data
                halt = halt_for(exc, self.run_dir)
                if halt is not None:
                    raise halt from None  # holding() leaves the cell interrupted
                result = failure_result(exc)
                if reraise and not isinstance(exc, Diverged):
                    self.deliver(cell, result, worker)
                    raise
            self.deliver(cell, result, worker)
            return result

    def deliver(self, cell: Cell, result: CellResult, worker: str | None = None) -> None:
        """Hand an outcome on: the result file first (durable, atomic), then the database when there is one. A
        full disk, or a database that can no longer be written, stops the run (:class:`Halt`, one line)."""
        try:
            files.write_result(self.run_dir, cell.record(), result)
        except OSError as exc:
            halt = halt_for(exc, self.run_dir)
            if halt is None:
                raise
            raise halt from None
        if self.store is None:
            return
        from sqlalchemy.exc import OperationalError

        try:
            self.store.ingest(cell.record(), result, worker)
        except OperationalError as exc:  # the database's own trouble (I/O, disk full, read-only), not the row's
            reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
            raise Halt(f"the database {self.store.shown} could not be written ({reason}); this cell's result is "
                       f"kept in {self.run_dir / cell.cell_hash}, and `bench collect` (or the next `bench run`) "
                       "stores it once the database is writable again") from None

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


class _Heartbeat:
    """A daemon thread refreshing one held cell's heartbeat every :func:`heartbeat_every` seconds until stopped."""

    def __init__(self, store: Store, cell_hash: str, worker: str | None) -> None:
        self.store, self.cell_hash, self.worker = store, cell_hash, worker
        self.every = heartbeat_every(store.stale_after)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"bench-heartbeat-{cell_hash}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.store.heartbeat(self.cell_hash, worker=self.worker)
            except Exception:  # noqa: BLE001 - a database that went away: the holder's own writes will say so
                pass


def still_active(status: str | None) -> bool:
    """Whether a status means the cell is handed out and has reported no outcome yet."""
    return status in ACTIVE
