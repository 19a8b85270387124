"""Drawing figures in worker processes.

Matplotlib draws ~0.1 s per panel and format, single-threaded, and is most of a big report's time. Two forked
workers draw in parallel on two cores; they are forked when the report starts, so they import matplotlib and
load its fonts (~1 s) while this process reads the database and builds the tables. Where fork is unavailable
(Windows, macOS's spawn default) or one worker is asked for, figures are drawn in this process.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor

from bench.report.drawing import Figure, FigureSpec, draw, warm_up


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class FigureWorkers:
    """``with FigureWorkers(n) as workers: ... workers.draw(specs)`` — start early, draw later."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = min(2, available_cpus()) if workers is None else max(1, int(workers))
        self.pool: ProcessPoolExecutor | None = None
        self.warming: list[Future] = []

    def __enter__(self) -> FigureWorkers:
        if self.workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            gc.freeze()  # keep the GC in the workers from touching (so copying) every inherited page
            try:
                self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"))
                self.warming = [self.pool.submit(warm_up) for _ in range(self.workers)]  # forks them now
            finally:
                gc.unfreeze()
        return self

    def draw(self, specs: list[FigureSpec]) -> list[Figure]:
        if self.pool is None or len(specs) <= 1:
            return [draw(spec) for spec in specs]
        return list(self.pool.map(draw, specs))

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.pool is not None:
            # On an error do not wait for a warm-up nobody needs; the workers exit when it is done.
            self.pool.shutdown(wait=exc_type is None, cancel_futures=True)
            self.pool = None
