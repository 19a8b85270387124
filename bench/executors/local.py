"""``--executor local`` (the default): this machine; ``--workers N`` runs N worker processes, one results database.

Each worker is an ordinary ``bench run`` of the same suite and selection: workers claim cells from the database
one at a time (a conditional write, see :meth:`bench.results.store.Store.claim`), so no cell runs twice and a worker
that dies leaves its cell to be resumed. With CUDA devices, worker ``i`` sees GPU ``i mod n_gpus`` only
(``CUDA_VISIBLE_DEVICES``) — more workers than GPUs packs several small cells on each GPU; on the CPU the cores
are split between the workers (``BENCH_THREADS``). Workers end with their driver (Linux: a parent-death signal),
and SIGTERM stops a run as Ctrl-C does: its held cells are left ``interrupted`` for the next run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar

import click

from bench.cell import Status
from bench.executors.base import Executor, register_executor
from bench.settings import DB_ENV, env_threads


def worker_environments(workers: int, device_type: str, n_gpus: int, cpus: int) -> list[dict[str, str]]:
    """The environment overrides of each worker process."""
    envs = []
    for i in range(workers):
        env = {"BENCH_WORKER": str(i)}
        if device_type == "cuda" and n_gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i % n_gpus)
        else:
            threads = max(1, cpus // workers)
            env["BENCH_THREADS"] = str(threads)
            env["OMP_NUM_THREADS"] = str(threads)
        envs.append(env)
    return envs


class Stopped(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler, the driver of ``--workers`` ending): handled as Ctrl-C, with its own words."""


@contextlib.contextmanager
def sigterm_stops() -> Iterator[None]:
    """While running cells, SIGTERM raises :class:`Stopped` (held cells end ``interrupted``, not ``running``)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second SIGTERM must not cut into the clean-up
        raise Stopped("stopped by SIGTERM (kill, or the end of the --workers driver)")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes a worker receive SIGTERM when its driver dies (Linux ``prctl(PR_SET_PDEATHSIG)``),
    so a killed driver never leaves workers training and holding cells; ``None`` elsewhere. libc is looked up here,
    in the driver: the forked child only makes the call (and leaves if the driver died before it could)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    driver = os.getpid()

    def arm() -> None:
        prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != driver:
            os._exit(143)

    return arm


def run_workers(args: Sequence[str], envs: list[dict[str, str]]) -> list[int]:
    """Start one ``bench run ARGS`` per environment, relay their lines prefixed ``[wI]``, return exit codes."""
    procs = []
    arm = parent_death_signal()
    for i, extra in enumerate(envs):
        env = {**os.environ, **extra}
        proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", *args], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1, preexec_fn=arm)
        procs.append(proc)

    def relay(i: int, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            click.echo(f"[w{i}] {line.rstrip()}")

    threads = [threading.Thread(target=relay, args=(i, p), daemon=True) for i, p in enumerate(procs)]
    for t in threads:
        t.start()
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        # Ctrl-C on a terminal reached the workers too: give them a moment to mark their cells, then SIGTERM
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
        for p in procs:
            if p.poll() is None:
                p.terminate()  # SIGTERM: each worker leaves its held cells interrupted
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=30)
        raise
    for t in threads:
        t.join(timeout=5)
    return codes


@register_executor("local")
class LocalExecutor(Executor):
    """This machine: one process (``--workers 1``) or N worker processes sharing the cells through the database."""

    description: ClassVar[str] = "this machine; --workers N processes (one per GPU, or the CPU cores split)"

    def run(self) -> int:
        import torch

        from bench.progress import Progress
        from bench.provenance import resolve_device
        from bench.runner import run_cells

        ctx = self.ctx
        target = resolve_device(ctx.device)
        if ctx.workers > 1:
            return self._run_workers(target)
        threads = env_threads(ctx.settings.threads)
        if threads:
            torch.set_num_threads(threads)
        progress = Progress(enabled=not ctx.quiet)
        progress.console.print(f"suite {ctx.suite_name}: {len(ctx.cells)} cell(s) on {target}, results in {ctx.store.shown}")
        try:
            with sigterm_stops():
                summary = run_cells(ctx.cells, ctx.store, ctx.settings, target, debug=ctx.debug,
                                    download=ctx.download, progress=progress)
        except KeyboardInterrupt as exc:
            click.echo(f"{str(exc) or 'interrupted by Ctrl-C'}; run the same command again to resume", err=True)
            return 143 if isinstance(exc, Stopped) else 130
        click.echo(f"suite {ctx.suite_name}: {summary.line()}")
        if summary.counts.get(Status.FAILED):
            click.echo("some cells failed; `bench show HASH` prints the stored traceback", err=True)
            return 1
        return 0

    def _run_workers(self, target) -> int:
        """N ``bench run`` processes claim the cells from one database; a summary at the end."""
        ctx = self.ctx
        ctx.store.create()  # once, here: the workers then only claim and write rows
        with sigterm_stops():
            try:
                return self._drive_workers(target)
            except KeyboardInterrupt as exc:
                click.echo(f"{str(exc) or 'interrupted by Ctrl-C'}; the workers stopped; run the same command again to resume",
                           err=True)
                return 143 if isinstance(exc, Stopped) else 130

    def _drive_workers(self, target) -> int:
        import torch

        ctx = self.ctx
        done = ctx.store.statuses([c.cell_hash for c in ctx.cells])
        todo = sum(1 for c in ctx.cells if done.get(c.cell_hash) != Status.DONE)
        workers = min(ctx.workers, todo)  # a worker with no cell to claim would only start torch and leave
        if not workers:
            click.echo(f"suite {ctx.suite_name}: all {len(ctx.cells)} cell(s) done; nothing to run "
                       f"(results in {ctx.store.shown})")
            return 0
        n_gpus = torch.cuda.device_count() if target.type == "cuda" else 0
        envs = worker_environments(workers, target.type, n_gpus, os.cpu_count() or 1)
        for env in envs:  # the database through the environment: a password never shows in a command line (ps)
            env[DB_ENV] = ctx.store.url
        shown = f"{workers} workers" if workers == ctx.workers else f"{workers} workers (one per cell to run)"
        click.echo(f"suite {ctx.suite_name}: {len(ctx.cells)} cell(s), {shown} on {target}, "
                   f"results in {ctx.store.shown}")
        codes = run_workers(ctx.cli_args, envs)
        statuses = ctx.store.statuses([c.cell_hash for c in ctx.cells])
        counts: dict[str, int] = {}
        for cell in ctx.cells:
            status = statuses.get(cell.cell_hash, "not run")
            counts[status] = counts.get(status, 0) + 1
        click.echo(f"suite {ctx.suite_name}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        return 1 if any(codes) or counts.get(Status.FAILED) else 0
