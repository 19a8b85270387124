"""Local executor: ``bench run --workers N`` runs N worker processes on one machine, one results database.

Each worker is an ordinary ``bench run`` of the same suite and selection: workers claim cells from the database
one at a time (a conditional write, see :meth:`bench.store.Store.claim`), so no cell runs twice and a worker
that dies leaves its cell to be resumed. With CUDA devices, worker ``i`` sees GPU ``i mod n_gpus`` only
(``CUDA_VISIBLE_DEVICES``) — more workers than GPUs packs several small cells on each GPU; on the CPU the cores
are split between the workers (``BENCH_THREADS``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Sequence

import click


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


def run_workers(args: Sequence[str], envs: list[dict[str, str]]) -> list[int]:
    """Start one ``bench run ARGS`` per environment, relay their lines prefixed ``[wI]``, return exit codes."""
    procs = []
    for i, extra in enumerate(envs):
        env = {**os.environ, **extra}
        proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", *args], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
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
        for p in procs:
            p.terminate()
        raise
    for t in threads:
        t.join(timeout=5)
    return codes
