"""``bench db upgrade``: bring a results database written by an older bench to this bench's schema, in place."""

from __future__ import annotations

import click

from bench.cli.common import config_option, db_option, load_settings


@click.group("db")
def db_group() -> None:
    """The results database itself: schema upgrades."""


@db_group.command("upgrade")
@db_option
@config_option
def upgrade(db, config) -> None:
    """Upgrade the results database to this bench's schema, in place (alembic; one transaction, every row kept).

    Every other command refuses a database written by an older bench until this has run; a database written by a
    newer bench is refused here too, unchanged.
    """
    from bench.results.store import Store

    store = Store(db or load_settings(config).db)
    store.check_writable(schema=False)
    outcome = store.upgrade()
    if not outcome.changed:
        click.echo(f"database {store.shown} is up to date ({outcome.after.describe()}); nothing to do")
        return
    click.echo(f"database {store.shown} upgraded in place: {outcome.before.describe()} -> {outcome.after.describe()}")
