"""Running a suite: skip finished cells, claim the rest one by one, record every outcome as data.

A cell trains, is evaluated under every attack of its suite, then its robustness guards run (``bench.guards``);
all of it is written in one transaction.

A cell's outcome is ``done`` (metrics written), ``diverged`` (NaN loss), ``failed`` (exception; traceback
stored) or ``interrupted`` (Ctrl-C). The grid goes on after a failure unless ``debug`` re-raises. A killed
process leaves its cell ``running`` with a checkpoint; the next run sees the process is gone, claims the cell
and resumes from the last finished epoch.

Every outcome but ``interrupted`` is first written to the cell's result file (:mod:`bench.resultfile`) and then
ingested into the database, so a process killed between the two loses nothing: the next run (or ``bench
collect``) ingests the file instead of running the cell again. Remote workers (:mod:`bench.executors`) use the
same :func:`deliver` and skip the database unless it is a server.
"""

from __future__ import annotations

import resource
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

import methods
from bench import resultfile
from bench.collect import collect
from bench.data import prepare
from bench.errors import BenchError
from bench.evaluate import attack_specs, evaluate, feature_dump
from bench.guards import GuardContext, run_guards
from bench.progress import Progress
from bench.provenance import provenance
from bench.settings import Settings
from bench.store import CellResult, Store
from bench.suite import Cell
from bench.train import Diverged, save_final, train


@dataclass
class RunSummary:
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1

    def line(self) -> str:
        order = ("done", "skipped", "busy", "failed", "diverged", "interrupted")
        return ", ".join(f"{self.counts[k]} {k}" for k in order if self.counts.get(k))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_cell(
    cell: Cell,
    settings: Settings,
    device: torch.device,
    on_epoch: Callable[[int, int, dict], None] | None = None,
    download: bool = False,
) -> CellResult:
    """Train and evaluate one cell; exceptions propagate (the caller turns them into data)."""
    config = cell.config
    t0 = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    data = prepare(config["dataset"], config["imbalance"], config["seed"], root=settings.data_root,
                   download=download or settings.download, args=config["dataset_args"], device=device)
    method = methods.get(config["method"], **config["method_args"]).for_run(
        epochs=config["epochs"], milestones=config["milestones"])
    run_dir = settings.run_dir / cell.cell_hash
    outcome = train(config, method, data, run_dir, on_epoch)
    correct = evaluate(outcome.model, data, config)
    specs = attack_specs(config)
    guards = run_guards(GuardContext(outcome.model, data, config, method, correct, {s.label: s for s in specs}))
    features = feature_dump(outcome.model, data, config)
    save_final(outcome.model, run_dir)
    return CellResult(
        status="done",
        class_names=data.class_names,
        train_counts=data.train_counts,
        test_labels=data.test_y.cpu().numpy(),
        correct=correct,
        curves=outcome.curves,
        provenance=provenance(device, data.subset_hash),
        wall_seconds=time.perf_counter() - t0,
        train_seconds=outcome.train_seconds,
        images_per_second=outcome.images / outcome.train_seconds if outcome.train_seconds else None,
        peak_memory_mb=peak_memory_mb(device),
        epochs_done=len(outcome.curves),
        features=features,
        attack_specs={spec.label: table for spec, table in zip(specs, config["eval_attacks"])},
        guards=[g.row() for g in guards],
    )


def failure_result(exc: BaseException) -> CellResult:
    """The outcome of a cell whose training raised: ``diverged`` on NaN, ``failed`` (with its traceback) else."""
    if isinstance(exc, Diverged):
        return CellResult(status="diverged", error=str(exc))
    if isinstance(exc, BenchError):  # e.g. a dataset that cannot be loaded: a user problem, not a crash
        return CellResult(status="failed", error=str(exc))
    return CellResult(status="failed", error="".join(traceback.format_exception(exc)))


def deliver(cell: Cell, result: CellResult, run_dir: Path, store: Store | None, worker: str | None = None) -> None:
    """Hand a cell's outcome on: its result file first (durable, atomic), then the database when given one."""
    resultfile.write_result(run_dir, cell.record(), result)
    if store is not None:
        store.ingest(cell.record(), result, worker)


def run_cells(
    cells: list[Cell],
    store: Store,
    settings: Settings,
    device: torch.device,
    *,
    debug: bool = False,
    download: bool = False,
    progress: Progress | None = None,
) -> RunSummary:
    """Run every cell not yet done, in order; returns how many ended in each status."""
    store.create()
    summary = RunSummary()
    collect(store, settings.run_dir, [c.cell_hash for c in cells])  # results a killed run left in files
    statuses = store.statuses([c.cell_hash for c in cells])
    todo = [c for c in cells if statuses.get(c.cell_hash) != "done"]
    summary.counts["skipped"] = len(cells) - len(todo)
    progress = progress or Progress(enabled=False)
    with progress.session(total=len(todo), skipped=len(cells) - len(todo)):
        for cell in todo:
            if not store.claim(cell.record()):
                summary.add("busy")
                progress.cell_skipped(cell, "done or running in another process")
                continue
            resultfile.discard(settings.run_dir, cell.cell_hash)
            progress.cell_started(cell)

            def on_epoch(done: int, total: int, row: dict, cell: Cell = cell) -> None:
                store.heartbeat(cell.cell_hash, done)
                progress.epoch(done, total, row)

            try:
                result = run_cell(cell, settings, device, on_epoch, download)
            except KeyboardInterrupt:
                store.finish(cell.cell_hash, CellResult(status="interrupted", error="interrupted by the user"))
                summary.add("interrupted")
                progress.cell_finished(cell, "interrupted")
                raise
            except Exception as exc:  # noqa: BLE001 - a failed cell is data; the grid goes on
                result = failure_result(exc)
                if debug and not isinstance(exc, Diverged):
                    deliver(cell, result, settings.run_dir, store)
                    raise
            deliver(cell, result, settings.run_dir, store)
            summary.add(result.status)
            progress.cell_finished(cell, result.status, result)
    return summary
