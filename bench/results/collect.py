"""Ingest the result files of a run folder into the database: the one writer's half of the worker contract.

The driver of every executor calls :func:`collect` while it waits and before it decides what still has to run;
``bench collect`` calls it by hand, e.g. after the driver was killed while Slurm jobs went on. Ingesting is
idempotent (:meth:`bench.results.store.Store.ingest`): a result already in the database is skipped, so running it twice,
or the driver and ``bench collect`` at once, writes each result exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bench.cell import ACTIVE, Status
from bench.results import files
from bench.results.store import Store


@dataclass
class CollectSummary:
    ingested: list[str] = field(default_factory=list)  # cell hashes written now
    already: int = 0  # result files whose cell the database already had as done
    unreadable: list[str] = field(default_factory=list)  # "path: why"
    running: int = 0  # queued cells whose worker reported that it runs

    def line(self) -> str:
        parts = [f"{len(self.ingested)} result(s) ingested", f"{self.already} already in the database"]
        if self.running:
            parts.append(f"{self.running} cell(s) now running")
        if self.unreadable:
            parts.append(f"{len(self.unreadable)} unreadable file(s)")
        return ", ".join(parts)


def result_files(run_dir: Path, cell_hashes: Iterable[str] | None = None) -> dict[str, Path]:
    """``{cell hash: result file}`` present under ``run_dir`` (all of them, or those of ``cell_hashes``)."""
    run_dir = Path(run_dir)
    if cell_hashes is None:
        found = run_dir.glob(f"*/{files.RESULT}") if run_dir.is_dir() else []
        return {path.parent.name: path for path in sorted(found)}
    paths = {h: files.result_path(run_dir, h) for h in cell_hashes}
    return {h: p for h, p in paths.items() if p.exists()}


def collect(store: Store, run_dir: Path, cell_hashes: Iterable[str] | None = None) -> CollectSummary:
    """Ingest every result file not yet in ``store``; mark queued cells whose worker reports as running."""
    summary = CollectSummary()
    found = result_files(run_dir, cell_hashes)
    claims = store.claims(list(found)) if found else {}
    for cell_hash, path in found.items():
        if claims.get(cell_hash, ("", None))[0] == Status.DONE:
            summary.already += 1
            continue
        try:
            cell, result = files.read_result(path)
        except (OSError, files.UnreadableResult) as exc:
            summary.unreadable.append(f"{path}: {exc}")
            continue
        if cell.cell_hash != cell_hash:
            summary.unreadable.append(f"{path}: holds cell {cell.cell_hash}, not {cell_hash}")
            continue
        if store.ingest(cell, result):
            summary.ingested.append(cell_hash)
        else:
            summary.already += 1
    summary.running = refresh_running(store, run_dir, cell_hashes)
    return summary


def refresh_running(store: Store, run_dir: Path, cell_hashes: Iterable[str] | None = None) -> int:
    """Queued/running cells whose worker wrote a state file: mark them running at their epoch; returns how many."""
    run_dir = Path(run_dir)
    if cell_hashes is None:
        if not run_dir.is_dir():
            return 0
        cell_hashes = [p.parent.name for p in run_dir.glob(f"*/{files.STATE}")]
    claims = store.claims(list(cell_hashes))
    running = 0
    for cell_hash, (status, worker) in claims.items():
        if status not in ACTIVE or worker is None:
            continue
        state = files.read_state(run_dir, cell_hash)
        if state and state.get("worker") == worker and state.get("status") == Status.RUNNING:
            running += store.mark_running(cell_hash, worker, int(state.get("epochs_done", 0)))
    return running
