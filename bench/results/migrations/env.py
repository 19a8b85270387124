"""Alembic's environment for the results database.

bench runs it through :mod:`bench.results.migrate`, which hands over an open connection (inside one transaction:
an upgrade happens whole or not at all). A developer adding a revision runs alembic's own command line on a
scratch database instead, e.g.::

    alembic -c bench/results/migrations/alembic.ini -x url=sqlite:///scratch.db upgrade head
    alembic -c bench/results/migrations/alembic.ini -x url=sqlite:///scratch.db revision --autogenerate -m "what"
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from bench.results.schema import Base


def run(connection) -> None:
    # render_as_batch: SQLite alters a table by copying it, which alembic's batch mode does for us.
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("bench's migrations run online only (alembic upgrade, not --sql)")
connection = context.config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    with create_engine(url).begin() as opened:
        run(opened)
