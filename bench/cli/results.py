"""``bench show``, ``bench status``, ``bench collect``: what the results database and the run folder hold."""

from __future__ import annotations

import json
from pathlib import Path

import click

from bench.cli.common import config_option, db_option, load_settings
from bench.errors import BenchError


@click.command()
@click.argument("cell_hash", metavar="CELL")
@db_option
@config_option
def show(cell_hash: str, db, config) -> None:
    """One cell's full record: config, status, error, provenance and class-wise accuracy."""
    from bench.results.read import run_record

    record = run_record(db or load_settings(config).db, cell_hash)
    error = record.pop("error", None)
    click.echo(json.dumps(record, indent=2, default=str))
    if error:
        click.echo(error)


@click.command()
@click.option("--suite", help="Only this suite.")
@db_option
@config_option
def status(suite, db, config) -> None:
    """How many cells are queued, running, done, failed or diverged, per suite."""
    from bench.results.collect import result_files
    from bench.cell import STATUSES, Status
    from bench.results.read import load_runs

    settings = load_settings(config)
    runs = load_runs(db or settings.db, suite)
    if runs.empty:
        raise BenchError("no runs" + (f" for suite {suite!r}" if suite else "") + " in the database")
    counts = runs.groupby(["suite", "status"]).size().unstack(fill_value=0)
    counts = counts[[s for s in STATUSES if s in counts.columns]]
    click.echo(counts.to_string())
    waiting = set(runs.loc[runs["status"] != Status.DONE, "cell_hash"]) & set(result_files(settings.run_dir))
    if waiting:  # workers finished while no driver was there to ingest
        click.echo(f"{len(waiting)} finished result file(s) in {settings.run_dir} not yet in the database: "
                   f"`bench collect` ingests them")


@click.command()
@click.option("--run-dir", type=click.Path(file_okay=False), help="Run folder (default: bench.toml's run_dir).")
@db_option
@config_option
def collect(run_dir, db, config) -> None:
    """Ingest the result files workers left in the run folder (e.g. after the driver was killed); idempotent."""
    from bench.results.collect import collect as collect_results
    from bench.results.store import Store

    settings = load_settings(config)
    folder = Path(run_dir) if run_dir else settings.run_dir
    if not folder.is_dir():
        raise BenchError(f"run folder {folder} does not exist; pass --run-dir or set run_dir in bench.toml")
    store = Store(db or settings.db)
    store.check_writable()
    store.create()
    summary = collect_results(store, folder)
    for line in summary.unreadable:
        click.echo(f"skipped {line}", err=True)
    click.echo(f"{folder}: {summary.line()}; results in {store.shown}")
