"""One cell as a picklable job: what a Slurm array task, a submitit local job or a Ray task runs.

The job trains and evaluates its cell with :func:`bench.runner.run_cell`, keeps ``state.json`` current (so the
driver can show it running at its epoch), and settles the outcome through :class:`bench.results.ledger.Ledger`:
the result file always, the database only when it is a server (PostgreSQL) — a worker never opens a SQLite file,
which may sit on a network filesystem shared by many nodes.

Pre-emption and time-outs: submitit sends the job a signal before Slurm stops it and calls
``__submitit_checkpoint__``, which asks for the same job again; Slurm requeues it and it resumes from the cell's
last epoch checkpoint (``runs/<cell>/checkpoint.pt``, written atomically every epoch by :mod:`bench.train`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bench.cell import CellResult
from bench.results import files
from bench.settings import DB_ENV, Settings


def submitit_tag(engine: str) -> str:
    """``ENGINE:JOBID`` of the submitit job this process runs in (an array task's id is ``ARRAYID_INDEX``)."""
    import submitit

    return f"{engine}:{submitit.JobEnvironment().job_id}"


def ray_tag(engine: str) -> str:
    import ray

    return f"{engine}:{ray.get_runtime_context().get_task_id()}"


# How a job names itself, per engine: the same tag the driver stored for it when it submitted the job.
TAGGERS = {"slurm": submitit_tag, "submitit-local": submitit_tag, "ray": ray_tag}


@dataclass(frozen=True)
class CellJob:
    """Run one cell where this object is unpickled; returns the cell's status."""

    config: dict[str, Any]
    cell_hash: str
    settings: Settings
    device: str
    engine: str  # key of TAGGERS
    db_url: str | None = None  # a database server the worker may write to directly (no password); None: files only
    download: bool = False

    def __call__(self) -> str:
        import torch

        from bench.cell import Cell
        from bench.provenance import resolve_device
        from bench.results.ledger import Ledger
        from bench.results.store import Store
        from bench.runner import run_cell

        threads = int(os.environ.get("BENCH_THREADS", 0)) or self.settings.threads
        if threads:
            torch.set_num_threads(threads)
        cell = Cell(self.config, self.cell_hash)
        tag = TAGGERS[self.engine](self.engine)
        stale_after = timedelta(minutes=self.settings.stale_after_minutes)
        ledger = Ledger(Store(self.credentialed_url(), stale_after) if self.db_url else None, self.settings.run_dir)
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
        """Timed out or pre-empted: requeue the same job; it resumes from the cell's last epoch checkpoint."""
        import submitit

        files.write_state(self.settings.run_dir, self.cell_hash, status="requeued")
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
