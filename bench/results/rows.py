"""How a cell's outcome becomes rows: the run row of a new cell, and the child rows of a finished one.

The store calls these inside its transactions; nothing here opens a session or commits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import numpy as np
from sqlalchemy import delete
from sqlalchemy.orm import Session

from bench.cell import CellRecord, CellResult, Status
from bench.results.schema import (
    AttackSpecRow,
    ClassMetric,
    EpochMetric,
    FeatureDump,
    GuardRow,
    Run,
    SampleFlags,
    TestLabels,
    pack_flags,
    utcnow,
)


def new_run(cell: CellRecord, *, status: str, worker: str | None, now: datetime) -> Run:
    return Run(
        cell_hash=cell.cell_hash, suite=cell.suite, method=cell.method, dataset=cell.dataset,
        imbalance=cell.imbalance, seed=cell.seed, model=cell.model, adversarial=cell.adversarial,
        config_json=json.dumps(cell.config, sort_keys=True), status=status, worker=worker, heartbeat_at=now,
        started_at=now,
    )


def write_outcome(session: Session, run: Run, result: CellResult) -> None:
    """Replace a run's outcome and child rows (the caller holds the transaction and the row)."""
    session.flush()
    for table in (ClassMetric, EpochMetric, SampleFlags, FeatureDump, TestLabels, AttackSpecRow, GuardRow):
        session.execute(delete(table).where(table.run_id == run.id))
    run.status = result.status
    run.error = result.error
    run.finished_at = utcnow()
    run.heartbeat_at = run.finished_at
    run.epochs_done = result.epochs_done
    run.wall_seconds = result.wall_seconds
    run.train_seconds = result.train_seconds
    run.images_per_second = result.images_per_second
    run.peak_memory_mb = result.peak_memory_mb
    prov = result.provenance or {}
    run.device = prov.get("device")
    run.host = prov.get("host")
    run.git_commit = prov.get("git_commit")
    run.versions_json = json.dumps(prov.get("versions", {}), sort_keys=True) if prov else None
    run.subset_hash = prov.get("subset_hash")
    run.fused_members = prov.get("fused")  # bench.fusion: the group's size, None when the cell trained alone
    if result.class_names:
        run.class_names_json = json.dumps(list(result.class_names))
    selection = result.selection or {}
    run.selected_epoch = selection.get("epoch")
    run.val_clean = selection.get("val_clean")
    run.val_robust = selection.get("val_robust")
    for row in result.curves:
        session.add(EpochMetric(run_id=run.id, **row))
    if result.status == Status.DONE and result.correct is not None and result.test_labels is not None:
        session.add_all(class_rows(run.id, result))
        for attack, flags in result.correct.items():
            flags = np.asarray(flags, dtype=bool)
            session.add(SampleFlags(run_id=run.id, attack=attack, n=int(flags.size),
                                    bits=pack_flags(flags)))
        session.add(test_labels_row(run.id, result.test_labels))
        session.add_all(spec_rows(run.id, result.attack_specs or {}))
        session.add_all(guard_rows(run.id, result.guards))
        for (split, kind), (labels, vectors) in (result.features or {}).items():
            vectors = np.asarray(vectors, dtype=np.float16)
            session.add(FeatureDump(run_id=run.id, split=split, kind=kind, n=int(vectors.shape[0]),
                                    dim=int(vectors.shape[1]), labels=np.asarray(labels, np.int16).tobytes(),
                                    vectors=vectors.tobytes()))


def class_rows(run_id: int, result: CellResult) -> list[ClassMetric]:
    return class_rows_of(run_id, result.correct, result.test_labels, result.class_names, result.train_counts, 0)


def class_rows_of(run_id: int, correct: dict[str, np.ndarray], test_labels, class_names, train_counts,
                   first_order: int) -> list[ClassMetric]:
    labels = np.asarray(test_labels)
    rows = []
    for order, (attack, flags) in enumerate(correct.items(), start=first_order):
        flags = np.asarray(flags, dtype=bool)
        for c, name in enumerate(class_names):
            mask = labels == c
            n_test = int(mask.sum())
            correct_c = int(flags[mask].sum())
            rows.append(
                ClassMetric(
                    run_id=run_id, attack=attack, attack_order=order, class_index=c, class_name=str(name),
                    n_train=int(train_counts[c]), n_test=n_test, correct=correct_c,
                    accuracy=correct_c / n_test if n_test else float("nan"),
                )
            )
    return rows


def test_labels_row(run_id: int, labels) -> TestLabels:
    labels = np.asarray(labels)
    return TestLabels(run_id=run_id, n=int(labels.size), labels=labels.astype(np.int16).tobytes())


def spec_rows(run_id: int, specs: dict[str, dict]) -> list[AttackSpecRow]:
    return [AttackSpecRow(run_id=run_id, attack=label, kind=str(table["kind"]), spec_json=json.dumps(table, sort_keys=True))
            for label, table in specs.items()]


def guard_rows(run_id: int, guards: Sequence[dict]) -> list[GuardRow]:
    return [GuardRow(run_id=run_id, name=g["name"], value=float(g["value"]), threshold=float(g["threshold"]),
                     flagged=bool(g["flagged"]), detail=json.dumps(g.get("detail", {}), sort_keys=True))
            for g in guards]
