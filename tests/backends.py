"""Database URLs for tests that must hold on every supported store: a SQLite file and a real PostgreSQL server.

PostgreSQL comes from ``$BENCH_TEST_POSTGRES_URL`` (``.ci/run`` starts a server with ``.ci/postgres.sh`` and sets
it); without it the PostgreSQL cases skip. Each test gets a database of its own, dropped afterwards, so tests
(and several test runs on one server) never see each other's rows.
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

POSTGRES_ENV = "BENCH_TEST_POSTGRES_URL"


def postgres_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A fresh, empty database URL of each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bench.db'}"
        return
    base = postgres_url()
    if base is None:
        pytest.skip(f"{POSTGRES_ENV} is not set (bash .ci/postgres.sh starts a server)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"bench_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:  # FORCE: the stores of the test may still hold pooled connections
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def record(i: int, suite: str = "conc"):
    from bench.cell import CellRecord

    config = {"suite": suite, "method": "ce", "dataset": "digits", "imbalance": "step-10", "seed": i,
              "model": "linear", "epochs": 2, "eval_attacks": []}
    return CellRecord(cell_hash=f"cell{i:012d}", suite=suite, method="ce", dataset="digits", imbalance="step-10",
                      seed=i, model="linear", adversarial=True, config=config)


def result(i: int, status: str = "done"):
    """A finished cell with every kind of row: class metrics, flags, curves, guards, features."""
    from bench.cell import CellResult

    rng = np.random.default_rng(i)
    labels = np.repeat(np.arange(3), 10)
    return CellResult(
        status=status, error=None if status == "done" else "boom", class_names=["a", "b", "c"],
        train_counts=[50, 20, 5], test_labels=labels,
        correct={"clean": rng.random(30) < 0.8, "pgd-2": rng.random(30) < 0.4},
        curves=[{"epoch": e, "lr": 0.1, "loss": 1.0 / (e + 1), "train_accuracy": 0.5, "seconds": 0.1} for e in range(2)],
        provenance={"device": "cpu", "host": "h", "git_commit": "abc", "versions": {"torch": "x"}, "subset_hash": "s"},
        wall_seconds=1.5, train_seconds=1.0, images_per_second=10.0, peak_memory_mb=1.0, epochs_done=2,
        features={("test", "clean"): (labels[:4], rng.random((4, 3)))},
        attack_specs={"pgd-2": {"kind": "pgd", "eps": 0.1, "alpha": 0.05, "steps": 2}},
        guards=[{"name": "zero-grad-share", "value": 0.0, "threshold": 0.01, "flagged": False, "detail": {"n": 30}}],
    )
