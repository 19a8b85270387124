"""One cell as a picklable job: what a Slurm array task, a submitit local job or a Ray task runs.

The job trains and evaluates its cell with :func:`bench.runner.run_cell`, keeps ``state.json`` current (so the
driver can show it running at its epoch), and hands the outcome to :func:`bench.runner.deliver`: the result file
always, the database only when it is a server (PostgreSQL) — a worker never opens a SQLite file, which may sit
on a network filesystem shared by many nodes.

Pre-emption and time-outs: submitit sends the job a signal before Slurm stops it and calls
``__submitit_checkpoint__``, which asks for the same job again; Slurm requeues it and it resumes from the cell's
last epoch checkpoint (``runs/<cell>/checkpoint.pt``, written atomically every epoch by :mod:`bench.train`).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import resultfile
from bench.settings import Settings
from bench.store import CellResult


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
    db_url: str | None = None  # a database server the worker may write to directly; None: result file only
    download: bool = False

    def __call__(self) -> str:
        import torch

        from bench.provenance import resolve_device
        from bench.runner import deliver, failure_result, run_cell
        from bench.store import Store
        from bench.suite import Cell

        threads = int(os.environ.get("BENCH_THREADS", 0)) or self.settings.threads
        if threads:
            torch.set_num_threads(threads)
        cell = Cell(self.config, self.cell_hash)
        tag = TAGGERS[self.engine](self.engine)
        run_dir = self.settings.run_dir
        store = Store(self.db_url) if self.db_url else None
        finished = self._finished_before(run_dir)
        if finished is not None:  # requeued after its result was written (the driver discards older files)
            if store is not None:
                store.ingest(cell.record(), finished, tag)
            return finished.status
        previous = resultfile.read_state(run_dir, self.cell_hash) or {}
        starts = int(previous.get("starts", 0)) + 1 if previous.get("worker") == tag else 1
        resultfile.write_state(run_dir, self.cell_hash, status="running", worker=tag, host=socket.gethostname(),
                               pid=os.getpid(), epochs_done=previous.get("epochs_done", 0) if starts > 1 else 0,
                               epochs=self.config["epochs"], starts=starts)
        if store is not None:
            store.mark_running(self.cell_hash, tag, 0)

        def on_epoch(done: int, total: int, row: dict) -> None:
            resultfile.write_state(run_dir, self.cell_hash, epochs_done=done)
            if store is not None:
                store.mark_running(self.cell_hash, tag, done)

        try:
            result = run_cell(cell, self.settings, resolve_device(self.device), on_epoch, self.download)
        except Exception as exc:  # noqa: BLE001 - a failed cell is data (pre-emption is SystemExit: not caught)
            result = failure_result(exc)
        deliver(cell, result, run_dir, store, tag)
        resultfile.write_state(run_dir, self.cell_hash, status=result.status)
        return result.status

    def _finished_before(self, run_dir: Path) -> CellResult | None:
        """The outcome this job already wrote, if a pre-emption hit it between its result file and its exit."""
        try:
            return resultfile.read_result(resultfile.result_path(run_dir, self.cell_hash))[1]
        except (OSError, resultfile.UnreadableResult):
            return None

    def __submitit_checkpoint__(self, *args: Any, **kwargs: Any):
        """Timed out or pre-empted: requeue the same job; it resumes from the cell's last epoch checkpoint."""
        import submitit

        resultfile.write_state(self.settings.run_dir, self.cell_hash, status="requeued")
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
