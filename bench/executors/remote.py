"""The driver of executors whose cells run in other processes or machines (Slurm, submitit's local jobs, Ray).

The driver is the database's one writer. It

1. ingests result files a previous driver left (:meth:`bench.results.ledger.Ledger.sync`) and leaves out cells that are done
   or still queued/running in a live job of an earlier submission (it waits for those too);
2. submits one job per remaining cell (:class:`~bench.executors.job.CellJob`), or, when fusion is on for the run,
   one per fused group (:class:`~bench.executors.job.GroupJob`; the local runner's :func:`bench.fusion.groups.plan`
   for the device type the jobs get) — all at once where the scheduler caps concurrency itself (a Slurm array's
   ``%N``), else at most ``max_in_flight`` jobs at a time — and records the cells as ``queued`` under their job's
   tag (``slurm:1234_7``, ``ray:<task id>``; every member of a group under the group's);
3. polls: result files are ingested as they appear, a worker's ``state.json`` turns its cell ``running`` at its
   epoch, and a job that ended without a result marks its cells ``failed`` with the job's own account of why.

Killing the driver loses nothing: jobs that run on (Slurm) still write their result files, and ``bench collect``
or the next ``bench run`` ingests them. With a database server (PostgreSQL) the workers also write directly.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import replace
from typing import Any, ClassVar

import click

from bench.cell import ACTIVE, Cell, Status
from bench.executors.base import Executor
from bench.executors.job import CellJob, GroupJob
from bench.results.claims import heartbeat_every
from bench.results.ledger import Ledger
from bench.results.store import password_of, without_password


def share_credentials(url: str) -> None:
    """Give the database password to the jobs this driver starts through its environment, never through a file:
    libpq (psycopg) reads ``PGPASSWORD`` when the URL a worker gets has none. submitit's local jobs and a Ray
    instance started here inherit it; Slurm jobs get the environment ``sbatch`` was called with (``--export=ALL``,
    Slurm's default). Nodes of a Ray cluster started elsewhere need ``PGPASSWORD`` or ``~/.pgpass`` of their own."""
    password = password_of(url)
    if password:
        os.environ["PGPASSWORD"] = str(password)


class Backend:
    """What a remote executor needs from an engine; handles are the engine's own job objects."""

    engine: ClassVar[str]

    def submit(self, jobs: list[CellJob | GroupJob]) -> list[Any]:
        """Submit jobs; one handle per job, in order."""
        raise NotImplementedError

    def tag(self, handle: Any) -> str:
        """``ENGINE:ID``: the same tag the job computes for itself (:data:`bench.executors.job.TAGGERS`)."""
        raise NotImplementedError

    def ended(self, handles: list[Any]) -> list[Any]:
        """Those of ``handles`` whose job is over (with or without a result)."""
        raise NotImplementedError

    def failure(self, handle: Any) -> str:
        """Why a job that is over left no result (its exception, the tail of its log)."""
        return "the job ended without writing a result"

    def alive(self, tag: str) -> bool:
        """Whether the job of a tag from an earlier driver is still queued or running."""
        return False

    def describe(self) -> str:
        return self.engine

    def device_type(self, device: str) -> str:
        """The device type the jobs will run on (``cuda`` when they are given GPUs), for grouping fused cells."""
        return "cpu"

    def close(self, interrupted: bool) -> None:
        """Release the engine; ``interrupted``: the driver was stopped (Ctrl-C)."""


class RemoteExecutor(Executor):
    """Runs every cell as a job of a :class:`Backend`; subclasses build the backend."""

    poll_s: float = 2.0
    max_in_flight: int | None = None  # None: submit everything at once
    survives_driver: ClassVar[bool] = False  # jobs go on when the driver stops (Slurm)

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        if ctx.store.shared:  # before check(): a Ray instance started there inherits this environment
            share_credentials(ctx.store.url)

    def backend(self) -> Backend:
        raise NotImplementedError

    def job(self, cell: Cell, engine: str) -> CellJob:
        """The picklable job of a cell. It is written where others may read it (submitit's pickles in the run
        folder, Ray's object store), so it carries no database password: the worker takes it from its environment
        (:func:`share_credentials`)."""
        ctx = self.ctx
        db_url = without_password(ctx.store.url) if ctx.store.shared else None
        settings = replace(ctx.settings, db=db_url or "")  # the job opens db_url only; never bench.toml's db
        return CellJob(config=cell.config, cell_hash=cell.cell_hash, settings=settings, device=ctx.device,
                       engine=engine, db_url=db_url, download=ctx.download)

    def group_job(self, cells: list[Cell], engine: str) -> GroupJob:
        """The picklable job of a fused group: :meth:`job`'s, for every member."""
        one = self.job(cells[0], engine)
        return GroupJob(configs=tuple(c.config for c in cells), cell_hashes=tuple(c.cell_hash for c in cells),
                        settings=one.settings, device=one.device, engine=engine, db_url=one.db_url,
                        download=one.download)

    def units(self, cells: list[Cell], backend: Backend) -> list[tuple[bool, list[Cell]]]:
        """The jobs to submit: one per fused group (when fusion is on for the run), one per other cell."""
        from bench.fusion.groups import plan

        return plan(cells, self.ctx.settings.fuse, backend.device_type(self.ctx.device)).units

    def run(self) -> int:
        ctx = self.ctx
        store = ctx.store
        store.create()
        ledger = self.ledger = Ledger(store, ctx.settings.run_dir)
        hashes = [c.cell_hash for c in ctx.cells]
        ledger.sync(hashes)
        backend = self.backend()
        claims = ledger.claims(hashes)
        todo: list[Cell] = []
        waiting: dict[str, str] = {}  # hash -> tag of a live job from an earlier submission
        for cell in ctx.cells:
            status, worker = claims.get(cell.cell_hash, (None, None))
            if status == Status.DONE:
                continue
            if status in ACTIVE and worker and backend.alive(worker):
                waiting[cell.cell_hash] = worker
                continue
            todo.append(cell)
        done = len(ctx.cells) - len(todo) - len(waiting)
        units = self.units(todo, backend)
        groups = sum(1 for fused, _ in units if fused)
        click.echo(f"suite {ctx.suite_name}: {len(ctx.cells)} cell(s), {done} done, "
                   + (f"{len(waiting)} still in earlier jobs, " if waiting else "")
                   + f"{len(todo)} to submit"
                   + (f" as {len(units)} job(s), {groups} of them fused group(s)" if groups else "")
                   + f" on {backend.describe()}; results in {store.shown}")
        by_hash = {c.cell_hash: c for c in ctx.cells}
        outstanding: dict[str, tuple[Any, str]] = {h: (None, tag) for h, tag in waiting.items()}
        pending = deque(units)
        counts: dict[str, int] = {}
        total = len(todo) + len(waiting)
        interrupted = False
        try:
            last_touch = time.monotonic()
            touch_every = heartbeat_every(store.stale_after)
            while pending or outstanding:
                self._submit(backend, pending, outstanding)
                self._settle(backend, outstanding, by_hash, counts, total)
                if time.monotonic() - last_touch > touch_every:
                    ledger.keep_alive({h: tag for h, (_, tag) in outstanding.items()})
                    last_touch = time.monotonic()
                if outstanding:
                    time.sleep(self.poll_s)
        except KeyboardInterrupt:
            interrupted = True
            if self.survives_driver:
                click.echo(f"driver stopped; {len(outstanding)} job(s) go on under {backend.engine}: "
                           "`bench collect` ingests their results, `bench status` shows them", err=True)
            else:
                for h, (_, tag) in outstanding.items():
                    ledger.end(h, tag, Status.INTERRUPTED, "the driver was stopped")
                click.echo("interrupted; run the same command again to resume", err=True)
            return 130
        except Exception as exc:
            if not self.survives_driver:  # its jobs die with the driver: none may stay queued or running
                for h, (_, tag) in outstanding.items():
                    try:
                        ledger.end(h, tag, Status.INTERRUPTED, f"the driver stopped: {type(exc).__name__}: {exc}")
                    except Exception:  # noqa: BLE001 - the database is what failed; the original error is raised
                        break
            raise
        finally:
            backend.close(interrupted)
        statuses = store.statuses(hashes)
        final: dict[str, int] = {}
        for h in hashes:
            final[statuses.get(h, "not run")] = final.get(statuses.get(h, "not run"), 0) + 1
        click.echo(f"suite {ctx.suite_name}: " + ", ".join(f"{n} {s}" for s, n in sorted(final.items())))
        return 1 if final.get(Status.FAILED) else 0

    def _submit(self, backend: Backend, pending: deque, outstanding: dict) -> None:
        """Submit pending units (a cell, or a fused group) up to the in-flight cap of jobs; record their cells as
        queued under their job's tag."""
        in_flight = len({tag for _, tag in outstanding.values()})  # jobs, not cells: a group's members share one
        room = len(pending) if self.max_in_flight is None else self.max_in_flight - in_flight
        batch = [pending.popleft() for _ in range(max(0, min(room, len(pending))))]
        if not batch:
            return
        cells = [cell for _, unit in batch for cell in unit]
        self.ledger.prepare(cells)
        handles = backend.submit([self.group_job(unit, backend.engine) if fused else self.job(unit[0], backend.engine)
                                  for fused, unit in batch])
        members = [(cell, handle, backend.tag(handle)) for (_, unit), handle in zip(batch, handles) for cell in unit]
        self.ledger.hand_out(cells, [tag for _, _, tag in members])
        for cell, handle, tag in members:
            outstanding[cell.cell_hash] = (handle, tag)

    def _settle(self, backend: Backend, outstanding: dict, by_hash: dict, counts: dict, total: int) -> None:
        """Ingest what arrived, show what runs, and fail the cells whose job ended without a result."""
        ledger = self.ledger
        live = [h for h, (handle, _) in outstanding.items() if handle is not None]
        handles = list({id(outstanding[c][0]): outstanding[c][0] for c in live}.values())  # a group's once
        ended = {id(h) for h in backend.ended(handles)}  # before collect: no race
        ended_hashes = {c for c in live if id(outstanding[c][0]) in ended}
        ended_hashes |= {c for c, (handle, tag) in outstanding.items() if handle is None and not backend.alive(tag)}
        ledger.sync(list(outstanding))
        ledger.refresh_running(list(outstanding))
        claims = ledger.claims(list(outstanding))
        for cell_hash in list(outstanding):
            handle, tag = outstanding[cell_hash]
            status = claims.get(cell_hash, ("", None))[0]
            if status in ACTIVE and cell_hash in ended_hashes:
                reason = backend.failure(handle) if handle is not None else "the job ended without a result"
                ledger.end(cell_hash, tag, Status.FAILED, f"{tag}: {reason}")
                status = Status.FAILED
            if status in ACTIVE:
                continue
            del outstanding[cell_hash]
            counts[status] = counts.get(status, 0) + 1
            if not self.ctx.quiet:
                finished = sum(counts.values())
                click.echo(f"[{finished}/{total}] {status} {by_hash[cell_hash].label()} ({tag})")
