"""A fused group through the ledger: every member claimed, held and delivered exactly as an unfused cell.

The group claims each of its cells (one done or running elsewhere is dropped), holds them all while they train
together, then evaluates and settles each member in turn: the member's result file, database rows and final
weights are the unfused cell's; its provenance adds ``fused`` (the number of members that trained together).
A member that diverged or failed settles as that outcome; the others are unaffected. Ctrl-C marks every held
member ``interrupted``; a killed process leaves each member's checkpoint for the next run, fused or not.

:func:`train_and_settle` is the part after the claim, shared by the local runner (:func:`run_group`) and a remote
executor's group job (:class:`bench.executors.job.GroupJob`), which differ only in who holds the cells (this process,
or a job under its tag that leaves Ctrl-C and pre-emption to its driver) and what each epoch reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack

import torch

import methods
from bench.cell import Cell, CellResult, Status
from bench.data import prepare
from bench.fusion.train import Member, train_fused

OnMemberEpoch = Callable[[int, Cell, int, int, dict], None]  # (member index, cell, epochs done, epochs, row)


def train_and_settle(cells: list[Cell], ledger, settings, device: torch.device, finish_cell, *,
                     on_epoch: OnMemberEpoch, on_start: Callable[[], None] | None = None,
                     on_settled: Callable[[Cell, CellResult], None] | None = None, worker: str | None = None,
                     interruptible: bool = True, reraise: bool = False, download: bool = False) -> list[CellResult]:
    """Hold ``cells`` (already claimed or handed out), train them as one stacked model, then evaluate and settle
    each member through ``ledger`` in turn; their outcomes, in order. ``worker``, ``interruptible`` and ``reraise``
    are :meth:`bench.results.ledger.Ledger.settle`'s; ``finish_cell`` is the runner's evaluation of a trained cell.
    The wall time of training is split evenly between the members (their cost columns)."""
    results: list[CellResult] = []
    with ExitStack() as held:
        for cell in cells:
            held.enter_context(ledger.holding(cell, worker, interruptible))
        t0 = time.perf_counter()
        config = cells[0].config
        outcomes: list = []
        data = None
        members = []
        try:
            if on_start is not None:
                on_start()  # inside the held cells: whatever raises here fails them, as the unfused runner does
            data = prepare(config["dataset"], config["imbalance"], config["seed"], root=settings.data_root,
                           download=download or settings.download, args=config["dataset_args"], device=device,
                           val_split=config.get("val_split", 0.0))  # a group key: every member's split
            for i, cell in enumerate(cells):
                def member_epoch(done: int, total: int, row: dict, i: int = i, cell: Cell = cell) -> None:
                    on_epoch(i, cell, done, total, row)

                members.append(Member(cell.config, methods.for_cell(cell.config),
                                      settings.run_dir / cell.cell_hash, member_epoch))
            outcomes = train_fused(members, data)
        except Exception as exc:  # noqa: BLE001 - the whole group failed: every member is that failure
            outcomes = [exc] * len(cells)
        share = (time.perf_counter() - t0) / len(cells)  # wall time of training, split evenly
        for k, cell in enumerate(cells):
            outcome = outcomes[k]

            def work(cell: Cell = cell, outcome=outcome, k: int = k) -> CellResult:
                if isinstance(outcome, BaseException):
                    raise outcome
                return finish_cell(cell, data, members[k].method, outcome, members[k].run_dir, device,
                                   time.perf_counter() - share, {"fused": len(cells)})

            result = ledger.settle(cell, work, worker=worker, interruptible=interruptible, reraise=reraise)
            results.append(result)
            if on_settled is not None:
                on_settled(cell, result)
    return results


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

    def on_epoch(i: int, cell: Cell, done: int, total: int, row: dict) -> None:
        ledger.heartbeat(cell, done)
        if i == 0:
            progress.epoch(done, total, row)

    def on_settled(cell: Cell, result: CellResult) -> None:
        summary.add(result.status)
        progress.cell_finished(cell, result.status, result)

    try:
        train_and_settle(claimed, ledger, settings, device, finish_cell, on_epoch=on_epoch,
                         on_start=lambda: progress.cell_started(claimed[0]), on_settled=on_settled, reraise=debug,
                         download=download)
    except KeyboardInterrupt:
        summary.add(Status.INTERRUPTED)
        raise
