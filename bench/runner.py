"""Running a suite: skip finished cells, claim the rest one by one, record every outcome as data.

A cell trains, is evaluated under every attack of its suite, then its robustness guards run (``bench.guards``);
all of it is written in one transaction.

A cell's outcome is ``done`` (metrics written), ``diverged`` (NaN loss), ``failed`` (exception; traceback
stored) or ``interrupted`` (Ctrl-C). The grid goes on after a failure unless ``debug`` re-raises. A killed
process leaves its cell ``running`` with a checkpoint; the next run sees the process is gone, claims the cell
and resumes from the last finished epoch.

The claim, heartbeat and delivery of every cell go through :class:`bench.results.ledger.Ledger`, the same API
the remote executors' drivers and jobs use: an outcome is written to the cell's result file first and then to the
database, so a process killed between the two loses nothing.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

import methods
from bench.cell import Cell, CellResult, Status
from bench.data import prepare
from bench.evaluate import attack_specs, evaluate, feature_dump
from bench.guards import GuardContext, run_guards
from bench.progress import Progress
from bench.provenance import provenance
from bench.settings import Settings
from bench.results.ledger import Ledger, check_run_folders
from bench.results.store import Store
from bench.train import save_final, train


@dataclass
class RunSummary:
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1

    def line(self) -> str:
        order = (Status.DONE, "skipped", "busy", Status.FAILED, Status.DIVERGED, Status.INTERRUPTED)
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
                   download=download or settings.download, args=config["dataset_args"], device=device,
                   val_split=config.get("val_split", 0.0))
    method = methods.for_cell(config)
    run_dir = settings.run_dir / cell.cell_hash
    outcome = train(config, method, data, run_dir, on_epoch)
    return finish_cell(cell, data, method, outcome, run_dir, device, t0)


def finish_cell(cell: Cell, data, method, outcome, run_dir, device: torch.device, t0: float,
                extra_provenance: dict | None = None) -> CellResult:
    """Evaluate a trained cell, run its guards, keep its final weights; its :class:`CellResult` (the unfused
    runner's and the fused one's, :mod:`bench.fusion.run`)."""
    config = cell.config
    correct = evaluate(outcome.model, data, config)
    specs = attack_specs(config)
    guards = run_guards(GuardContext(outcome.model, data, config, method, correct, {s.label: s for s in specs}))
    features = feature_dump(outcome.model, data, config)
    save_final(outcome.model, run_dir)
    return CellResult(
        status=Status.DONE,
        class_names=data.class_names,
        train_counts=data.train_counts,
        test_labels=data.test_y.cpu().numpy(),
        correct=correct,
        curves=outcome.curves,
        provenance={**provenance(device, data.subset_hash), **(extra_provenance or {})},
        wall_seconds=time.perf_counter() - t0,
        train_seconds=outcome.train_seconds,
        images_per_second=outcome.images / outcome.train_seconds if outcome.train_seconds else None,
        peak_memory_mb=peak_memory_mb(device),
        epochs_done=len(outcome.curves),
        features=features,
        attack_specs={spec.label: table for spec, table in zip(specs, config["eval_attacks"])},
        guards=[g.row() for g in guards],
        selection=outcome.selection,
    )


def run_cells(
    cells: list[Cell],
    store: Store,
    settings: Settings,
    device: torch.device,
    *,
    debug: bool = False,
    download: bool = False,
    progress: Progress | None = None,
    fuse: object = None,
) -> RunSummary:
    """Run every cell not yet done, in order; returns how many ended in each status. ``fuse`` (default: the
    settings') trains groups of cells as one stacked model (:mod:`bench.fusion`)."""
    store.create()
    ledger = Ledger(store, settings.run_dir)
    summary = RunSummary()
    todo = ledger.pending(cells)  # ingests what a killed run left in result files first
    if todo:
        check_run_folders(settings.run_dir, todo)  # one line before any claim when the run folder is read-only
    summary.counts["skipped"] = len(cells) - len(todo)
    progress = progress or Progress(enabled=False)
    with progress.session(total=len(todo), skipped=len(cells) - len(todo)):
        from bench.fusion.groups import plan
        from bench.fusion.run import run_group

        for fused, group in plan(todo, settings.fuse if fuse is None else fuse, device.type).units:
            if fused:
                run_group(group, ledger, settings, device, summary, progress, finish_cell, debug=debug,
                          download=download)
                continue
            cell = group[0]
            if not ledger.claim(cell):
                summary.add("busy")
                progress.cell_skipped(cell, "done or running in another process")
                continue

            def on_epoch(done: int, total: int, row: dict, cell: Cell = cell) -> None:
                ledger.heartbeat(cell, done)
                progress.epoch(done, total, row)

            def work(cell: Cell = cell) -> CellResult:
                progress.cell_started(cell)  # inside the held cell: whatever raises here releases it
                return run_cell(cell, settings, device, on_epoch, download)

            try:
                result = ledger.settle(cell, work, reraise=debug)
            except KeyboardInterrupt:
                summary.add(Status.INTERRUPTED)
                progress.cell_finished(cell, Status.INTERRUPTED)
                raise
            summary.add(result.status)
            progress.cell_finished(cell, result.status, result)
    return summary
