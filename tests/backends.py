"""Database URLs for tests that must hold on every supported store: a SQLite file and a real PostgreSQL server.

PostgreSQL comes from ``$BENCH_TEST_POSTGRES_URL`` (``.ci/run`` starts a server with ``.ci/postgres.sh`` and sets
it); without it the PostgreSQL cases skip. Each test gets a database of its own, dropped afterwards, so tests
(and several test runs on one server) never see each other's rows.
"""

from __future__ import annotations

import os
import uuid

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
