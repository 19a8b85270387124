"""Executors: where the cells of a suite run — this machine, a Slurm cluster, a Ray cluster.

``bench run --executor NAME`` looks the executor up in :data:`EXECUTORS` (``bench.executors.base``); each is one
module here that registers itself:

* ``local`` (:mod:`.local`) — this machine, one process or ``--workers N`` sharing the cells through the database;
* ``slurm`` and ``submitit-local`` (:mod:`.slurm`) — one cell per Slurm array task through submitit, or the same
  jobs as local processes;
* ``ray`` (:mod:`.ray`) — one Ray task per cell with its GPU share.

With fusion on (:mod:`bench.fusion`), the remote executors submit a fused group as one job instead.

Whatever runs a cell, its outcome reaches the database the same way: a result file written atomically into the
run folder, ingested by the one driver (:mod:`bench.results.collect`); with a database server, workers may also write it
directly. Submitit and Ray are imported only by the executors that use them.
"""

from bench.executors import local, ray, slurm  # noqa: F401 - registers the executors
from bench.executors.base import EXECUTORS, Executor, RunContext, executor_options
from bench.executors.local import run_workers, worker_environments

__all__ = ["EXECUTORS", "Executor", "RunContext", "executor_options", "run_workers", "worker_environments"]
