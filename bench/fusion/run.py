"""A fused group through the ledger: every member claimed, held and delivered exactly as an unfused cell.

The group claims each of its cells (one done or running elsewhere is dropped), holds them all while they train
together, then evaluates and settles each member in turn: the member's result file, database rows and final
weights are the unfused cell's; its provenance adds ``fused`` (the number of members that trained together).
A member that diverged or failed settles as that outcome; the others are unaffected. Ctrl-C marks every held
member ``interrupted``; a killed process leaves each member's checkpoint for the next run, fused or not.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

import torch

import methods
from bench.cell import Cell, CellResult, Status
from bench.data import prepare
from bench.fusion.train import Member, train_fused


def run_group(cells: list[Cell], ledger, settings, device: torch.device, summary, progress, finish_cell, *,
              debug: bool = False, download: bool = False) -> None:
    """Claim, train together, evaluate and deliver the cells of one fused group (``summary`` and ``progress`` as
    :func:`bench.runner.run_cells` keeps them; ``finish_cell`` is the runner's evaluation of a trained cell)."""
    claimed = []
    for cell in cells:
        if ledger.claim(cell):
            claimed.append(cell)
        else:
            summary.add("busy")
            progress.cell_skipped(cell, "done or running in another process")
    if not claimed:
        return
    try:
        with ExitStack() as held:
            for cell in claimed:
                held.enter_context(ledger.holding(cell))
            progress.cell_started(claimed[0])
            t0 = time.perf_counter()
            config = claimed[0].config
            outcomes: list = []
            data = None
            members = []
            try:
                data = prepare(config["dataset"], config["imbalance"], config["seed"], root=settings.data_root,
                               download=download or settings.download, args=config["dataset_args"], device=device)
                for i, cell in enumerate(claimed):
                    def on_epoch(done: int, total: int, row: dict, cell: Cell = cell, first: bool = i == 0) -> None:
                        ledger.heartbeat(cell, done)
                        if first:
                            progress.epoch(done, total, row)

                    members.append(Member(cell.config, methods.for_cell(cell.config),
                                          settings.run_dir / cell.cell_hash, on_epoch))
                outcomes = train_fused(members, data)
            except Exception as exc:  # noqa: BLE001 - the whole group failed: every member is that failure
                outcomes = [exc] * len(claimed)
            share = (time.perf_counter() - t0) / len(claimed)  # wall time of training, split evenly
            for k, cell in enumerate(claimed):
                outcome = outcomes[k]

                def work(cell: Cell = cell, outcome=outcome, k: int = k) -> CellResult:
                    if isinstance(outcome, BaseException):
                        raise outcome
                    return finish_cell(cell, data, members[k].method, outcome, members[k].run_dir, device,
                                       time.perf_counter() - share, {"fused": len(claimed)})

                result = ledger.settle(cell, work, reraise=debug)
                summary.add(result.status)
                progress.cell_finished(cell, result.status, result)
    except KeyboardInterrupt:
        summary.add(Status.INTERRUPTED)
        raise
