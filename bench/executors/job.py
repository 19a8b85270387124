"""One cell as a picklable job: what a Slurm array task, a submitit local job or a Ray task runs.

The job trains and evaluates its cell with :func:`bench.runner.run_cell`, keeps ``state.json`` current (so the
driver can show it running at its epoch), and settles the outcome through :class:`bench.results.ledger.Ledger`:
the result file always, the database only when it is a server (PostgreSQL) — a worker never opens a SQLite file,
which may sit on a network filesystem shared by many nodes.

Pre-emption and time-outs: submitit sends the job a signal before Slurm stops it and calls
``__submitit_checkpoint__``, which asks for the same job again; Slurm requeues it and it resumes from the cell's
last epoch checkpoint (``runs/<cell>/checkpoint.pt``, written atomically every epoch by :mod:`bench.train`).

A fused group (:mod:`bench.fusion`) is one :class:`GroupJob`: its members train as one stacked model and each is
settled as above, one after the other (:func:`bench.fusion.run.train_and_settle`, the local runner's code); every
member's ``state.json`` follows its epochs, and a requeued group resumes each member from its own checkpoint (a
member whose result file was already written is handed on, not trained again).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bench.cell import CellResult
from bench.results import files
from bench.settings import DB_ENV, Settings, env_threads


def submitit_tag(engine: str) -> str:
    """``ENGINE:JOBID`` of the submitit job this process runs in (an array task's id is ``ARRAYID_INDEX``)."""
    import submitit

    return f"{engine}:{submitit.JobEnvironment().job_id}"


def ray_tag(engine: str) -> str:
    import ray

    return f"{engine}:{ray.get_runtime_context().get_task_id()}"


# How a job names itself, per engine: the same tag the driver stored for it when it submitted the job.
TAGGERS = {"slurm": submitit_tag, "submitit-local": submitit_tag, "ray": ray_tag}


class _Job:
    """What a cell's and a group's job share: where they run (threads), the ledger they settle through."""

    settings: Settings
    engine: str
    db_url: str | None

    def _ledger(self):
        import torch

        from bench.results.ledger import Ledger
        from bench.results.store import Store

        threads = env_threads(self.settings.threads)
        if threads:
            torch.set_num_threads(threads)
        stale_after = timedelta(minutes=self.settings.stale_after_minutes)
        return Ledger(Store(self.credentialed_url(), stale_after) if self.db_url else None, self.settings.run_dir)

    def credentialed_url(self) -> str | None:
        """The job's database URL with this environment's credentials: ``$BENCH_DB`` when it names the same
        database (it may carry the password), else the URL as given — libpq then takes ``PGPASSWORD`` or
        ``~/.pgpass``. The job itself never carries a password (it is pickled where others may read it)."""
        from bench.results.store import without_password

        env = os.environ.get(DB_ENV)
        if env and self.db_url and "://" in env and without_password(env) == self.db_url:
            return env
        return self.db_url

    def __submitit_checkpoint__(self, *args: Any, **kwargs: Any):
        """Timed out or pre-empted: requeue the same job; it resumes from each cell's last epoch checkpoint."""
        import submitit

        for cell_hash in self.cell_hashes:
            files.write_state(self.settings.run_dir, cell_hash, status="requeued")
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


@dataclass(frozen=True)
class CellJob(_Job):
    """Run one cell where this object is unpickled; returns the cell's status."""

    config: dict[str, Any]
    cell_hash: str
    settings: Settings
    device: str
    engine: str  # key of TAGGERS
    db_url: str | None = None  # a database server the worker may write to directly (no password); None: files only
    download: bool = False

    @property
    def cell_hashes(self) -> tuple[str, ...]:
        return (self.cell_hash,)

    def __call__(self) -> str:
        from bench.cell import Cell
        from bench.provenance import resolve_device
        from bench.runner import run_cell

        ledger = self._ledger()
        cell = Cell(self.config, self.cell_hash)
        tag = TAGGERS[self.engine](self.engine)
        finished = ledger.finished_before(cell)
        if finished is not None:  # requeued after its result was written (the driver discards older files)
            ledger.redeliver(cell, finished, tag)
            return finished.status
        ledger.start_job(cell, tag)

        def on_epoch(done: int, total: int, row: dict) -> None:
            ledger.report_running(cell, tag, done)

        def work() -> CellResult:
            return run_cell(cell, self.settings, resolve_device(self.device), on_epoch, self.download)

        result = ledger.settle(cell, work, worker=tag, interruptible=False)
        ledger.end_job(cell, result)
        return result.status


@dataclass(frozen=True)
class GroupJob(_Job):
    """Run one fused group where this object is unpickled (:mod:`bench.fusion`); returns each member's status."""

    configs: tuple[dict[str, Any], ...]
    cell_hashes: tuple[str, ...]
    settings: Settings
    device: str
    engine: str  # key of TAGGERS
    db_url: str | None = None  # as CellJob's
    download: bool = False

    @property
    def config(self) -> dict[str, Any]:
        """The first member's config: what the members share (model, data, schedule) is read from it."""
        return self.configs[0]

    def __call__(self) -> list[str]:
        from bench.cell import Cell
        from bench.fusion.run import train_and_settle
        from bench.provenance import resolve_device
        from bench.runner import finish_cell

        ledger = self._ledger()
        tag = TAGGERS[self.engine](self.engine)
        statuses: dict[str, str] = {}
        todo = []
        for config, cell_hash in zip(self.configs, self.cell_hashes):
            cell = Cell(config, cell_hash)
            finished = ledger.finished_before(cell)
            if finished is not None:  # requeued after this member's result was written
                ledger.redeliver(cell, finished, tag)
                statuses[cell_hash] = finished.status
                continue
            ledger.start_job(cell, tag)
            todo.append(cell)
        if todo:
            def on_epoch(i: int, cell: Cell, done: int, total: int, row: dict) -> None:
                ledger.report_running(cell, tag, done)

            results = train_and_settle(todo, ledger, self.settings, resolve_device(self.device), finish_cell,
                                       on_epoch=on_epoch, on_settled=ledger.end_job, worker=tag,
                                       interruptible=False, download=self.download)
            statuses.update({cell.cell_hash: result.status for cell, result in zip(todo, results)})
        return [statuses[h] for h in self.cell_hashes]
