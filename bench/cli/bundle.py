"""``bench export`` and ``bench import``: finished runs to a SQLite bundle, and a bundle merged into a database
(:mod:`bench.results.bundle`), so results travel between labs."""

from __future__ import annotations

import click

from bench.cli.common import config_option, db_option, load_settings


@click.command("export")
@click.option("--suite", metavar="NAME", default=None, help="Export this suite's runs only (default: every suite).")
@click.option("--out", "out", metavar="FILE", required=True, type=click.Path(dir_okay=True),
              help="The bundle file to write (SQLite), e.g. results.bench.db. An existing FILE is replaced only if "
                   "it is a bundle `bench export` wrote; the results database itself and any other file are "
                   "refused.")
@db_option
@config_option
def export_command(suite, out, db, config) -> None:
    """Write the finished runs with every row they own (class metrics, curves, per-sample flags, guards,
    provenance) to a SQLite bundle that `bench import` merges into another database."""
    from bench.errors import unknown
    from bench.results.bundle import export_bundle
    from bench.results.read import suite_names
    from bench.results.store import hide_password

    url = db or load_settings(config).db
    if suite is not None:
        suites = suite_names(url)
        if suite not in suites:
            raise unknown("suite", suite, suites, where=f"database {hide_password(url)}")
    click.echo(export_bundle(url, out, suite).line())


@click.command("import")
@click.argument("bundle", metavar="FILE")
@db_option
@config_option
def import_command(bundle, db, config) -> None:
    """Merge a bundle written by `bench export` into the database, keyed by cell hash: new runs are added with
    their provenance, identical ones skipped, and a run whose numbers differ is reported and never overwritten.

    The bundle is checked whole first: a damaged one (a missing table, a value of the wrong type) is refused with
    one line naming its table, row and column, and the database is left as it was."""
    from bench.results.bundle import import_bundle
    from bench.results.store import hide_password

    url = db or load_settings(config).db
    summary = import_bundle(url, bundle)
    source = summary.source
    origin = (f" (exported from {source.get('source')} on {source.get('host')}, {source.get('exported_at')})"
              if source else "")
    click.echo(f"{bundle}{origin} into {hide_password(url)}: {summary.line()}")
    for item in summary.conflicts:
        click.echo(f"differs: cell {item.cell_hash} ({item.label}): {item.reason}", err=True)
    for item in summary.not_done_here:
        click.echo(f"not imported: cell {item.cell_hash} ({item.label}): {item.reason}", err=True)
